"""The int8 copies of TensorFlow and Flax (`vit.tf.quantize`, `vit.flax.quantize`) agree closely: they share the
int8 weights (`vit.quantization`), the same per-row activation scales and the same rounding, on the trained demo
model's 360 held-out digits. What differs is float32 round-off (in LayerNorm, softmax, the rescales), and where it
moves an activation across the midpoint between two int8 steps, that activation lands one step (1/127 of its
row's largest value) away: so the copies agree about 15 times more closely than either agrees with float32, but
not to float32 round-off."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BF16_CROSS_FRAMEWORK_REL

INT8_CROSS_FRAMEWORK_REL = 3e-3  # max |TF - Flax| / max |logit| (measured 1.2e-3; int8 vs float32: 1.8e-2)


@pytest.mark.parametrize("attention_dtype, tolerance", [
    (None, INT8_CROSS_FRAMEWORK_REL),
    ("bfloat16", BF16_CROSS_FRAMEWORK_REL),  # measured 1.5e-2
])
def test_tensorflow_and_flax_int8_copies_agree(demo_digits, attention_dtype, tolerance):
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("flax")
    from vit import FlaxViTForImageClassification, TFViTForImageClassification
    from vit.flax.quantize import quantize as quantize_flax
    from vit.tf.quantize import quantize as quantize_tf

    pixels = demo_digits.pixels
    tf_copy = quantize_tf(TFViTForImageClassification.from_pretrained(demo_digits.model_dir), attention_dtype=attention_dtype)
    flax_copy = quantize_flax(FlaxViTForImageClassification.from_pretrained(demo_digits.model_dir),
                              attention_dtype=attention_dtype)
    tf_logits = tf.function(lambda x: tf_copy(x).logits, jit_compile=True)(pixels).numpy()
    flax_logits = np.asarray(flax_copy(pixels).logits)
    relative = np.abs(tf_logits - flax_logits).max() / np.abs(flax_logits).max()
    assert relative <= tolerance
    assert (tf_logits.argmax(-1) == flax_logits.argmax(-1)).mean() >= 0.99
