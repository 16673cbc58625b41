"""Resizing the position-embedding grid, identically in every framework.

A separable resize of a (H, W, D) grid is `Mh @ grid @ Mw.T` for two small matrices that depend only on the
sizes. We build those matrices once, in NumPy, and every framework applies them with two matmuls, so
PyTorch, TensorFlow and JAX give the same numbers to float round-off. Three methods:

- "bicubic": PyTorch's `F.interpolate(mode="bicubic", align_corners=False)`, Keys' cubic with a = -0.75 and
  clamped borders. This is what HF's `interpolate_pos_encoding` does, and our default.
- "bicubic_antialias": the same call with `antialias=True` (timm's `resample_abs_pos_embed`): a = -0.5,
  the kernel widened by the scale when shrinking, borders renormalised.
- "linear": `scipy.ndimage.zoom(order=1)`, i.e. linear with aligned corners, as the original
  google-research code resizes checkpoints.
"""

from __future__ import annotations

import functools
import math

import numpy as np

METHODS = ("bicubic", "bicubic_antialias", "linear")


def _keys_cubic(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _bicubic(in_size: int, out_size: int) -> np.ndarray:
    matrix = np.zeros((out_size, in_size))
    # torch computes the scale and the source coordinate in float32; so do we, to match bit for bit.
    scale = np.float32(in_size) / np.float32(out_size)
    for i in range(out_size):
        src = (np.float32(i) + np.float32(0.5)) * scale - np.float32(0.5)
        floor = math.floor(src)
        t = np.float32(src - floor)
        weights = _keys_cubic(np.array([t + 1, t, 1 - t, 2 - t], dtype=np.float64), -0.75)
        for offset, weight in zip(range(-1, 3), weights, strict=True):
            matrix[i, min(max(floor + offset, 0), in_size - 1)] += weight
    return matrix


def _bicubic_antialias(in_size: int, out_size: int) -> np.ndarray:
    matrix = np.zeros((out_size, in_size))
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0
    inv_scale = 1.0 / scale if scale >= 1.0 else 1.0
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = np.arange(lo, hi)
        weights = _keys_cubic((taps - center + 0.5) * inv_scale, -0.5)
        total = weights.sum()
        matrix[i, lo:hi] = weights / total if total != 0 else weights
    return matrix


def _linear_aligned(in_size: int, out_size: int) -> np.ndarray:
    matrix = np.zeros((out_size, in_size))
    if in_size == 1 or out_size == 1:
        matrix[:, 0] = 1.0
        return matrix
    for i in range(out_size):
        src = i * (in_size - 1) / (out_size - 1)
        lo = min(int(math.floor(src)), in_size - 2)
        t = src - lo
        matrix[i, lo] += 1 - t
        matrix[i, lo + 1] += t
    return matrix


@functools.lru_cache(maxsize=256)
def resize_matrix(in_size: int, out_size: int, method: str = "bicubic") -> np.ndarray:
    """The (out_size, in_size) float64 matrix that resizes one axis. Read-only; cached."""
    if method not in METHODS:
        raise ValueError(f"Unknown position-embedding resize method {method!r}; choose one of {METHODS}.")
    if in_size == out_size:
        matrix = np.eye(in_size)
    else:
        matrix = {"bicubic": _bicubic, "bicubic_antialias": _bicubic_antialias, "linear": _linear_aligned}[method](
            in_size, out_size
        )
    matrix.setflags(write=False)
    return matrix


def resize_grid(grid: np.ndarray, new_hw: tuple[int, int], method: str = "bicubic") -> np.ndarray:
    """Resize a (H, W, D) grid of embeddings to (new_h, new_w, D), in float64, returned in grid's dtype."""
    h, w, _ = grid.shape
    mh = resize_matrix(h, new_hw[0], method)
    mw = resize_matrix(w, new_hw[1], method)
    out = np.einsum("ah,hwd,bw->abd", mh, grid.astype(np.float64), mw)
    return out.astype(grid.dtype)


def resize_position_embeddings(
    pos: np.ndarray, old_grid: tuple[int, int], new_grid: tuple[int, int], num_prefix_tokens: int, method: str = "bicubic"
) -> np.ndarray:
    """Resize a (1, prefix + H*W, D) position embedding to a new grid; the prefix rows are kept."""
    prefix, patches = pos[:, :num_prefix_tokens], pos[:, num_prefix_tokens:]
    d = pos.shape[-1]
    grid = patches.reshape(old_grid[0], old_grid[1], d)
    resized = resize_grid(grid, new_grid, method).reshape(1, new_grid[0] * new_grid[1], d)
    return np.concatenate([prefix, resized], axis=1)
