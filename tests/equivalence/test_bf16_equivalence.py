"""Reduced precision: `from_pretrained(..., dtype=...)` computes in that dtype in every framework, and the three
frameworks in bfloat16 agree with each other and with float32, on the trained demo model (360 held-out digits)
and on real photos through the HF conformance checkpoint.

"Relative" below is max |difference| over all logits divided by max |float32 logit| of the same inputs. The
numbers the README states are the tolerances here; what was measured is in each constant's comment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import (
    BF16_CROSS_FRAMEWORK_REL,
    BF16_VS_FP32_REL,
    FP16_CROSS_FRAMEWORK_REL,
    FP16_VS_FP32_REL,
    HF,
    PHOTOS,
)
from frameworks import FRAMEWORKS, model_class

ROOT = Path(__file__).resolve().parents[2]
DEMO_MODEL = ROOT / "src" / "vit" / "demo_model"
# The PyTorch model twice: SDPA (the default) and the explicit softmax (attention maps, head masks).
VARIANTS = (*FRAMEWORKS, "pt-eager")


def _framework_of(variant: str) -> str:
    return variant.split("-")[0]


def _load(variant: str, folder: Path, dtype):
    framework = _framework_of(variant)
    pytest.importorskip({"pt": "torch", "tf": "tensorflow", "flax": "flax"}[framework])
    extra = {"attn_implementation": "eager"} if variant == "pt-eager" else {}
    return model_class(framework, "classification").from_pretrained(str(folder), dtype=dtype, **extra)


def _logits(variant: str, folder: Path, pixels: np.ndarray, dtype: str) -> np.ndarray:
    """The logits as float32 NumPy (NumPy has no bfloat16; the widening is exact)."""
    model = _load(variant, folder, dtype)
    if _framework_of(variant) == "pt":
        import torch

        # torch.tensor copies: torch.from_numpy warns on demo_digits' arrays, which are read-only.
        with torch.inference_mode():
            logits = model(torch.tensor(pixels)).logits
        assert logits.dtype == getattr(torch, dtype)
        return logits.float().numpy()
    logits = model(pixels).logits
    assert np.dtype(logits.dtype.name if hasattr(logits.dtype, "is_floating") else logits.dtype).name == dtype
    return np.asarray(logits, dtype=np.float32)


@pytest.fixture(scope="module")
def photos():
    """The four real photos at the conformance checkpoint's 32 pixels."""
    from vit import ViTImageProcessor

    files = sorted(str(p) for p in PHOTOS.iterdir() if p.suffix in (".png", ".jpg"))
    return ViTImageProcessor(size=32)(files, return_tensors="np").pixel_values


CASES = {"digits": DEMO_MODEL, "photos": HF / "classification" / "safetensors"}


@pytest.fixture(scope="module")
def logits_by_case(demo_digits, photos):
    """{(case, variant, dtype): logits}, computed once for the module; "digits" is the demo's 360 held-out scans."""
    pixels = {"digits": demo_digits.pixels, "photos": photos}
    cache: dict = {}

    def get(case: str, variant: str, dtype: str) -> np.ndarray:
        if (case, variant, dtype) not in cache:
            cache[case, variant, dtype] = _logits(variant, CASES[case], pixels[case], dtype)
        return cache[case, variant, dtype]

    return get


def _relative(a: np.ndarray, b: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(reference)))


REDUCED = {"bfloat16": (BF16_CROSS_FRAMEWORK_REL, BF16_VS_FP32_REL), "float16": (FP16_CROSS_FRAMEWORK_REL, FP16_VS_FP32_REL)}


@pytest.mark.parametrize("dtype", list(REDUCED))
@pytest.mark.parametrize("case", list(CASES))
def test_frameworks_agree_in_reduced_precision(logits_by_case, case, dtype):
    """Every pair of frameworks in `dtype`: logits within the stated tolerance, and the same top-1 on every input."""
    reference = logits_by_case(case, "pt", "float32")
    tolerance = REDUCED[dtype][0]
    for i, a in enumerate(VARIANTS):
        for b in VARIANTS[i + 1:]:
            la, lb = logits_by_case(case, a, dtype), logits_by_case(case, b, dtype)
            assert _relative(la, lb, reference) <= tolerance, (a, b)
            np.testing.assert_array_equal(la.argmax(-1), lb.argmax(-1), err_msg=f"top-1 of {a} vs {b} in {dtype}")


@pytest.mark.parametrize("dtype", list(REDUCED))
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("variant", VARIANTS)
def test_reduced_precision_agrees_with_float32(logits_by_case, case, variant, dtype):
    """Each framework in `dtype` against its own float32: within the stated bound, and the same top-1 everywhere."""
    full = logits_by_case(case, variant, "float32")
    reduced = logits_by_case(case, variant, dtype)
    assert _relative(reduced, full, full) <= REDUCED[dtype][1]
    np.testing.assert_array_equal(reduced.argmax(-1), full.argmax(-1))


@pytest.mark.parametrize("variant", VARIANTS)
def test_bfloat16_keeps_the_demo_accuracy(logits_by_case, demo_digits, variant):
    """The README's demo accuracy (96.1%, 346 of 360) holds in bfloat16 in every framework."""
    correct = logits_by_case("digits", variant, "bfloat16").argmax(-1) == demo_digits.labels
    assert int(correct.sum()) == 346


# ------------------------------------------------------------------------------------------------ dtype=
def _spellings(framework: str) -> list:
    """"bfloat16", this framework's own dtype object and, where it differs, NumPy/JAX's."""
    import ml_dtypes

    if framework == "pt":
        import torch

        return ["bfloat16", torch.bfloat16, ml_dtypes.bfloat16]
    if framework == "tf":
        import tensorflow as tf

        return ["bfloat16", tf.bfloat16, ml_dtypes.bfloat16]
    import jax.numpy as jnp

    return ["bfloat16", jnp.bfloat16, np.dtype(jnp.bfloat16)]


def _computed_dtypes(framework: str, model, pixels: np.ndarray) -> set[str]:
    """The dtypes of the weights, every hidden state and the logits."""
    if framework == "pt":
        import torch

        with torch.inference_mode():
            out = model(torch.from_numpy(pixels), output_hidden_states=True)
        tensors = [*model.parameters(), *out.hidden_states, out.logits]
        return {str(t.dtype).removeprefix("torch.") for t in tensors}
    out = model(pixels, output_hidden_states=True)
    if framework == "tf":
        return {v.dtype for v in model.variables} | {t.dtype.name for t in (*out.hidden_states, out.logits)}
    import jax

    params = jax.tree_util.tree_leaves(model.params)
    computed = {np.dtype(t.dtype).name for t in (*out.hidden_states, out.logits)}
    return computed | {"params " + np.dtype(p.dtype).name for p in params}


def test_dtype_reaches_every_weight_and_activation(framework, photos):
    """Before, TF's dtype= set only the outer Keras model: weights, activations and logits stayed float32."""
    for dtype in _spellings(framework):
        model = _load(framework, HF / "classification" / "safetensors", dtype)
        dtypes = _computed_dtypes(framework, model, photos)
        # Flax keeps params in param_dtype (float32 unless asked) and casts them where they are used.
        assert dtypes == ({"bfloat16", "params float32"} if framework == "flax" else {"bfloat16"}), (dtype, dtypes)


def test_float32_is_unchanged_by_dtype(framework, photos):
    """dtype="float32" gives exactly the numbers of a model loaded without dtype=."""
    folder = HF / "classification" / "safetensors"
    default = model_class(framework, "classification").from_pretrained(str(folder))
    if framework == "pt":
        import torch

        with torch.inference_mode():
            a, b = default(torch.from_numpy(photos)).logits.numpy(), _logits(framework, folder, photos, "float32")
    else:
        a, b = np.asarray(default(photos).logits), _logits(framework, folder, photos, "float32")
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", ["bf16", "int8", np.int32])
def test_unknown_dtype_is_a_clear_error(framework, bad):
    with pytest.raises(ValueError, match="float32, bfloat16, float16"):
        _load(framework, HF / "classification" / "safetensors", bad)


def test_layernorm_statistics_are_float32(framework):
    """LayerNorm on bfloat16 input: the result is float32 LayerNorm of that input rounded once (≤ 1 bf16 ulp)."""
    import ml_dtypes

    rng = np.random.default_rng(0)
    # A large mean: bfloat16 statistics lose the variance entirely here.
    x = (40.0 + rng.standard_normal((4, 64))).astype(ml_dtypes.bfloat16)
    x64 = x.astype(np.float64)
    exact = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-6)
    if framework == "pt":
        import torch

        norm = torch.nn.LayerNorm(64, eps=1e-6).to(torch.bfloat16)
        with torch.no_grad():
            got = norm(torch.from_numpy(x.astype(np.float32)).bfloat16()).float().numpy()
    elif framework == "tf":
        import tensorflow as tf

        from vit.tf.modeling import LayerNorm

        norm = LayerNorm(64, 1e-6, dtype="bfloat16")
        got = tf.cast(norm(tf.cast(x.astype(np.float32), tf.bfloat16)), tf.float32).numpy()
    else:
        import jax.numpy as jnp

        from vit.flax.modeling import LayerNorm

        got = np.asarray(LayerNorm(64, 1e-6, dtype=jnp.bfloat16)(jnp.asarray(x)), dtype=np.float32)
    ulp = np.abs(exact) * 2.0**-7 + 2.0**-133
    assert np.all(np.abs(got - exact) <= ulp)
