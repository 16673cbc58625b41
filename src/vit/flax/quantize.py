"""`quantize()`: an int8 copy of a Flax ViT for CPU inference, the twin of `vit.pt.quantize.quantize`.

`mode="dynamic"` (the one mode): every `Dense` of the encoder blocks (query, key and value as one product, the
attention output, the MLP or SwiGLU layers) and the patch projection become `Int8Dense` layers in the copy's
network graph:

- its weights are int8, symmetric, with one float32 scale per output channel, quantised once when the copy is
  made and stored as int8 arrays;
- at run time each row of its input (one token of one image) is quantised to int8 with its own scale, the
  product runs as `jax.lax.dot_general` on int8 with int32 accumulation, and the result is rescaled to float32
  before the float32 bias is added. Per row rather than per tensor: a token's result then does not depend on
  the other tokens and images in the batch (the copy gives an image the same logits at any batch size), and a
  token with large activations (the class token often has them) does not coarsen every other token's grid.

Query, key and value share one int8 product of width 3 x hidden (`Int8SelfAttention`): their input is quantised
once, and one wide GEMM runs faster than three narrow ones (3% of the ViT-S/16 copy's time, measured by hand on a
2-core AMX Xeon). Its result is the three separate products' bit for bit, since every output column keeps its
own scale. The patch projection is a matmul on flattened patches like any other (each patch, one row, gets its
own scale); in float32 it took 5% of that copy's time.

Everything else stays float32 by default: LayerNorm, softmax, GELU, and the heads after the encoder (pooler,
classifier, projection, attention-pooling head, MIM decoder). The heads run on one pooled token per image (the
MAP head's key/value projection on every token, once), well under 1% of the FLOPs, so int8 would buy no speed
there, and a float32 head adds no error of its own to the logits. (PyTorch's eager dynamic route quantises every
`nn.Linear`, heads included, and no convolution; here the encoder carries all of the cost and all of the int8.)

`attention_dtype=jnp.bfloat16` runs attention's two products (q kᵀ and probs v) as bf16 x bf16 -> float32, with
the softmax still in float32. They are the largest float32 products left in the copy. On a CPU with bf16 units
(AVX512-BF16, AMX) this made the copy 1.27-1.28x faster (ViT-B/16, ViT-S/16; `make bench` on a 2-core AMX Xeon).
Where there are none, XLA runs the products in float32 after a conversion, so this option buys nothing there.

The copy is an instance of a subclass of the model's class (`isinstance(copy, type(model))`), takes the same
inputs (numpy or JAX, any batch size, under the caller's `jax.jit`) and returns the same output dataclasses. It
is frozen: its params are its own, so later edits to the original do not reach it; edit the original and call
`quantize()` again. It is for inference only (no `train=True`, no `params=`), and it cannot be saved: the
parameter table has no int8 kernels, so `save_pretrained` raises instead of writing something else.

Whether it is faster than float32 depends on the CPU's int8 instructions (VNNI, AMX) and on XLA CPU's int8
GEMM; `make bench` measures it (`bench_low_precision`).

Example:
    >>> import numpy as np
    >>> from vit import ViTConfig, FlaxViTForImageClassification
    >>> from vit.flax.quantize import quantize
    >>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
    ...                    num_attention_heads=4, intermediate_size=64, num_labels=3)
    >>> model = FlaxViTForImageClassification(config)
    >>> int8 = quantize(model, mode="dynamic")
    >>> int8(np.zeros((2, 3, 32, 32), np.float32)).logits.shape
    (2, 3)
"""

from __future__ import annotations

import copy as copy_module
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..quantization import INT8_MAX, Int8Copy, fused_kernel, int8_class
from .modeling import Dense, FlaxViTPreTrainedModel, FlaxViTSelfAttention, _ConvProjection, _state_to_params

MODES = ("dynamic",)


class Int8Weight(nnx.Variable):
    """A quantised weight or its scales: a separate variable type, so that nothing treats it as a trainable Param."""


class Int8Dense(nnx.Module):
    """The int8 twin of `Dense`: y = (int8(x) @ int8 kernel) * scales + bias, int32 accumulation, float32 result.

    Made from a float32 `Dense` by `from_dense`; the kernel is quantised there, once.
    """

    def __init__(self, kernel: np.ndarray, scale: np.ndarray, bias: np.ndarray | None) -> None:
        self.kernel = Int8Weight(jnp.asarray(kernel, jnp.int8))
        self.scale = Int8Weight(jnp.asarray(scale, jnp.float32))
        self.bias = nnx.Param(jnp.asarray(bias, jnp.float32)) if bias is not None else None

    @classmethod
    def from_dense(cls, *denses: Dense | _ConvProjection) -> Int8Dense:
        """One int8 layer computing the given float layers' outputs side by side (a conv kernel (h, w, in, out)
        as the (h * w * in, out) matmul `_ConvProjection` runs)."""
        return cls(*fused_kernel([np.asarray(dense.kernel[...]) for dense in denses],
                                 [None if dense.bias is None else np.asarray(dense.bias[...]) for dense in denses]))

    def __call__(self, x: jax.Array) -> jax.Array:
        flat = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
        # One scale per row (token): see the module docstring for why not one per tensor.
        amax = jnp.abs(flat).max(axis=-1, keepdims=True)
        row_scale = jnp.where(amax > 0, amax / INT8_MAX, 1.0)
        rows = jnp.clip(jnp.round(flat / row_scale), -INT8_MAX, INT8_MAX).astype(jnp.int8)
        acc = jax.lax.dot_general(rows, self.kernel[...], (((1,), (0,)), ((), ())), preferred_element_type=jnp.int32)
        y = acc.astype(jnp.float32) * row_scale * self.scale[...]
        if self.bias is not None:
            y = y + self.bias[...]
        return y.reshape(*x.shape[:-1], y.shape[-1])


class Int8SelfAttention(FlaxViTSelfAttention):
    """The copy's attention: q, k and v from one `Int8Dense`, cast to `attention_dtype` for attention's products.

    Made from a float32 `FlaxViTSelfAttention` by `from_attention`; everything after the projections is inherited.
    """

    def __init__(self, qkv: Int8Dense, num_heads: int, head_dim: int, dropout_rate: float, attention_dtype: Any) -> None:
        self.qkv = qkv
        self.num_heads, self.head_dim, self.dropout_rate = num_heads, head_dim, dropout_rate
        self.attention_dtype = attention_dtype

    @classmethod
    def from_attention(cls, attention: FlaxViTSelfAttention, attention_dtype: Any) -> Int8SelfAttention:
        qkv = Int8Dense.from_dense(attention.query, attention.key, attention.value)
        return cls(qkv, attention.num_heads, attention.head_dim, attention.dropout_rate, attention_dtype)

    def project(self, hidden_states: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        batch, tokens = hidden_states.shape[:2]
        qkv = self.qkv(hidden_states).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.transpose(2, 0, 3, 1, 4).astype(self.attention_dtype)
        return q, k, v


class Int8Inference(Int8Copy):
    """Mixed into the int8 copy's class (see `quantize`): inference only, frozen, never saved."""

    quantize_module = __name__

    def _run(self, pixel_values, inputs: dict, *, params, train, **kwargs: Any):
        if train:
            raise ValueError("This int8 copy (vit.flax.quantize.quantize) is for inference only: call it without "
                             "train=True, or train the float32 model and quantize it again.")
        if params is not None:
            raise ValueError("This int8 copy runs on its own frozen int8 params and takes no params=; quantize a "
                             "float32 model holding those params instead.")
        return super()._run(pixel_values, inputs, params=None, train=False, **kwargs)

    def canonical_state_dict(self, params: dict | None = None) -> dict[str, np.ndarray]:
        raise self.not_saveable()


def _check_model(model: FlaxViTPreTrainedModel) -> None:
    if not isinstance(model, FlaxViTPreTrainedModel):
        raise TypeError(f"quantize() takes one of vit's Flax models (FlaxViTModel, FlaxViTForImageClassification, "
                        f"...), got {type(model).__name__}.")
    if isinstance(model, Int8Inference):
        raise ValueError("This model is already an int8 copy; quantize() the float32 model it was made from.")
    dtypes = {str(model.dtype), str(model.param_dtype)} | {str(leaf.dtype) for leaf in jax.tree_util.tree_leaves(model.params)}
    if dtypes != {"float32"}:
        raise ValueError(f"quantize() takes a float32 model; this one has {sorted(dtypes)} (dtype={model.dtype}, "
                         f"param_dtype={model.param_dtype}). Load it with dtype=\"float32\" (the default).")


def _swap(root: nnx.Module, kind: type, int8_twin) -> None:
    """Replace every module of exactly type `kind` under `root` by `int8_twin(module)`, in place."""
    found = [(path, node) for path, node in nnx.iter_graph(root) if type(node) is kind]
    for path, module in found:
        parent = root
        for key in path[:-1]:
            parent = parent[key] if isinstance(key, int) else getattr(parent, key)
        if isinstance(path[-1], int):
            parent[path[-1]] = int8_twin(module)
        else:
            setattr(parent, path[-1], int8_twin(module))


def quantize(model: FlaxViTPreTrainedModel, mode: str = "dynamic", attention_dtype: Any = None) -> FlaxViTPreTrainedModel:
    """An int8 copy of `model` for CPU inference (see the module docstring); `model` is unchanged.

    `attention_dtype`: None or float32 (the default), or bfloat16 (`jnp.bfloat16` or "bfloat16"), for attention's
    two products.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: quantize() for Flax offers {MODES} (static, calibrated activation scales "
                         "are PyTorch's: vit.pt.quantize).")
    wanted = None if attention_dtype is None else jnp.dtype(attention_dtype)
    if wanted not in (None, jnp.float32, jnp.bfloat16):
        raise ValueError(f"attention_dtype={attention_dtype!r}: the int8 copy runs attention in float32 (None) or "
                         "bfloat16 (jnp.bfloat16).")
    _check_model(model)
    # A fresh network from copies of the params: nothing in it is shared with the original's params tree.
    params = jax.tree_util.tree_map(lambda leaf: jnp.array(leaf, copy=True), model.params)
    network = model._network(params)
    backbone = network.vit if hasattr(network, "vit") else network
    # Attention first: its query, key and value become one Int8Dense, so the Dense swap leaves them alone.
    _swap(backbone.encoder, FlaxViTSelfAttention, lambda attention: Int8SelfAttention.from_attention(
        attention, wanted or jnp.float32))
    _swap(backbone.encoder, Dense, Int8Dense.from_dense)
    _swap(backbone.embeddings, _ConvProjection, Int8Dense.from_dense)
    # The copy's own config, also inside its network: later edits to the original's config do not reach the copy.
    config = copy_module.deepcopy(model.config)
    for _, node in nnx.iter_graph(network):
        if getattr(node, "config", None) is model.config:
            node.config = config
    graphdef, state = nnx.split(network)
    copy = object.__new__(int8_class(Int8Inference, type(model)))
    copy.__dict__.update(model.__dict__)
    copy.config = config
    copy._network_kwargs = dict(model._network_kwargs)
    copy._graphdef = graphdef
    copy._abstract_state = jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), state)
    copy.params = _state_to_params(nnx.to_pure_dict(state))
    copy.gradient_checkpointing = False
    copy._jitted = copy._compile()
    return copy
