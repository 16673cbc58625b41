"""TensorFlow specifics: Keras fit, XLA, SavedModel export, recompute_grad, mixed precision."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import HF, compiled_dots, expected

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from vit import TFViTForImageClassification, TFViTForMaskedImageModeling, ViTConfig  # noqa: E402

SMALL = dict(image_size=16, patch_size=8, encoder_stride=8, hidden_size=16, num_hidden_layers=2,
             num_attention_heads=2, intermediate_size=32, num_labels=3)


def classifier() -> TFViTForImageClassification:
    return TFViTForImageClassification.from_pretrained(HF / "classification" / "safetensors")


def test_fit_lowers_the_loss_from_labels():
    keras.utils.set_random_seed(0)
    model = TFViTForImageClassification(ViTConfig(**SMALL))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x, y, batch_size=8, epochs=4, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    assert "loss" in model.evaluate(x, y, verbose=0, return_dict=True)


def test_mim_fits_without_labels():
    model = TFViTForMaskedImageModeling(ViTConfig(**SMALL))
    x = np.random.default_rng(0).normal(size=(8, 3, 16, 16)).astype(np.float32)
    mask = np.zeros((8, 4), bool)
    mask[:, :2] = True
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit({"pixel_values": x, "bool_masked_pos": mask}, epochs=3, batch_size=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_xla_forward_and_train_step_match_eager():
    e = expected("classification")
    model = classifier()
    forward = tf.function(lambda x: model(x).logits, jit_compile=True)
    assert np.max(np.abs(forward(e["pixel_values"]).numpy() - e["logits"])) <= 1e-5
    interp = tf.function(lambda x: model(x, interpolate_pos_encoding=True).logits, jit_compile=True)
    assert np.max(np.abs(interp(e["pixel_values_interp"]).numpy() - e["logits_interp"])) <= 1e-5

    optimizer = keras.optimizers.SGD(0.1)

    @tf.function(jit_compile=True)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = model(x, labels=y, training=True).loss
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    first = float(train_step(e["pixel_values"], e["labels"]))
    assert abs(first - float(e["loss"])) <= 1e-5
    for _ in range(3):
        last = float(train_step(e["pixel_values"], e["labels"]))
    assert last < first


def test_saved_model_round_trip(tmp_path):
    e = expected("classification")
    model = classifier()
    model.export(tmp_path / "saved")
    reloaded = tf.saved_model.load(str(tmp_path / "saved"))
    logits = reloaded.serve(tf.constant(e["pixel_values"]))["logits"].numpy()
    assert np.max(np.abs(logits - e["logits"])) <= 1e-5


def test_recompute_grad_gives_the_same_gradients():
    e = expected("classification")
    grads = []
    for checkpointing in (False, True):
        model = classifier()
        if checkpointing:
            model.gradient_checkpointing_enable()
        with tf.GradientTape() as tape:
            loss = model(e["pixel_values"], labels=e["labels"], training=True).loss
        grads.append([g.numpy() for g in tape.gradient(loss, model.trainable_variables)])
    for a, b in zip(*grads, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_mixed_bfloat16_policy():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = classifier()
        e = expected("classification")
        out = model(e["pixel_values"], labels=e["labels"])
        assert model.trainable_variables[0].dtype == "float32"
        assert out.logits.dtype == tf.bfloat16
        assert np.max(np.abs(tf.cast(out.logits, tf.float32).numpy() - e["logits"])) < 0.1
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_qkv_bias_false_is_respected():
    model = TFViTForImageClassification(ViTConfig(**SMALL, qkv_bias=False))
    names = {v.path for v in model.trainable_variables}
    assert not any("query/bias" in n for n in names)
    assert "vit.encoder.layer.0.attention.attention.query.bias" not in model.canonical_state_dict()


def test_keras_predict_returns_the_output_fields():
    e = expected("classification")
    predicted = classifier().predict(e["pixel_values"], batch_size=2, verbose=0)
    assert set(predicted) == {"logits"}
    np.testing.assert_allclose(predicted["logits"], e["logits"], atol=1e-5)


def test_compiled_metrics_are_computed_not_dropped():
    e = expected("classification")
    model = classifier()
    model.compile(optimizer=keras.optimizers.SGD(0.0), metrics=["accuracy"])
    result = model.evaluate(e["pixel_values"], e["labels"], verbose=0, return_dict=True)
    accuracy = float(np.mean(e["logits"].argmax(-1) == e["labels"]))
    assert result["accuracy"] == pytest.approx(accuracy)


def test_save_pretrained_saved_model_writes_a_servable_signature(tmp_path):
    e = expected("classification")
    classifier().save_pretrained(tmp_path, saved_model=True)
    loaded = tf.saved_model.load(str(tmp_path / "saved_model" / "1"))
    outputs = loaded.signatures["serving_default"](pixel_values=tf.constant(e["pixel_values"]))
    np.testing.assert_allclose(outputs["logits"].numpy(), e["logits"], atol=1e-5)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_long_sequences_take_the_per_head_loop_with_the_same_numbers(monkeypatch):
    """At HEAD_LOOP_MIN_TOKENS and beyond, attention runs one (image, head) at a time (a speed path); outputs and
    gradients equal the batched path's to float32 round-off, eager and under XLA, and attention maps still come out."""
    from vit.tf import modeling

    config = ViTConfig(**{**SMALL, "image_size": 80, "patch_size": 4, "encoder_stride": 4})
    tokens = config.num_patches + config.num_prefix_tokens
    assert tokens >= modeling.HEAD_LOOP_MIN_TOKENS
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 3, 80, 80)).astype(np.float32))
    labels = tf.constant([0, 2])
    calls = []
    per_head = modeling.attention_per_head
    monkeypatch.setattr(modeling, "attention_per_head", lambda *a: calls.append(1) or per_head(*a))

    def run() -> tuple[np.ndarray, np.ndarray, list]:
        keras.utils.set_random_seed(0)
        model = TFViTForImageClassification(config)
        with tf.GradientTape() as tape:
            loss = model(x, labels=labels, training=True).loss
        grads = tape.gradient(loss, model.trainable_variables)
        xla = tf.function(lambda v: model(v).logits, jit_compile=True)(x)
        return model(x).logits.numpy(), xla.numpy(), [g.numpy() for g in grads]

    looped, looped_xla, looped_grads = run()
    assert calls, "the per-head loop was not taken"
    monkeypatch.setattr(modeling, "HEAD_LOOP_MIN_TOKENS", 10**9)
    calls.clear()
    batched, batched_xla, batched_grads = run()
    assert not calls
    np.testing.assert_allclose(looped, batched, atol=1e-6)
    np.testing.assert_allclose(looped_xla, batched_xla, atol=1e-6)
    for a, b in zip(looped_grads, batched_grads, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    monkeypatch.setattr(modeling, "HEAD_LOOP_MIN_TOKENS", 1)
    keras.utils.set_random_seed(0)
    maps = TFViTForImageClassification(config)(x, output_attentions=True).attentions
    assert tuple(maps[0].shape) == (2, config.num_attention_heads, tokens, tokens)


def test_litert_export_of_a_long_sequence_has_builtin_ops_only(tmp_path):
    """The per-head loop (a While over the (image, head) pairs) still converts to LiteRT's builtin ops."""
    pytest.importorskip("ai_edge_litert")
    from vit import export
    from vit.tf.modeling import HEAD_LOOP_MIN_TOKENS

    folder = HF / "classification" / "safetensors"
    config = ViTConfig.from_pretrained(folder)
    side = config.patch_size * (int(HEAD_LOOP_MIN_TOKENS**0.5) + 1)
    report = export.export_tflite(folder, tmp_path / "long.tflite", image_size=side)  # checks parity itself
    assert report.image_size == (side, side)
    ops = export.tflite_ops(tmp_path / "long.tflite")
    assert not {op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "DELEGATE")}, ops


def _matmul_lines(hlo: str) -> list[str]:
    return [line for line in hlo.splitlines() if " dot(" in line]


def test_bfloat16_under_xla_multiplies_bf16_into_float32():
    """Under XLA every bf16 product is one dot with bf16 operands and a float32 result, rounded once afterwards:
    the form XLA CPU runs on its bf16 GEMM, where widened operands (a float32 dot) run at the float32 rate."""
    model = TFViTForImageClassification.from_pretrained(HF / "classification" / "safetensors", dtype="bfloat16")
    x = tf.constant(expected("classification")["pixel_values"])
    hlo = tf.function(lambda v: model(v).logits, jit_compile=True).experimental_get_compiler_ir(x)(stage="hlo")
    dots = _matmul_lines(hlo)
    assert len(dots) >= 6 * model.config.num_hidden_layers, hlo[:2000]
    bf16_into_f32 = re.compile(r"= f32\[[^\]]*\]\S* dot\(bf16\[[^\]]*\]\S* %\S+, bf16\[")
    assert all(bf16_into_f32.search(line) for line in dots), dots


@pytest.mark.parametrize("step", ["forward", "gradient"])
def test_bfloat16_products_stay_bfloat16_after_xla_optimises(step):
    """The compiled twin of the test above, as in tests/flax/test_flax_modeling.py: after XLA's optimiser, every
    product but the classifier's weight gradient (a sliver over the batch's few images) still has bf16 operands.
    Attention's products and their gradients were widened to float32 until q, k, v and the context were kept
    row-major."""
    e = expected("classification")
    x, y = tf.constant(e["pixel_values"]), tf.constant(e["labels"])
    if step == "forward":
        model = TFViTForImageClassification.from_pretrained(HF / "classification" / "safetensors", dtype="bfloat16")
        compiled = tf.function(lambda v: model(v).logits, jit_compile=True).experimental_get_compiler_ir(x)
    else:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            model = classifier()
        finally:
            keras.mixed_precision.set_global_policy("float32")

        def gradients(x, y):
            with tf.GradientTape() as tape:
                loss = model(x, labels=y, training=True).loss
            return tape.gradient(loss, model.trainable_variables)

        compiled = tf.function(gradients, jit_compile=True).experimental_get_compiler_ir(x, y)
    dots = compiled_dots(compiled(stage="optimized_hlo"))
    dtypes = [(a, b) for a, b, contracted in dots if contracted != len(e["pixel_values"])]
    assert len(dtypes) >= 6 * model.config.num_hidden_layers  # four projections (q, k, v in one) and attention's two
    assert set(dtypes) == {("bf16", "bf16")}, dtypes


@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_graph_matmuls_follow_the_cpu(monkeypatch, native):
    """In graph mode bf16 matmuls run as bf16 only where oneDNN multiplies bf16 in hardware with one rounding;
    elsewhere (TF's Eigen kernel errs twice as much) they run on widened float32 operands."""
    from vit.tf import modeling

    monkeypatch.setattr(modeling, "_NATIVE_BF16_MATMUL", native)
    model = TFViTForImageClassification(ViTConfig(**SMALL), dtype="bfloat16")
    x = tf.zeros((1, 3, 16, 16))
    graph = tf.function(lambda v: model(v).logits).get_concrete_function(x).graph
    matmuls = [op for op in graph.get_operations() if op.type in ("MatMul", "BatchMatMulV2", "BatchMatMulV3")]
    assert matmuls
    assert {op.inputs[0].dtype for op in matmuls} == {tf.bfloat16 if native else tf.float32}


def test_mixed_bfloat16_trains_under_xla_with_bf16_gradient_products():
    """A mixed_bfloat16 training step under XLA: TF has no gradient for a bf16 x bf16 -> f32 product (it failed with
    a dtype mismatch), so ours carries its own. Its gradients are the graph-mode step's to bf16 round-off, and its
    backward products follow the forward's rule (bf16 operands, float32 result), the form XLA CPU runs fast."""
    e = expected("classification")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = classifier()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    x, y = tf.constant(e["pixel_values"]), tf.constant(e["labels"])

    def gradients(x, y):
        with tf.GradientTape() as tape:
            loss = model(x, labels=y, training=True).loss
        return tape.gradient(loss, model.trainable_variables)

    xla = tf.function(gradients, jit_compile=True)
    graph = tf.function(gradients)
    compared = 0
    for variable, ours, reference in zip(model.trainable_variables, xla(x, y), graph(x, y), strict=True):
        ours, reference = ours.numpy().ravel(), reference.numpy().ravel()
        if "key" in variable.path and "bias" in variable.path:
            continue  # zero in exact arithmetic (softmax ignores a shift shared by all keys): round-off only
        cosine = ours @ reference / (np.linalg.norm(ours) * np.linalg.norm(reference))
        assert cosine > 0.999, (variable.path, cosine)  # measured >= 0.99992
        compared += 1
    assert compared > 10
    dots = _matmul_lines(xla.experimental_get_compiler_ir(x, y)(stage="hlo"))
    assert len(dots) >= 3 * 6 * model.config.num_hidden_layers
    bf16_into_f32 = re.compile(r"= f32\[[^\]]*\]\S* dot\(bf16\[[^\]]*\]\S* %\S+, bf16\[")
    assert all(bf16_into_f32.search(line) for line in dots), dots
