"""What the Flax and TensorFlow int8 copies share (`vit.flax.quantize`, `vit.tf.quantize`): how a float kernel
becomes int8 weights with one scale per output channel, and what a copy refuses. No framework imports, so that
either framework can use it."""

from __future__ import annotations

from typing import Any

import numpy as np

INT8_MAX = 127  # symmetric int8: [-127, 127], so that -x is representable for every x


def quantize_per_output_channel(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A float (in, out) kernel as int8 (in, out) and one float32 scale per output column: kernel ≈ int8 * scale.

    Example:
        >>> import numpy as np
        >>> quantised, scale = quantize_per_output_channel(np.array([[0.5, -2.0], [0.25, 1.0]], np.float32))
        >>> quantised.tolist(), scale.tolist()
        ([[127, -127], [64, 64]], [0.003937007859349251, 0.015748031437397003])
    """
    kernel = np.asarray(kernel, np.float32)
    amax = np.abs(kernel).max(axis=0)
    scale = np.where(amax > 0, amax / INT8_MAX, 1.0).astype(np.float32)  # an all-zero column stays zero
    return np.clip(np.rint(kernel / scale), -INT8_MAX, INT8_MAX).astype(np.int8), scale


def fused_kernel(kernels: list[np.ndarray], biases: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Float layers that read the same input (query, key, value), or one conv kernel (h, w, in, out) seen as the
    (h * w * in, out) matmul it is applied as, quantised as one (in, sum of outs) int8 kernel: (int8 kernel,
    scales, float32 bias or None). Each output column keeps its own scale, so the fused product equals the
    separate ones bit for bit."""
    kernel, scale = quantize_per_output_channel(np.concatenate([np.reshape(k, (-1, np.shape(k)[-1])) for k in kernels], 1))
    # Layers fused here come from one config: they all have a bias or none has.
    bias = None if biases[0] is None else np.concatenate([np.asarray(b, np.float32) for b in biases])
    return kernel, scale, bias


class Int8Copy:
    """Mixed into an int8 copy's class: it is made by `quantize()`, never loaded, and never saved, because the
    parameter table has no int8 kernels. Each framework's mixin names its module and refuses its own save path
    with `not_saveable()`."""

    quantize_module = "vit.<framework>.quantize"

    def not_saveable(self) -> NotImplementedError:
        return NotImplementedError(
            f"{type(self).__name__} is an int8 copy made by {self.quantize_module}.quantize(): the parameter table "
            "has no int8 kernels, so it cannot be saved or converted. Save the float32 model it was made from, and "
            "quantize() again after loading it.")

    def load_canonical_state_dict(self, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError(
            f"{type(self).__name__} is a frozen int8 copy: load the weights into the float32 model and quantize() "
            "it again.")

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any):
        raise NotImplementedError(
            f"{cls.__name__} is made by {cls.quantize_module}.quantize(), not loaded: load the float32 class with "
            "from_pretrained, then quantize() it.")


_INT8_CLASSES: dict[tuple[type, type], type] = {}


def int8_class(mixin: type, cls: type) -> type:
    """One int8 subclass of model class `cls` per framework mixin, so that isinstance(copy, type(model)) holds."""
    if (mixin, cls) not in _INT8_CLASSES:
        _INT8_CLASSES[mixin, cls] = type(f"Int8{cls.__name__}", (mixin, cls), {
            "__module__": mixin.__module__, "__doc__": f"An int8 copy of {cls.__name__} (see quantize)."})
    return _INT8_CLASSES[mixin, cls]
