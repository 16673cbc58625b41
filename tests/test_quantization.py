"""vit.quantization: the int8 weights the Flax and TensorFlow copies share."""

from __future__ import annotations

import numpy as np

from vit.quantization import fused_kernel, quantize_per_output_channel


def test_weights_are_quantised_per_output_channel():
    """Columns of very different sizes each get their own scale: each keeps its relative precision."""
    kernel = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32) * np.array([1e-3, 1.0, 1e3], np.float32)
    kernel[:, 0] = 0.0  # an all-zero column stays zero, without dividing by zero
    quantised, scale = quantize_per_output_channel(kernel)
    assert quantised.dtype == np.int8 and scale.shape == (3,)
    assert np.abs(quantised).max(axis=0)[1:].tolist() == [127, 127]
    error = np.abs(quantised * scale - kernel).max(axis=0)
    assert error[0] == 0 and np.all(error[1:] <= 0.5 * scale[1:] + 1e-6 * np.abs(kernel[:, 1:]).max(axis=0))


def test_fused_kernel_is_the_separate_kernels_side_by_side():
    rng = np.random.default_rng(0)
    kernels = [rng.normal(size=(8, 4)).astype(np.float32) * size for size in (1e-2, 1.0, 1e2)]
    biases = [rng.normal(size=4).astype(np.float32) for _ in kernels]
    kernel, scale, bias = fused_kernel(kernels, biases)
    separate = [quantize_per_output_channel(k) for k in kernels]
    np.testing.assert_array_equal(kernel, np.concatenate([q for q, _ in separate], 1))
    np.testing.assert_array_equal(scale, np.concatenate([s for _, s in separate]))
    np.testing.assert_array_equal(bias, np.concatenate(biases))
    assert fused_kernel(kernels, [None, None, None])[2] is None
    conv = rng.normal(size=(2, 2, 3, 5)).astype(np.float32)  # (h, w, in, out): the patch projection
    np.testing.assert_array_equal(fused_kernel([conv], [None])[0], quantize_per_output_channel(conv.reshape(12, 5))[0])
