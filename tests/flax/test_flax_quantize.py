"""vit.flax.quantize: an int8 copy whose encoder really runs int8 matmuls, agrees with float32 on the digits demo's
held-out scans, leaves the original alone, runs under jit at any batch size, and rejects what it cannot do with a
clear error."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from conftest import INT8_BATCH_INVARIANCE_ATOL, INT8_MAX_ACCURACY_DROP, INT8_MIN_AGREEMENT, INT8_VS_FP32_REL

jax = pytest.importorskip("jax")
pytest.importorskip("flax")

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from vit.flax import quantize as quantize_module  # noqa: E402
from vit.flax.modeling import Dense, FlaxViTSelfAttention  # noqa: E402
from vit.flax.quantize import Int8Dense, Int8SelfAttention, quantize  # noqa: E402

# Measured on the 360 held-out digits (fp32 accuracy 96.1%): int8 96.4%, agreement 99.7%, max |logit diff| 1.8% of
# max |fp32 logit| (per-row activation scales; per-tensor scales measured 96.1%, 100%, 2.0-2.2% by batch size).


def encoder_of(network: nnx.Module) -> nnx.Module:
    return network.vit.encoder if hasattr(network, "vit") else network.encoder


def int8_products(layers: int) -> int:
    """The int8 products of a copy: q, k and v as one, the attention output and the two MLP (or SwiGLU) layers of
    every block, and the patch projection."""
    return 4 * layers + 1


def modules_of(model, kind: type) -> list:
    return [node for _, node in nnx.iter_graph(model._network(model.params)) if type(node) is kind]


@pytest.fixture(scope="module")
def digits(demo_digits):
    from vit import FlaxViTForImageClassification

    model = FlaxViTForImageClassification.from_pretrained(demo_digits.model_dir)
    return model, demo_digits.pixels, demo_digits.labels, np.asarray(model(demo_digits.pixels).logits)


@pytest.fixture(scope="module")
def int8(digits):
    return quantize(digits[0], "dynamic")


@pytest.mark.parametrize("attention_dtype", [None, "bfloat16"])
def test_int8_accuracy_on_held_out_digits(digits, int8, attention_dtype):
    _, pixels, labels, fp32 = digits
    copy = int8 if attention_dtype is None else quantize(digits[0], "dynamic", attention_dtype=attention_dtype)
    logits = np.asarray(copy(pixels).logits)
    fp32_accuracy = float((fp32.argmax(-1) == labels).mean())
    accuracy = float((logits.argmax(-1) == labels).mean())
    agreement = float((logits.argmax(-1) == fp32.argmax(-1)).mean())
    assert fp32_accuracy >= 0.95
    assert accuracy >= fp32_accuracy - INT8_MAX_ACCURACY_DROP and agreement >= INT8_MIN_AGREEMENT
    relative = float(np.abs(logits - fp32).max() / np.abs(fp32).max())
    assert 0 < relative <= INT8_VS_FP32_REL  # > 0: the copy really runs in int8, not float32


def test_encoder_dense_layers_hold_int8_kernels_and_heads_stay_float(digits, int8):
    model = digits[0]
    assert isinstance(int8, type(model))
    int8_network = int8._network(int8.params)
    int8_dense = [n for _, n in nnx.iter_graph(int8_network.vit) if type(n) is Int8Dense]
    assert not [n for _, n in nnx.iter_graph(int8_network.vit) if type(n) in (Dense, FlaxViTSelfAttention)]
    assert len(int8_dense) == int8_products(model.config.num_hidden_layers)
    assert all(d.kernel[...].dtype == jnp.int8 and d.scale[...].shape == (d.kernel.shape[1],) for d in int8_dense)
    # The params the copy runs on: int8 kernels, stored once (not float kernels quantised per call).
    block = int8.params["vit"]["encoder"]["layer"]["0"]
    assert block["intermediate"]["dense"]["kernel"].dtype == jnp.int8
    hidden = model.config.hidden_size
    assert block["attention"]["attention"]["qkv"]["kernel"].shape == (hidden, 3 * hidden)
    assert block["attention"]["attention"]["qkv"]["kernel"].dtype == jnp.int8
    assert int8.params["vit"]["embeddings"]["patch_embeddings"]["projection"]["kernel"].dtype == jnp.int8
    assert int8.params["classifier"]["kernel"].dtype == jnp.float32  # the head stays float (module docstring)
    assert type(int8_network.classifier) is Dense


def dot_generals(jaxpr) -> list[tuple[str, str, str]]:
    """(lhs, rhs, result) dtypes of every dot_general in a traced program, nested jit calls included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append((*(str(v.aval.dtype) for v in eqn.invars), str(eqn.outvars[0].aval.dtype)))
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", None)
            if inner is not None:
                found += dot_generals(inner)
    return found


def test_traced_copy_runs_the_encoder_matmuls_on_int8(tiny_config):
    """What XLA is given: int8 x int8 -> int32 for the block projections; float32 for attention and the heads."""
    from vit import FlaxViTForImageClassification

    copy = quantize(FlaxViTForImageClassification(tiny_config), "dynamic")
    traced = jax.make_jaxpr(lambda x: copy(x).logits)(np.zeros((2, 3, 32, 32), np.float32))
    products = dot_generals(traced.jaxpr)
    layers = tiny_config.num_hidden_layers
    assert products.count(("int8", "int8", "int32")) == int8_products(layers)
    # Q·Kᵀ and probs·V of every block, the classifier
    assert products.count(("float32", "float32", "float32")) == 2 * layers + 1
    assert len(products) == int8_products(layers) + 2 * layers + 1


def test_bfloat16_attention_runs_attention_products_in_bfloat16(tiny_config):
    """attention_dtype=bfloat16: q kᵀ and probs v are bf16 x bf16 -> float32; the projections stay int8, the rest
    float32; and it changes the logits, so the option is not ignored."""
    from vit import FlaxViTForImageClassification

    model = FlaxViTForImageClassification(tiny_config)
    copy = quantize(model, "dynamic", attention_dtype=jnp.bfloat16)
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    products = dot_generals(jax.make_jaxpr(lambda v: copy(v).logits)(x).jaxpr)
    layers = tiny_config.num_hidden_layers
    assert products.count(("int8", "int8", "int32")) == int8_products(layers)
    assert products.count(("bfloat16", "bfloat16", "float32")) == 2 * layers
    assert products.count(("float32", "float32", "float32")) == 1  # the classifier
    logits = np.asarray(copy(x).logits)
    assert logits.dtype == np.float32
    assert not np.array_equal(logits, np.asarray(quantize(model, "dynamic")(x).logits))


def test_one_product_for_query_key_and_value_equals_three(tiny_config):
    """Each output column keeps its own scale, so the fused product is the three separate ones bit for bit."""
    from vit import FlaxViTForImageClassification

    model = FlaxViTForImageClassification(tiny_config)
    attention = model._network(model.params).vit.encoder.layer[0].attention.attention
    fused = Int8SelfAttention.from_attention(attention, jnp.float32)
    hidden = np.random.default_rng(0).normal(size=(2, 5, tiny_config.hidden_size)).astype(np.float32)
    separate = [attention.split_heads(Int8Dense.from_dense(layer)(hidden))
                for layer in (attention.query, attention.key, attention.value)]
    for got, want in zip(fused.project(hidden), separate, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_copy_runs_under_jit_with_numpy_at_any_batch(digits, int8):
    _, pixels, _, _ = digits
    full = np.asarray(int8(pixels[:16]).logits)
    jitted = jax.jit(lambda x: int8(x).logits)
    np.testing.assert_allclose(np.asarray(jitted(jnp.asarray(pixels[:16]))), full, atol=INT8_BATCH_INVARIANCE_ATOL, rtol=0)
    # Per-row scales: the same image gives the same logits alone, in a batch of 3 and in a batch of 16.
    np.testing.assert_allclose(np.asarray(int8(pixels[:3]).logits), full[:3], atol=INT8_BATCH_INVARIANCE_ATOL, rtol=0)
    np.testing.assert_allclose(np.asarray(int8(pixels[5:6]).logits), full[5:6], atol=INT8_BATCH_INVARIANCE_ATOL, rtol=0)
    output = int8(pixels[:2], output_hidden_states=True)
    assert type(output) is type(digits[0](pixels[:2])) and len(output.hidden_states) == int8.config.num_hidden_layers + 1


@pytest.mark.parametrize("attention_dtype", [None, "bfloat16"])
def test_copy_at_another_resolution_follows_the_float_model(tiny_config, attention_dtype):
    """160 px instead of 32: interpolated positions and 401 tokens, which take attention's one-head-at-a-time path."""
    from vit import FlaxViTForImageClassification

    model = FlaxViTForImageClassification(tiny_config)
    copy = quantize(model, "dynamic", attention_dtype=attention_dtype)
    pixels = np.random.default_rng(0).normal(size=(2, 3, 160, 160)).astype(np.float32)
    want = np.asarray(model(pixels, interpolate_pos_encoding=True).logits)
    got = np.asarray(copy(pixels, interpolate_pos_encoding=True).logits)
    assert 0 < np.abs(got - want).max() <= INT8_VS_FP32_REL * np.abs(want).max()


def test_copy_is_frozen_and_original_unchanged(digits):
    """Quantising copies the weights once: later edits to the original change the original only."""
    model, pixels, _, _ = digits
    copy = quantize(model, "dynamic")
    before, original = np.asarray(copy(pixels[:16]).logits), np.asarray(model(pixels[:16]).logits)
    assert not modules_of(model, Int8Dense) and modules_of(copy, Int8Dense)
    saved = model.params
    try:
        params = jax.tree_util.tree_map(lambda leaf: leaf, model.params)  # new dicts, same leaves
        params["classifier"]["kernel"] = -params["classifier"]["kernel"]
        layer = params["vit"]["encoder"]["layer"]["0"]["intermediate"]["dense"]
        layer["kernel"] = layer["kernel"] * 2
        model.params = params
        assert not np.allclose(np.asarray(model(pixels[:16]).logits), original)
        saved["classifier"]["kernel"] = -saved["classifier"]["kernel"]  # and edits to the dict it was made from
        model.config.pooling = "mean"  # and to its config, which its network reads when traced
        np.testing.assert_array_equal(np.asarray(copy(pixels[:16]).logits), before)
        # A new batch size traces both again, so that the edited config is read now.
        assert not np.allclose(np.asarray(model(pixels[:7]).logits), original[:7], atol=0.1)
        np.testing.assert_allclose(np.asarray(copy(pixels[:7]).logits), before[:7], atol=INT8_BATCH_INVARIANCE_ATOL, rtol=0)
    finally:
        saved["classifier"]["kernel"] = -saved["classifier"]["kernel"]
        model.params = saved
        model.config.pooling = "cls"
    np.testing.assert_array_equal(np.asarray(model(pixels[:16]).logits), original)


def test_saving_and_training_the_copy_are_refused(int8, digits, tmp_path):
    pixels = digits[1][:2]
    with pytest.raises(NotImplementedError, match="cannot be saved"):
        int8.save_pretrained(tmp_path / "int8")
    assert not (tmp_path / "int8").exists()
    with pytest.raises(NotImplementedError, match="cannot be saved"):
        int8.canonical_state_dict()
    with pytest.raises(NotImplementedError, match="frozen int8 copy"):
        int8.load_canonical_state_dict(digits[0].canonical_state_dict())
    with pytest.raises(NotImplementedError, match="not loaded"):
        type(int8).from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="inference only"):
        int8(pixels, train=True, dropout_rng=jax.random.key(0))
    with pytest.raises(ValueError, match="takes no params="):
        int8(pixels, params=digits[0].params)


def test_bad_requests_raise_clear_errors(digits, int8, tiny_config):
    from vit import FlaxViTForImageClassification, ViTForImageClassification

    model = digits[0]
    with pytest.raises(ValueError, match="offers"):
        quantize(model, "int4")
    with pytest.raises(ValueError, match="offers"):
        quantize(model, "static")
    with pytest.raises(ValueError, match="float32 model"):
        quantize(FlaxViTForImageClassification(tiny_config, dtype="bfloat16"), "dynamic")
    with pytest.raises(ValueError, match="float32 model"):
        quantize(FlaxViTForImageClassification(tiny_config, param_dtype="bfloat16"), "dynamic")
    with pytest.raises(ValueError, match="float32 \\(None\\) or bfloat16"):
        quantize(model, "dynamic", attention_dtype="float16")
    with pytest.raises(ValueError, match="already an int8 copy"):
        quantize(int8, "dynamic")
    pytest.importorskip("torch")
    with pytest.raises(TypeError, match="Flax models"):
        quantize(ViTForImageClassification(tiny_config), "dynamic")


@pytest.mark.parametrize("cls_name, options", [
    ("FlaxViTModel", {}),
    ("FlaxViTForMaskedImageModeling", {}),
    ("FlaxViTWithProjection", {"projection_dim": 16}),
    ("FlaxViTForImageClassificationWithTeacher", {"distillation_token": True}),
    ("FlaxViTForImageClassification", {"use_swiglu_ffn": True, "layer_scale_init_value": 0.5,
                                       "num_register_tokens": 2, "pooling": "mean", "use_fc_norm": True}),
])
def test_every_head_and_block_variant_quantises(cls_name, options, tiny_config):
    import vit

    config = vit.ViTConfig(**{**tiny_config.to_dict(), **options})
    model = getattr(vit, cls_name)(config)
    copy = quantize(model, "dynamic")
    pixels = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    expected, got = model(pixels), copy(pixels)
    assert type(got) is type(expected) and isinstance(copy, type(model))
    assert len(modules_of(copy, Int8Dense)) == int8_products(config.num_hidden_layers)
    for name in ("logits", "last_hidden_state", "image_embeds", "reconstruction"):
        if getattr(expected, name, None) is not None:
            want, have = np.asarray(getattr(expected, name)), np.asarray(getattr(got, name))
            assert have.shape == want.shape
            assert 0 < np.abs(have - want).max() <= INT8_VS_FP32_REL * np.abs(want).max()


def test_module_docstring_example():
    result = doctest.testmod(quantize_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
