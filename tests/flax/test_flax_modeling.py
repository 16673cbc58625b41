"""Flax specifics: optax training under jit, params= inside jit/grad/vmap, remat, dtypes, dropout."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import HF, compiled_dots, expected

BF16_GRADIENT_COSINE = 0.9999  # a bf16 gradient with dot's hand-written backward vs autodiff's (measured 0.99999)

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
jnp = jax.numpy

from vit import FlaxViTForImageClassification, FlaxViTModel, ViTConfig  # noqa: E402

SMALL = dict(image_size=16, patch_size=8, encoder_stride=8, hidden_size=16, num_hidden_layers=2,
             num_attention_heads=2, intermediate_size=32, num_labels=3)


def classifier(**kwargs) -> FlaxViTForImageClassification:
    return FlaxViTForImageClassification.from_pretrained(HF / "classification" / "safetensors", **kwargs)


def test_jitted_optax_steps_lower_the_loss():
    model = FlaxViTForImageClassification(ViTConfig(**SMALL, hidden_dropout_prob=0.1), seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3, 16, 16)).astype(np.float32), rng.integers(0, 3, 16)
    optimizer = optax.adam(1e-3)
    params, opt_state = model.params, optimizer.init(model.params)

    @jax.jit
    def step(params, opt_state, key):
        loss, grads = jax.value_and_grad(lambda p: model(x, labels=y, params=p, train=True, dropout_rng=key).loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for i in range(10):
        params, opt_state, loss = step(params, opt_state, jax.random.key(i))
        losses.append(float(loss))
    assert losses[-1] < losses[0]


def test_params_work_inside_user_jit_grad_and_vmap():
    e = expected("classification")
    model = classifier()
    pixels = jnp.asarray(e["pixel_values"])
    logits = jax.jit(lambda p, x: model(x, params=p).logits)(model.params, pixels)
    assert np.max(np.abs(np.asarray(logits) - e["logits"])) <= 1e-5
    loss = jax.jit(lambda p: model(pixels, labels=e["labels"], params=p).loss)(model.params)
    assert abs(float(loss) - float(e["loss"])) <= 1e-5
    per_image = jax.vmap(lambda x: model(x[None], params=model.params).logits[0])(pixels)
    assert np.max(np.abs(np.asarray(per_image) - e["logits"])) <= 1e-5
    grads = jax.grad(lambda p: model(pixels, labels=e["labels"], params=p).loss)(model.params)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(model.params)


def test_params_are_hf_flax_layout_and_editable():
    model = FlaxViTModel.from_pretrained(HF / "base" / "flax_msgpack")
    kernel = model.params["encoder"]["layer"]["0"]["attention"]["attention"]["query"]["kernel"]
    assert kernel.shape == (32, 32)
    e = expected("base")
    before = np.asarray(model(e["pixel_values"]).pooler_output)
    model.params["pooler"]["dense"]["bias"] = model.params["pooler"]["dense"]["bias"] + 1.0
    after = np.asarray(model(e["pixel_values"]).pooler_output)
    assert np.max(np.abs(after - before)) > 1e-3


def test_remat_gives_the_same_gradients():
    e = expected("classification")
    grads = []
    for remat in (False, True):
        model = classifier()
        if remat:
            model.gradient_checkpointing_enable()
        g = jax.grad(lambda p, m=model: m(e["pixel_values"], labels=e["labels"], params=p, train=True).loss)(model.params)
        grads.append(jax.tree_util.tree_leaves(g))
    for a, b in zip(*grads, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_bfloat16_compute_and_params():
    e = expected("classification")
    mixed = classifier(dtype=jnp.bfloat16)
    assert mixed.params["classifier"]["kernel"].dtype == jnp.float32
    logits = mixed(e["pixel_values"]).logits
    assert logits.dtype == jnp.bfloat16 and np.max(np.abs(np.asarray(logits, np.float32) - e["logits"])) < 0.1
    low = classifier(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    assert low.params["classifier"]["kernel"].dtype == jnp.bfloat16


def test_dropout_needs_a_key_and_uses_it():
    model = FlaxViTForImageClassification(ViTConfig(**SMALL, hidden_dropout_prob=0.5))
    x = np.ones((2, 3, 16, 16), np.float32)
    with pytest.raises(ValueError, match="dropout_rng"):
        model(x, train=True)
    a = model(x, train=True, dropout_rng=jax.random.key(0)).logits
    b = model(x, train=True, dropout_rng=jax.random.key(1)).logits
    c = model(x).logits
    assert not np.allclose(a, b) and np.allclose(c, model(x).logits)


def test_compiled_call_is_cached_per_shape():
    model = FlaxViTForImageClassification(ViTConfig(**SMALL))
    for batch in (1, 2, 1, 2):
        model(np.zeros((batch, 3, 16, 16), np.float32))
    assert model._jitted._cache_size() == 2


def test_save_pretrained_params_keyword_saves_those_params(tmp_path):
    """HF Flax's idiom: model.save_pretrained(out, params=state.params) saves the trained params."""
    model = classifier()
    trained = jax.tree_util.tree_map(lambda p: p + 1.0, model.params)
    model.save_pretrained(tmp_path, params=trained)
    again = FlaxViTForImageClassification.from_pretrained(tmp_path)
    for a, b in zip(jax.tree_util.tree_leaves(trained), jax.tree_util.tree_leaves(again.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_long_sequences_take_the_per_head_loop_with_the_same_numbers(monkeypatch):
    """At HEAD_LOOP_MIN_TOKENS and beyond, attention runs one (image, head) at a time on the CPU (a speed path);
    outputs and gradients equal the batched path's to float32 round-off, and attention maps still come out."""
    from vit.flax import modeling

    config = ViTConfig(**{**SMALL, "image_size": 80, "patch_size": 4, "encoder_stride": 4})
    tokens = config.num_patches + config.num_prefix_tokens
    assert tokens >= modeling.HEAD_LOOP_MIN_TOKENS
    x = np.random.default_rng(0).normal(size=(2, 3, 80, 80)).astype(np.float32)
    labels = np.array([0, 2])
    calls = []
    per_head = modeling.attention_per_head
    monkeypatch.setattr(modeling, "attention_per_head", lambda *a: calls.append(1) or per_head(*a))

    def run() -> tuple[np.ndarray, list]:
        model = FlaxViTForImageClassification(config, seed=0)
        loss_and_grads = jax.value_and_grad(lambda p: model(x, labels=labels, params=p).loss)
        _, grads = loss_and_grads(model.params)
        return np.asarray(model(x).logits), jax.tree_util.tree_leaves(grads)

    looped_logits, looped_grads = run()
    assert calls, "the per-head loop was not taken"
    monkeypatch.setattr(modeling, "HEAD_LOOP_MIN_TOKENS", 10**9)
    calls.clear()
    batched_logits, batched_grads = run()
    assert not calls
    np.testing.assert_allclose(looped_logits, batched_logits, atol=1e-6)
    for a, b in zip(looped_grads, batched_grads, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    monkeypatch.setattr(modeling, "HEAD_LOOP_MIN_TOKENS", 1)
    maps = FlaxViTForImageClassification(config, seed=0)(x, output_attentions=True).attentions
    assert maps[0].shape == (2, config.num_attention_heads, tokens, tokens)


def test_batched_attention_keys_the_compiled_call_cache():
    """The attention's form is chosen while tracing, so a call traced inside batched_attention() must not be reused
    outside it (where long sequences take the per-head loop on the CPU), nor the other way round."""
    from vit.flax.modeling import batched_attention

    model = FlaxViTForImageClassification(ViTConfig(**{**SMALL, "image_size": 80, "patch_size": 4, "encoder_stride": 4}))
    x = np.zeros((1, 3, 80, 80), np.float32)

    def loops() -> bool:  # a fresh outer jit each time; the model's own jitted call is the one that caches
        return "stablehlo.while" in jax.jit(lambda x: model(x).logits).lower(x).as_text()

    assert loops()
    with batched_attention():
        assert not loops()
    assert loops()


def test_bfloat16_products_accumulate_into_float32():
    """Every bf16 product is one dot with bf16 operands and a float32 result, rounded once afterwards: the rule
    all three frameworks follow, and the form XLA CPU runs on its bf16 GEMM (a bf16 result is widened and run at the
    float32 rate)."""
    model = classifier(dtype=jnp.bfloat16)
    x = expected("classification")["pixel_values"]
    text = jax.jit(lambda v: model(v).logits).lower(x).as_text()
    dots = [line for line in text.splitlines() if "dot_general" in line]
    assert len(dots) >= 6 * model.config.num_hidden_layers
    signatures = {line.rsplit(":", 1)[1].strip() for line in dots}
    assert all("bf16>, tensor<" in sig and sig.endswith("xf32>") for sig in signatures), signatures


@pytest.mark.parametrize("step", ["forward", "gradient"])
def test_bfloat16_products_stay_bfloat16_after_xla_optimises(step):
    """What XLA CPU compiles, not only what it is given: the products keep bf16 operands, attention's included.
    Without row-major operands, XLA folded the head split's transpose (and, in the backward pass, the context
    gradient's) into q kᵀ and probs v and widened their operands to float32, which runs at the float32 rate.
    The one exception is the classifier's weight gradient, which contracts over the batch's few images: XLA CPU runs
    that sliver in float32."""
    model = classifier(dtype=jnp.bfloat16)
    e = expected("classification")
    images = len(e["pixel_values"])
    if step == "forward":
        compiled = jax.jit(lambda v: model(v).logits).lower(e["pixel_values"]).compile()
    else:
        loss = jax.grad(lambda p: model(e["pixel_values"], labels=e["labels"], params=p).loss)
        compiled = jax.jit(loss).lower(model.params).compile()
    dtypes = [(a, b) for a, b, contracted in compiled_dots(compiled.as_text()) if contracted != images]
    assert len(dtypes) >= 8 * model.config.num_hidden_layers  # six projections and two attention products a block
    assert set(dtypes) == {("bf16", "bf16")}, dtypes


# (equation, a's shape, b's shape, bias): the products the model's `dot` computes, dense and attention's.
REDUCED_DOT_CASES = [("nd,do->no", (12, 8), (8, 16), True), ("...qd,...kd->...qk", (2, 3, 5, 4), (2, 3, 7, 4), False),
                     ("...qk,...kd->...qd", (2, 3, 5, 7), (2, 3, 7, 4), False), ("qk,kd->qd", (5, 7), (7, 4), False)]


@pytest.mark.parametrize("equation,a_shape,b_shape,with_bias", REDUCED_DOT_CASES)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_product_gradients_are_autodiffs(equation, a_shape, b_shape, with_bias, dtype):
    """dot's hand-written reduced-precision backward gives autodiff's gradients of its definition, in the same
    dtypes, up to float32 summation order (at most one rounding of the reduced dtype apart)."""
    from vit.flax.modeling import _dot_definition, dot

    dtype = jnp.dtype(dtype)
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.normal(size=shape), dtype) for shape in (a_shape, b_shape))
    bias = jnp.asarray(rng.normal(size=b_shape[-1]), jnp.float32) if with_bias else None
    out_shape = jax.eval_shape(lambda: _dot_definition(equation, a, b, bias)).shape
    weights = jnp.asarray(rng.normal(size=out_shape), dtype).astype(jnp.float32)  # exact in dtype: the cotangent

    def gradients(product):
        return jax.grad(lambda a, b, bias: (product(equation, a, b, bias).astype(jnp.float32) * weights).sum(),
                        argnums=(0, 1, 2) if with_bias else (0, 1))(a, b, bias)

    ours, reference = gradients(dot), gradients(_dot_definition)
    for got, want in zip(ours, reference, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        want32 = np.asarray(want, np.float32)
        ulp = 2.0 ** -(jnp.finfo(dtype).nmant)
        np.testing.assert_allclose(np.asarray(got, np.float32), want32, rtol=ulp, atol=ulp * np.abs(want32).max())


def test_bfloat16_backward_products_accumulate_into_float32_too():
    """The training step's products follow the forward pass's rule: bf16 operands, a float32 result. Autodiff would
    multiply the float32 cotangent by widened bf16 operands, which XLA CPU runs at the float32 rate."""
    model = classifier(dtype=jnp.bfloat16)
    e = expected("classification")
    loss = jax.grad(lambda p: model(e["pixel_values"], labels=e["labels"], params=p).loss)
    dots = [line for line in jax.jit(loss).lower(model.params).as_text().splitlines() if "dot_general" in line]
    assert len(dots) >= 3 * 6 * model.config.num_hidden_layers  # each forward product and its two gradients
    signatures = {line.rsplit(":", 1)[1].strip() for line in dots}
    assert all("bf16>, tensor<" in sig and sig.endswith("xf32>") for sig in signatures), signatures


def test_bfloat16_model_gradients_are_autodiffs(monkeypatch):
    """The whole bf16 model's gradients with the hand-written backward are autodiff's (with `dot` replaced by its
    definition) to bf16 round-off, leaf by leaf: a layout mistake would scramble them. The key bias is skipped: its
    gradient is zero (softmax ignores a shift shared by all keys), so what remains is round-off in every dtype."""
    from vit.flax import modeling

    e = expected("classification")

    def gradients():
        model = classifier(dtype=jnp.bfloat16)
        g = jax.grad(lambda p: model(e["pixel_values"], labels=e["labels"], params=p).loss)(model.params)
        return {jax.tree_util.keystr(path): np.asarray(leaf, np.float32).ravel()
                for path, leaf in jax.tree_util.tree_flatten_with_path(g)[0]}

    ours = gradients()
    monkeypatch.setattr(modeling, "dot", lambda equation, a, b, bias=None: modeling._dot_definition(equation, a, b, bias))
    autodiff = gradients()
    compared = [name for name in autodiff if "['key']['bias']" not in name]
    assert len(autodiff) - len(compared) == classifier().config.num_hidden_layers
    for name in compared:
        got, want = ours[name], autodiff[name]
        cosine = got @ want / (np.linalg.norm(got) * np.linalg.norm(want))
        assert cosine > BF16_GRADIENT_COSINE, (name, cosine)
