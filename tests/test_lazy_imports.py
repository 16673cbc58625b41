"""`import vit` imports no framework; each framework's classes import only that framework."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import HF

FRAMEWORK_MODULES = ("torch", "tensorflow", "jax", "flax", "keras")
CHECK = "import sys, vit; {use}; print(sorted(m for m in {mods!r} if sys.modules.get(m) is not None))"
# A finder that refuses these packages makes any import of them fail, so the check proves they are never needed.
BLOCKED = (
    "import sys, importlib.abc\n"
    "class Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in {blocked!r}:\n"
    "            raise ImportError('blocked: ' + name)\n"
    "sys.meta_path.insert(0, Block())\n"
)


def python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("use, allowed", [
    ("vit.ViTConfig(); vit.ViTImageProcessor()", []),
    ("vit.ViTModel", ["torch"]),
    ("vit.FlaxViTModel", ["flax", "jax"]),
])
def test_only_the_needed_framework_is_imported(use, allowed):
    assert python(CHECK.format(use=use, mods=FRAMEWORK_MODULES)) == str(allowed)


@pytest.mark.parametrize("cls, blocked", [
    ("ViTForImageClassification", ("tensorflow", "keras", "jax", "flax")),
    ("TFViTForImageClassification", ("torch", "jax", "flax")),
    ("FlaxViTForImageClassification", ("torch", "tensorflow", "keras")),
])
@pytest.mark.parametrize("fmt", ["safetensors", "pytorch_bin", "tf_h5", "flax_msgpack"])
def test_each_framework_loads_every_format_with_the_others_blocked(cls, blocked, fmt):
    """TensorFlow itself imports JAX when both are installed (tf.lite); blocking JAX shows we never need it."""
    code = BLOCKED.format(blocked=blocked) + (
        "import numpy as np, vit\n"
        f"model = vit.{cls}.from_pretrained({str(HF / 'classification' / fmt)!r})\n"
        "print(tuple(model(np.zeros((1, 3, 32, 32), np.float32)).logits.shape))\n"
    )
    assert python(code).splitlines()[-1] == "(1, 10)"


@pytest.mark.parametrize("module, blocked", [
    ("vit.quantization", ("torch", "tensorflow", "keras", "jax", "flax")),
    ("vit.tf.quantize", ("torch", "jax", "flax")),
    ("vit.flax.quantize", ("torch", "tensorflow", "keras")),
])
def test_int8_copies_import_only_their_framework(module, blocked):
    assert python(BLOCKED.format(blocked=blocked) + f"import {module}\nprint('imported')\n").splitlines()[-1] == "imported"
