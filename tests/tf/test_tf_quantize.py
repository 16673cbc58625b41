"""vit.tf.quantize: an int8 copy whose encoder really runs int8 matmuls under XLA, agrees with float32 on the digits
demo's held-out scans, leaves the original alone, gives an image the same logits at any batch size, and rejects what
it cannot do with a clear error. (Its agreement with the Flax copy: tests/equivalence/test_int8_equivalence.py.)"""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from conftest import (
    INT8_BATCH_INVARIANCE_ATOL,
    INT8_MAX_ACCURACY_DROP,
    INT8_MIN_AGREEMENT,
    INT8_VS_FP32_REL,
    compiled_dots,
)

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from vit import TFViTForImageClassification, ViTConfig  # noqa: E402
from vit.tf import quantize as quantize_module  # noqa: E402
from vit.tf.modeling import Dense, TFViTSelfAttention  # noqa: E402
from vit.tf.quantize import Int8Dense, Int8SelfAttention, quantize  # noqa: E402

# Measured on the 360 held-out digits (fp32 accuracy 96.1%): int8 96.4%, agreement 99.7%, max |logit diff| 1.8% of
# max |fp32 logit| (1.3% with bf16 attention): the Flax copy's numbers (tests/flax/test_flax_quantize.py).


def int8_products(layers: int) -> int:
    """q, k and v as one, the attention output and the two MLP (or SwiGLU) layers of every block, the patch
    projection."""
    return 4 * layers + 1


def under_xla(model):
    return tf.function(lambda x: model(x).logits, jit_compile=True)


def tiny(**options) -> ViTConfig:
    return ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, num_labels=3, **options)


@pytest.fixture(scope="module")
def digits(demo_digits):
    model = TFViTForImageClassification.from_pretrained(demo_digits.model_dir)
    return model, demo_digits.pixels, demo_digits.labels, model(demo_digits.pixels).logits.numpy()


@pytest.fixture(scope="module")
def int8(digits):
    return quantize(digits[0], "dynamic")


@pytest.mark.parametrize("attention_dtype", [None, "bfloat16"])
def test_int8_accuracy_on_held_out_digits(digits, int8, attention_dtype):
    _, pixels, labels, fp32 = digits
    copy = int8 if attention_dtype is None else quantize(digits[0], "dynamic", attention_dtype=attention_dtype)
    logits = under_xla(copy)(pixels).numpy()
    fp32_accuracy = float((fp32.argmax(-1) == labels).mean())
    accuracy = float((logits.argmax(-1) == labels).mean())
    agreement = float((logits.argmax(-1) == fp32.argmax(-1)).mean())
    assert fp32_accuracy >= 0.95
    assert accuracy >= fp32_accuracy - INT8_MAX_ACCURACY_DROP and agreement >= INT8_MIN_AGREEMENT
    relative = float(np.abs(logits - fp32).max() / np.abs(fp32).max())
    assert 0 < relative <= INT8_VS_FP32_REL  # > 0: the copy really runs in int8, not float32


def test_projections_hold_int8_kernels_heads_stay_float_and_float_kernels_are_released(digits, int8):
    model = digits[0]
    assert isinstance(int8, type(model)) and not int8.trainable
    layers = list(int8.vit._flatten_layers())
    assert not [layer for layer in layers if type(layer) in (Dense, TFViTSelfAttention)]
    int8_dense = [layer for layer in layers if type(layer) is Int8Dense]
    assert len(int8_dense) == int8_products(model.config.num_hidden_layers)
    assert all(d.kernel.dtype == tf.int8 and d.scale.shape == (d.kernel.shape[1],) for d in int8_dense)
    attention = int8.vit.encoder.layer[0].attention.self_attention
    assert type(attention) is Int8SelfAttention and attention.qkv.kernel.shape == (model.config.hidden_size,
                                                                                   3 * model.config.hidden_size)
    assert type(int8.classifier) is Dense and int8.classifier.kernel.dtype == "float32"  # the head stays float
    # The copy's variables: LayerNorms, embeddings and the head, no float copy of an int8 kernel kept alive.
    encoder_kernels = {tuple(d.kernel.shape) for d in int8_dense}
    assert not [v for v in int8.weights if len(v.shape) >= 2 and tuple(v.shape) in encoder_kernels]
    assert sum(v.numpy().size for v in int8.weights) < 0.2 * sum(v.numpy().size for v in model.weights)


def test_compiled_copy_runs_int8_products_and_bfloat16_attention_on_request():
    """What XLA runs: int8 x int8 for the projections; attention's two products in float32, or in bf16 with
    attention_dtype=bfloat16; the classifier in float32."""
    model = TFViTForImageClassification(tiny())
    x = tf.zeros((2, 3, 32, 32))
    for attention_dtype, attention_operands in ((None, "f32"), (tf.bfloat16, "bf16")):
        copy = quantize(model, "dynamic", attention_dtype=attention_dtype)
        dots = [(a, b) for a, b, _ in compiled_dots(under_xla(copy).experimental_get_compiler_ir(x)(stage="optimized_hlo"))]
        layers = model.config.num_hidden_layers
        assert dots.count(("s8", "s8")) == int8_products(layers)
        assert dots.count((attention_operands, attention_operands)) == 2 * layers + (attention_operands == "f32")
        assert len(dots) == int8_products(layers) + 2 * layers + 1


def test_copy_in_eager_mode_and_at_any_batch(digits, int8):
    """Eager mode gives the XLA numbers; per-row scales give an image the same logits alone or in a batch."""
    pixels = digits[1][:16]
    full = under_xla(int8)(pixels).numpy()
    np.testing.assert_allclose(int8(pixels).logits.numpy(), full, atol=INT8_BATCH_INVARIANCE_ATOL, rtol=0)
    np.testing.assert_allclose(under_xla(int8)(pixels[:3]).numpy(), full[:3], atol=INT8_BATCH_INVARIANCE_ATOL, rtol=0)
    np.testing.assert_allclose(int8(pixels[5:6]).logits.numpy(), full[5:6], atol=INT8_BATCH_INVARIANCE_ATOL, rtol=0)
    output = int8(pixels[:2], output_hidden_states=True)
    assert type(output) is type(digits[0](pixels[:2])) and len(output.hidden_states) == int8.config.num_hidden_layers + 1


@pytest.mark.parametrize("attention_dtype", [None, "bfloat16"])
def test_copy_at_another_resolution_follows_the_float_model(attention_dtype):
    """160 px instead of 32: interpolated positions and 401 tokens, which take attention's one-head-at-a-time path."""
    model = TFViTForImageClassification(tiny())
    copy = quantize(model, "dynamic", attention_dtype=attention_dtype)
    pixels = np.random.default_rng(0).normal(size=(2, 3, 160, 160)).astype(np.float32)
    want = model(pixels, interpolate_pos_encoding=True).logits.numpy()
    run = tf.function(lambda x: copy(x, interpolate_pos_encoding=True).logits, jit_compile=True)
    got = run(pixels).numpy()
    assert 0 < np.abs(got - want).max() <= INT8_VS_FP32_REL * np.abs(want).max()


def test_copy_is_frozen_and_original_unchanged(digits):
    model, pixels, _, _ = digits
    copy = quantize(model, "dynamic")
    before, original = copy(pixels[:8]).logits.numpy(), model(pixels[:8]).logits.numpy()
    kernel = model.vit.encoder.layer[0].intermediate.dense.kernel
    saved = kernel.numpy()
    try:
        kernel.assign(saved * 2)
        model.config.pooling = "mean"  # and its config, which the models read when called
        assert not np.allclose(model(pixels[:8]).logits.numpy(), original)
        np.testing.assert_array_equal(copy(pixels[:8]).logits.numpy(), before)
    finally:
        kernel.assign(saved)
        model.config.pooling = "cls"
    np.testing.assert_array_equal(model(pixels[:8]).logits.numpy(), original)


def test_saving_exporting_and_training_the_copy_are_refused(int8, digits, tmp_path):
    pixels = digits[1][:2]
    with pytest.raises(NotImplementedError, match="cannot be saved"):
        int8.save_pretrained(tmp_path / "int8")
    assert not (tmp_path / "int8").exists()
    for refused in (int8.canonical_state_dict, int8.canonical_name_of):
        with pytest.raises(NotImplementedError, match="cannot be saved"):
            refused()
    with pytest.raises(NotImplementedError, match="frozen int8 copy"):
        int8.load_canonical_state_dict(digits[0].canonical_state_dict())
    with pytest.raises(NotImplementedError, match="cannot be exported"):
        int8.export(str(tmp_path / "saved"))
    with pytest.raises(NotImplementedError, match="not loaded"):
        type(int8).from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="inference only"):
        int8(pixels, training=True)


def test_bad_requests_raise_clear_errors(digits, int8):
    model = digits[0]
    with pytest.raises(ValueError, match="offers"):
        quantize(model, "static")
    with pytest.raises(ValueError, match="float32 model"):
        quantize(TFViTForImageClassification(tiny(), dtype="bfloat16"), "dynamic")
    with pytest.raises(ValueError, match="float32 \\(None\\) or bfloat16"):
        quantize(model, "dynamic", attention_dtype="float16")
    with pytest.raises(ValueError, match="already an int8 copy"):
        quantize(int8, "dynamic")
    with pytest.raises(TypeError, match="TensorFlow models"):
        quantize(keras.Sequential([]), "dynamic")


@pytest.mark.parametrize("cls_name, options", [
    ("TFViTModel", {}),
    ("TFViTForMaskedImageModeling", {}),
    ("TFViTWithProjection", {"projection_dim": 16}),
    ("TFViTForImageClassificationWithTeacher", {"distillation_token": True}),
    ("TFViTForImageClassification", {"use_swiglu_ffn": True, "layer_scale_init_value": 0.5,
                                     "num_register_tokens": 2, "pooling": "mean", "use_fc_norm": True}),
])
def test_every_head_and_block_variant_quantises(cls_name, options):
    import vit

    config = tiny(**options)
    model = getattr(vit, cls_name)(config)
    copy = quantize(model, "dynamic")
    pixels = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    expected, got = model(pixels), copy(pixels)
    assert type(got) is type(expected) and isinstance(copy, type(model))
    assert len([la for la in copy._flatten_layers() if type(la) is Int8Dense]) == int8_products(config.num_hidden_layers)
    for name in ("logits", "last_hidden_state", "image_embeds", "reconstruction"):
        if getattr(expected, name, None) is not None:
            want, have = np.asarray(getattr(expected, name)), np.asarray(getattr(got, name))
            assert have.shape == want.shape
            assert 0 < np.abs(have - want).max() <= INT8_VS_FP32_REL * np.abs(want).max()


def test_module_docstring_example():
    result = doctest.testmod(quantize_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
