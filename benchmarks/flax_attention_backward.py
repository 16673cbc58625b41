"""What was tried to speed up attention's backward pass in Flax on the CPU (README, "Training speed").

Attention's core at ViT-S/16, batch 8 (48 (image, head) pairs of 197 tokens x 64), forward and backward under
jax.grad, in the layouts and formulations tried, alternated in one process, milliseconds per call:

    python benchmarks/flax_attention_backward.py            # the model's attention and the alternatives
    XLA_FLAGS=--xla_cpu_use_onednn=true python benchmarks/flax_attention_backward.py   # an XLA flag's effect

The model uses none of the alternatives: none was faster by more than noise on a whole step here (README).
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent / "src"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from vit.flax.modeling import attention_per_head, attention_probs  # noqa: E402

BATCH, HEADS, TOKENS, HEAD_SIZE = 8, 6, 197, 64


def model_attention(q, k, v):
    """The model's formulation: softmax(q kᵀ / sqrt(d)) v with autodiff's backward pass."""
    return jnp.matmul(attention_probs(q, k), v)


@jax.custom_vjp
def handwritten_backward(q, k, v):
    """The same forward with the backward pass written out (flash attention's formulas)."""
    return model_attention(q, k, v)


def _forward(q, k, v):
    probs = attention_probs(q, k)
    out = jnp.matmul(probs, v)
    return out, (q, k, v, probs, out)


def _backward(saved, d_out):
    q, k, v, probs, out = saved
    d_v = jnp.matmul(probs.swapaxes(-1, -2), d_out)
    d_probs = jnp.matmul(d_out, v.swapaxes(-1, -2))
    d_scores = probs * (d_probs - jnp.sum(d_out * out, axis=-1, keepdims=True)) / math.sqrt(q.shape[-1])
    return jnp.matmul(d_scores, k), jnp.matmul(d_scores.swapaxes(-1, -2), q), d_v


handwritten_backward.defvjp(_forward, _backward)


def split(parts: int, axis: int):
    """The batched matmuls cut into independent parts (over images, axis 0, or heads, axis 1), which XLA's
    runtime may run concurrently."""
    def attention(q, k, v):
        pieces = zip(*(jnp.split(t, parts, axis=axis) for t in (q, k, v)), strict=True)
        return jnp.concatenate([model_attention(*piece) for piece in pieces], axis=axis)
    return attention


VARIANTS = {
    "model (autodiff)": model_attention,
    "hand-written backward (custom_vjp)": handwritten_backward,
    "one (image, head) at a time": attention_per_head,
    "split in 2 over images": split(2, 0),
    "split in 4 over images": split(4, 0),
    "split in 8 over images": split(8, 0),
    "split in 2 over heads": split(2, 1),
    "split in 3 over heads": split(3, 1),
}


def main(rounds: int = 15) -> None:
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(BATCH, HEADS, TOKENS, HEAD_SIZE)).astype(np.float32)) for _ in range(3))
    grads = {name: jax.jit(jax.grad(lambda q, k, v, f=f: jnp.sum(f(q, k, v) ** 2), argnums=(0, 1, 2)))
             for name, f in VARIANTS.items()}
    reference = grads["model (autodiff)"](q, k, v)
    for name, grad in grads.items():  # every variant computes the same gradients
        worst = max(float(jnp.abs(a - b).max() / jnp.abs(a).max()) for a, b in zip(reference, grad(q, k, v), strict=True))
        assert worst < 1e-5, (name, worst)
    samples: dict[str, list[float]] = {name: [] for name in grads}
    for _ in range(rounds):
        for name, grad in grads.items():
            start = time.perf_counter()
            jax.block_until_ready(grad(q, k, v))
            samples[name].append(time.perf_counter() - start)
    for name, values in samples.items():
        print(f"{name:36s} {1000 * statistics.median(values):6.1f} ms forward+backward")


if __name__ == "__main__":
    main()
