"""Shared fixtures: the conformance vectors, small configs, and one adapter per framework."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from frameworks import FRAMEWORKS  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
HF = FIXTURES / "vit-tiny-p8-32"
PHOTOS = FIXTURES / "image_processor" / "images"  # four real photos (JPEG and PNG, RGB and RGBA)
MAP_ATOL = 1e-5  # explain maps and embeddings: the same numbers from every framework and engine


@pytest.fixture(params=FRAMEWORKS)
def framework(request):
    """Each test that takes this runs once per framework."""
    pytest.importorskip({"pt": "torch", "tf": "tensorflow", "flax": "flax"}[request.param])
    return request.param


@pytest.fixture
def tiny_config():
    from vit import ViTConfig

    return ViTConfig(
        image_size=32, patch_size=8, encoder_stride=8, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, num_labels=10,
    )


class DemoDigits(NamedTuple):
    """The digits demo as NumPy: examples/digits.py's split, made pixel_values by the shipped model's processor."""

    model_dir: str  # the model `vit demo` ships
    train_pixels: np.ndarray  # the 1437 training scans
    pixels: np.ndarray  # the 360 held-out scans
    labels: np.ndarray  # the held-out scans' digits


@pytest.fixture(scope="session")
def demo_digits() -> DemoDigits:
    """Made once for every framework's tests; read-only, so that no test can change another's input."""
    pytest.importorskip("sklearn")
    sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
    from digits import digits_split

    from vit import ViTImageProcessor
    from vit.cli import demo_model_dir

    train_images, _, images, labels = digits_split()
    processor = ViTImageProcessor.from_pretrained(demo_model_dir())
    arrays = [processor(list(train_images), return_tensors="np").pixel_values,
              processor(list(images), return_tensors="np").pixel_values, labels]
    for array in arrays:
        array.setflags(write=False)
    return DemoDigits(demo_model_dir(), *arrays)


def expected(name: str) -> dict[str, np.ndarray]:
    return dict(np.load(HF / name / "expected.npz"))


# Tolerances (max |difference|), named so that one claim uses one number everywhere.
HF_TOLERANCE = 1e-5  # our outputs vs HF transformers' (and the README's "≤ 1e-5"), for logits and pixel values
# Reduced precision, relative to max |float32 logit| (tests/equivalence/test_bf16_equivalence.py; measured maxima
# on the demo digits and the photos in the comments).
BF16_CROSS_FRAMEWORK_REL = 2.5e-2  # any two frameworks in bfloat16 (measured 2.3e-2: PyTorch eager vs TF)
BF16_VS_FP32_REL = 2e-2  # each framework in bfloat16 vs its float32 (measured 1.5e-2, PyTorch eager)
FP16_CROSS_FRAMEWORK_REL = 3e-3  # any two frameworks in float16 (measured 2.1e-3: PyTorch eager vs Flax)
FP16_VS_FP32_REL = 3e-3  # each framework in float16 vs its float32 (measured 1.3e-3)
# int8 copies (tests/{pt,flax,tf}/test_*_quantize.py) on the demo's 360 held-out digits, against float32.
INT8_MIN_AGREEMENT = 0.99  # top-1 agreement with float32 (issue 15's bar)
INT8_MAX_ACCURACY_DROP = 0.005  # accuracy within 0.5 points of float32 (issue 15's bar)
INT8_VS_FP32_REL = 0.05  # max |logit diff| / max |fp32 logit|, per-row scales (Flax, TF) and PyTorch's static copy
INT8_BATCH_INVARIANCE_ATOL = 1e-5  # per-row scales: an image's logits do not depend on the rest of its batch


def compiled_dots(compiled_hlo: str) -> list[tuple[str, str, int]]:
    """(left element type, right element type, contracted length) of every dot in XLA's optimised HLO text,
    fusions' bodies included."""
    shapes = {name: (dtype, [int(n) for n in dims.split(",") if n])
              for name, dtype, dims in re.findall(r"%([\w.\-]+) = (\w+)\[([\d,]*)\]", compiled_hlo)}
    found = []
    for a, b, axis in re.findall(r" dot\(%([\w.\-]+), %([\w.\-]+)\).*?lhs_contracting_dims=\{(\d+)\}", compiled_hlo):
        found.append((shapes[a][0], shapes[b][0], shapes[a][1][int(axis)]))
    return found
