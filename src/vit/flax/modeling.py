"""The Vision Transformer in JAX / Flax NNX, laid out like `src/vit/pt/modeling.py`.

The NNX modules carry HF Flax's attribute names, so their state is HF's Flax params tree
(`vit/encoder/layer/0/attention/attention/query/kernel`) and maps to canonical names through the one
parameter table. The public classes wrap the modules the way HF's Flax models do: `model.params` is a plain
nested dict, and `model(pixel_values, params=...)` runs a jit-compiled pure function, cached per input
shape and argument set, that also works inside the caller's `jax.jit`, `jax.grad` and `jax.vmap`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import outputs as _outputs
from ..config import ViTConfig, check_model_family
from ..errors import ConfigError
from ..inputs import check_head_mask, check_mask, check_mim_stride, check_pixel_values, resolve_problem_type
from ..outputs import (
    BaseModelOutputWithPooling,
    ImageClassifierOutput,
    ImageClassifierWithTeacherOutput,
    ImageEmbeddingsOutput,
    MaskedImageModelingOutput,
)
from ..params import classifier_width, flatten, from_layout, layout_name, nest, to_layout
from ..pretrained import PretrainedMixin, dtype_name, init_is_skipped
from ..resize import resize_matrix


def gelu_erf(x: jax.Array) -> jax.Array:
    """Exact GELU as PyTorch writes it, x/2 (1 + erf(x/sqrt 2)). jax.nn.gelu(approximate=False) uses erfc, which
    XLA CPU evaluates about 3x slower (measured: the MLP's GELU was ~10% of a training step)."""
    return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(1 / math.sqrt(2), x.dtype)))


ACTIVATIONS = {
    "gelu": gelu_erf,  # not jax.nn.gelu's default, which is the tanh approximation
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}

for _cls in (BaseModelOutputWithPooling, ImageClassifierOutput, MaskedImageModelingOutput, ImageEmbeddingsOutput,
             ImageClassifierWithTeacherOutput):
    # Outputs leave jit as pytrees; their fields are the children.
    jax.tree_util.register_pytree_node(
        _cls,
        lambda out: ([getattr(out, f.name) for f in dataclasses.fields(out)], None),
        lambda _, children, cls=_cls: cls(*children),
    )
assert _outputs  # the registration above is for these shared classes


def resize_positions(pos: jax.Array, old_grid: tuple[int, int], new_grid: tuple[int, int],
                     method: str = "bicubic") -> jax.Array:
    """Bicubic resize of a (1, H*W, D) grid with torch's numbers (`jax.image.resize` differs)."""
    mh = jnp.asarray(resize_matrix(old_grid[0], new_grid[0], method), dtype=pos.dtype)
    mw = jnp.asarray(resize_matrix(old_grid[1], new_grid[1], method), dtype=pos.dtype)
    grid = pos.reshape(old_grid[0], old_grid[1], -1)
    grid = jnp.einsum("ah,hwd->awd", mh, grid, precision="highest")
    grid = jnp.einsum("bw,awd->abd", mw, grid, precision="highest")
    return grid.reshape(1, new_grid[0] * new_grid[1], -1)


def dropout(x: jax.Array, rate: float, rngs: nnx.Rngs | None) -> jax.Array:
    """Inverted dropout; a no-op at inference (rngs is None) or when the rate is zero."""
    if rngs is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rngs.dropout(), 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


# ------------------------------------------------------------------------ primitives (torch has them built in)
def dot(equation: str, a: jax.Array, b: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """einsum(equation, a, b) (+ bias) accumulated in float32 and rounded once to a's dtype, as torch's bf16 matmul
    and addmm are. In float32 this is a plain einsum.

    Asking XLA for a float32 result is also what makes a bf16 product fast on the CPU: XLA CPU hands a
    bf16 x bf16 -> f32 dot to YNNPACK (AMX / AVX512-BF16), measured at 1.7 TFLOP/s against 0.26 for the same dot
    with a bf16 result, which it widens and runs as float32. Attention's batched products gain less: YNNPACK's rate
    for them depends on the operands' layout (80 to 280 GFLOP/s measured for q kᵀ at 197 tokens). In bf16 and fp16
    the backward pass is written by hand (`_reduced_dot`), so that training runs on those units too.
    """
    if a.dtype == jnp.float32:
        return _dot_definition(equation, a, b, bias)
    return _reduced_dot(_explicit(equation, a.ndim, b.ndim), a, b, bias)


def _dot_definition(equation: str, a: jax.Array, b: jax.Array, bias: jax.Array | None) -> jax.Array:
    product = jnp.einsum(equation, a, b, preferred_element_type=jnp.float32)
    if bias is not None:
        product = product + bias.astype(a.dtype).astype(jnp.float32)
    return product.astype(a.dtype)


def _explicit(equation: str, a_ndim: int, b_ndim: int) -> str:
    """The equation with its `...` spelled out as upper-case indices ('...qd,...kd->...qk' -> 'Aqd,Akd->Aqk')."""
    if "..." not in equation:
        return equation
    inputs, out = equation.split("->")
    lhs, rhs = inputs.split(",")
    leading = a_ndim - len(lhs.replace("...", ""))
    if leading != b_ndim - len(rhs.replace("...", "")):
        raise ValueError(f"dot({equation!r}) needs as many leading axes in both operands")
    letters = "ABCDEFGH"[:leading]
    return equation.replace("...", letters)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _reduced_dot(equation: str, a: jax.Array, b: jax.Array, bias: jax.Array | None) -> jax.Array:
    """`_dot_definition` for bf16 or fp16 operands, with a backward pass of fast products.

    Autodiff of the definition receives the output's cotangent widened to float32 (the transpose of the final
    rounding), so its backward products are float32 x bf16 dots, which XLA CPU runs at the float32 rate (measured
    0.25 TFLOP/s against 1.5 for bf16 x bf16 -> f32). That cotangent is a widened a.dtype value, so keeping it in
    a.dtype is exact. Here each gradient is then a reduced x reduced -> float32 product rounded once, the forward
    pass's rule, with operands laid out as the GEMM takes them (`_product`). The gradients equal autodiff's up to
    float32 summation order (tests/flax/test_flax_modeling.py). Like any custom VJP it has no forward-mode rule:
    `jax.jvp` of a bf16 model is an error; use float32 for it.
    """
    return _dot_definition(equation, a, b, bias)


def _reduced_dot_forward(equation, a, b, bias):
    return _dot_definition(equation, a, b, bias), (a, b, bias)


def _reduced_dot_backward(equation, residuals, grad):
    a, b, bias = residuals
    lhs, rhs, out = equation.replace("->", ",").split(",")
    grad_a = _product(grad, out, b, rhs, lhs).astype(a.dtype)
    grad_b = _product(a, lhs, grad, out, rhs).astype(b.dtype)
    grad_bias = None
    if bias is not None:  # on the last axis (Dense); autodiff's rounding: float32 sum, to a.dtype, to bias.dtype
        grad_bias = grad.astype(jnp.float32).reshape(-1, grad.shape[-1]).sum(0).astype(a.dtype).astype(bias.dtype)
    return grad_a, grad_b, grad_bias


_reduced_dot.defvjp(_reduced_dot_forward, _reduced_dot_backward)


def _product(x: jax.Array, x_axes: str, y: jax.Array, y_axes: str, out_axes: str) -> jax.Array:
    """einsum(x, y) -> out (float32) with the operands laid out the way XLA CPU's fast GEMM takes them.

    YNNPACK runs a dot fast when its left operand is (batch, free, contracted) and its right one (batch,
    contracted, free) or (batch, free, contracted). A weight gradient contracts over the tokens, which lead both
    operands; XLA hands that form to its slow float32 path (measured 0.24 against 1.3 TFLOP/s). So operands are
    copied into a fast layout, and of the two ways to pair them, the one that copies fewer elements wins
    (attention's key and value gradients copy two tokens x head_dim arrays rather than one tokens x tokens array).
    """
    sizes = dict(zip(x_axes + y_axes, x.shape + y.shape, strict=True))
    batch = "".join(i for i in out_axes if i in x_axes and i in y_axes)
    contracted = "".join(i for i in x_axes if i in y_axes and i not in out_axes)
    if set(x_axes + y_axes) - set(out_axes + contracted) or len(set(out_axes)) != len(out_axes):
        raise ValueError(f"_product cannot lay out {x_axes},{y_axes}->{out_axes}: every axis must be batch, "
                         f"contracted or kept once")

    def layouts(lhs_axes: str, rhs_axes: str) -> tuple[int, str, str, str]:
        """(elements copied, left layout, right layout, product layout) with lhs_axes' operand on the left."""
        lhs_free = "".join(i for i in lhs_axes if i not in batch + contracted)
        rhs_free = "".join(i for i in rhs_axes if i not in batch + contracted)
        left = batch + lhs_free + contracted
        right = rhs_axes if rhs_axes == batch + rhs_free + contracted else batch + contracted + rhs_free
        natural = batch + lhs_free + rhs_free
        copied = sum(math.prod(sizes[i] for i in axes) for axes, was in
                     ((left, lhs_axes), (right, rhs_axes), (natural, out_axes)) if axes != was)
        return copied, left, right, natural

    options = [(layouts(x_axes, y_axes), (x, x_axes), (y, y_axes)), (layouts(y_axes, x_axes), (y, y_axes), (x, x_axes))]
    (_, left, right, natural), (lhs, lhs_axes), (rhs, rhs_axes) = min(options, key=lambda option: option[0][0])
    product = jnp.einsum(f"{left},{right}->{natural}", _laid_out(lhs, lhs_axes, left),
                         _laid_out(rhs, rhs_axes, right), preferred_element_type=jnp.float32)
    return _laid_out(product, natural, out_axes)


def _laid_out(x: jax.Array, axes: str, order: str) -> jax.Array:
    """x with its axes physically in `order`. XLA would otherwise fold the transpose into the neighbouring dot, as an
    operand's or a result's dimension order, which is the slow form this avoids (with bf16 operands, one that XLA
    CPU cannot run at all: "Unsupported element type for DotThunk::Execute: BF16 x BF16 = F32")."""
    if axes == order:
        return x
    return _row_major(jnp.transpose(_row_major(x), [axes.index(i) for i in order]))


def _row_major(x: jax.Array) -> jax.Array:
    """x, kept in row-major layout: a flat view of it passes an optimization barrier."""
    return jax.lax.optimization_barrier(x.reshape(-1)).reshape(x.shape)


class Dense(nnx.Module):
    """y = x @ kernel + bias, kernel (in, out), computed in `dtype`."""

    def __init__(self, in_features: int, out_features: int, use_bias: bool = True, *, dtype: Any = None,
                 param_dtype: Any = jnp.float32) -> None:
        self.kernel = nnx.Param(jnp.zeros((in_features, out_features), param_dtype))
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype)) if use_bias else None
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = self.dtype or x.dtype
        # A 2-D matmul: XLA's CPU backward pass is about 25% faster than for a batched (..., in) x (in, out) one.
        flat = x.reshape(-1, x.shape[-1]).astype(dtype)
        y = dot("nd,do->no", flat, self.kernel[...].astype(dtype), None if self.bias is None else self.bias[...])
        return y.reshape(*x.shape[:-1], self.kernel.shape[-1])


class LayerNorm(nnx.Module):
    """LayerNorm over the last axis with the config's eps (Flax's default of 1e-6 is never used)."""

    def __init__(self, size: int, eps: float, *, dtype: Any = None, param_dtype: Any = jnp.float32) -> None:
        self.scale = nnx.Param(jnp.ones((size,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((size,), param_dtype))
        self.eps, self.dtype = eps, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = self.dtype or x.dtype
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        variance = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(variance + self.eps)
        return (y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(dtype)


# ------------------------------------------------------------------------------------------------ model
class FlaxViTPatchEmbeddings(nnx.Module):
    """Cuts the NCHW image into patches and projects each: one matmul, with the conv kernel in HWIO."""

    def __init__(self, config: ViTConfig, **kw: Any) -> None:
        self.patch_hw, self.num_channels = config.patch_hw, config.num_channels
        ph, pw = config.patch_hw
        self.projection = _ConvProjection(ph, pw, config.num_channels, config.hidden_size, config.patch_embedding_bias, **kw)

    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        (ph, pw), c = self.patch_hw, self.num_channels
        b, gh, gw = pixel_values.shape[0], pixel_values.shape[2] // ph, pixel_values.shape[3] // pw
        x = pixel_values[:, :, : gh * ph, : gw * pw].reshape(b, c, gh, ph, gw, pw)
        x = x.transpose(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, ph * pw * c)  # the kernel's (h, w, in) order
        return self.projection(x)


class _ConvProjection(nnx.Module):
    """The patch projection's kernel (ph, pw, C, D), applied to flattened patches as a matmul."""

    def __init__(self, ph: int, pw: int, channels: int, hidden: int, use_bias: bool = True, *, dtype: Any = None,
                 param_dtype: Any = jnp.float32) -> None:
        self.kernel = nnx.Param(jnp.zeros((ph, pw, channels, hidden), param_dtype))
        self.bias = nnx.Param(jnp.zeros((hidden,), param_dtype)) if use_bias else None
        self.dtype = dtype

    def __call__(self, patches: jax.Array) -> jax.Array:
        dtype = self.dtype or patches.dtype
        kernel = self.kernel[...].reshape(-1, self.kernel.shape[-1]).astype(dtype)
        projected = dot("nd,do->no", patches.reshape(-1, patches.shape[-1]).astype(dtype), kernel,
                        None if self.bias is None else self.bias[...])
        return projected.reshape(*patches.shape[:-1], kernel.shape[-1])


class FlaxViTEmbeddings(nnx.Module):
    """Patch embeddings, the optional mask token, the prefix tokens and the position embeddings.

    The sequence is [class, distillation, registers, patches]. Position embeddings cover the class and
    distillation tokens (not with `no_embed_class`) and the patches, never the registers (DINOv2's layout).
    """

    def __init__(self, config: ViTConfig, use_mask_token: bool = False, **kw: Any) -> None:
        self.config = config
        d, param_dtype = config.hidden_size, kw.get("param_dtype", jnp.float32)

        def token(count: int, wanted: bool) -> nnx.Param | None:
            return nnx.Param(jnp.zeros((1, count, d), param_dtype)) if wanted else None

        self.cls_token = token(1, config.class_token)
        self.distillation_token = token(1, config.distillation_token)
        self.register_tokens = token(config.num_register_tokens, config.num_register_tokens > 0)
        self.mask_token = token(1, use_mask_token)
        self.patch_embeddings = FlaxViTPatchEmbeddings(config, **kw)
        self.position_embeddings = nnx.Param(jnp.zeros((1, config.num_positions, d), param_dtype))
        self.dropout_rate = config.hidden_dropout_prob

    def interpolate_pos_encoding(self, grid: tuple[int, int]) -> jax.Array:
        """Position embeddings for a patch grid, resized (HF PyTorch's numbers) when needed."""
        pos = self.position_embeddings[...]
        if grid == self.config.grid_hw:
            return pos
        prefix = self.config.num_position_prefix_tokens
        patches = resize_positions(pos[:, prefix:], self.config.grid_hw, grid, self.config.position_interpolation)
        return jnp.concatenate([pos[:, :prefix], patches], axis=1)

    def __call__(self, pixel_values: jax.Array, grid: tuple[int, int], bool_masked_pos: jax.Array | None = None,
                 rngs: nnx.Rngs | None = None) -> jax.Array:
        embeddings = self.patch_embeddings(pixel_values)
        if bool_masked_pos is not None:
            mask = bool_masked_pos.astype(embeddings.dtype)[:, :, None]
            embeddings = embeddings * (1.0 - mask) + self.mask_token[...].astype(embeddings.dtype) * mask
        batch, d = embeddings.shape[0], embeddings.shape[2]

        def expand(token: nnx.Param) -> jax.Array:
            return jnp.broadcast_to(token[...].astype(embeddings.dtype), (batch, token.shape[1], d))

        tokens = [expand(t) for t in (self.cls_token, self.distillation_token) if t is not None]
        positions = self.interpolate_pos_encoding(grid).astype(embeddings.dtype)
        if self.config.no_embed_class:
            embeddings = jnp.concatenate([*tokens, embeddings + positions], axis=1)
        else:
            embeddings = jnp.concatenate([*tokens, embeddings], axis=1) + positions
        if self.register_tokens is not None:
            # Registers go after the class and distillation tokens, without position embeddings.
            split = len(tokens)
            embeddings = jnp.concatenate([embeddings[:, :split], expand(self.register_tokens), embeddings[:, split:]],
                                         axis=1)
        return dropout(embeddings, self.dropout_rate, rngs)


def attention_probs(q: jax.Array, k: jax.Array) -> jax.Array:
    """softmax(q kᵀ / sqrt(head_dim)) over (..., tokens, head_dim) inputs, the softmax in float32."""
    scores = dot("...qd,...kd->...qk", q, k) / jnp.asarray(math.sqrt(q.shape[-1]), q.dtype)
    return jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(q.dtype)


# XLA CPU runs a matmul batched over (image, head) well below its 2-D GEMM rate once the N x N scores outgrow the
# caches. A loop of one 2-D attention per (image, head) keeps each score matrix hot: measured at 1370 tokens (518 px,
# patch 14) 2.6x faster forward and 1.35x forward+backward; at 197 tokens no faster. Same numbers to round-off.
HEAD_LOOP_MIN_TOKENS = 384
_HEAD_LOOP_ALLOWED = contextvars.ContextVar("head_loop_allowed", default=True)


@contextlib.contextmanager
def batched_attention() -> Iterator[None]:
    """Trace attention as one batched matmul at every length: modules for other devices (StableHLO exports), since
    the loop is a speed-up for the CPU only and the module would keep it wherever it runs."""
    token = _HEAD_LOOP_ALLOWED.set(False)
    try:
        yield
    finally:
        _HEAD_LOOP_ALLOWED.reset(token)


def attention_per_head(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """softmax(q kᵀ / sqrt(d)) v for (batch, heads, tokens, d) inputs, one (image, head) at a time."""
    b, h, n, d = q.shape
    flat = [x.reshape(b * h, x.shape[2], d) for x in (q, k, v)]
    context = jax.lax.map(lambda qkv: dot("qk,kd->qd", attention_probs(qkv[0], qkv[1]), qkv[2]), flat)
    return context.reshape(b, h, n, d)


class FlaxViTSelfAttention(nnx.Module):
    """Multi-head scaled dot-product attention."""

    def __init__(self, config: ViTConfig, **kw: Any) -> None:
        d = config.hidden_size
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.query = Dense(d, d, config.qkv_bias, **kw)
        self.key = Dense(d, d, config.qkv_bias, **kw)
        self.value = Dense(d, d, config.qkv_bias, **kw)
        self.dropout_rate = config.attention_probs_dropout_prob

    def split_heads(self, x: jax.Array) -> jax.Array:
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(0, 2, 1, 3)

    def project(self, hidden_states: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Query, key and value, each (batch, heads, tokens, head_dim). vit.flax.quantize's int8 copy overrides it."""
        return tuple(self.split_heads(layer(hidden_states)) for layer in (self.query, self.key, self.value))

    def __call__(self, hidden_states: jax.Array, head_mask: jax.Array | None = None, output_attentions: bool = False,
                 rngs: nnx.Rngs | None = None) -> tuple[jax.Array, jax.Array | None]:
        q, k, v = self.project(hidden_states)
        # XLA CPU would fold the head split's transpose into the products and widen their bf16 operands to float32,
        # running q kᵀ and probs v at the float32 rate: row-major q, k and v keep them bf16 x bf16 -> f32, and a
        # row-major context does the same for its gradient's products (tests/flax/test_flax_modeling.py).
        keep_layout = q.dtype != jnp.float32
        if keep_layout:
            q, k, v = (_row_major(x) for x in (q, k, v))
        plain = head_mask is None and not output_attentions and (rngs is None or not self.dropout_rate)
        long = q.shape[2] >= HEAD_LOOP_MIN_TOKENS
        if plain and long and _HEAD_LOOP_ALLOWED.get() and jax.default_backend() == "cpu":
            context = attention_per_head(q, k, v).transpose(0, 2, 1, 3).astype(hidden_states.dtype)
            return context.reshape(context.shape[0], context.shape[1], self.num_heads * self.head_dim), None
        probs = attention_probs(q, k)
        dropped = dropout(probs, self.dropout_rate, rngs)
        if head_mask is not None:
            dropped = dropped * head_mask.astype(dropped.dtype)
        context = dot("...qk,...kd->...qd", dropped, v)
        context = (_row_major(context) if keep_layout else context).transpose(0, 2, 1, 3).astype(hidden_states.dtype)
        context = context.reshape(context.shape[0], context.shape[1], self.num_heads * self.head_dim)
        return context, probs if output_attentions else None


class FlaxViTSelfOutput(nnx.Module):
    """The attention's output projection; the residual is added in FlaxViTLayer."""

    def __init__(self, config: ViTConfig, **kw: Any) -> None:
        self.dense = Dense(config.hidden_size, config.hidden_size, **kw)
        self.dropout_rate = config.hidden_dropout_prob

    def __call__(self, hidden_states: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
        return dropout(self.dense(hidden_states), self.dropout_rate, rngs)


class FlaxViTAttention(nnx.Module):
    """Self-attention followed by its output projection."""

    def __init__(self, config: ViTConfig, **kw: Any) -> None:
        self.attention = FlaxViTSelfAttention(config, **kw)
        self.output = FlaxViTSelfOutput(config, **kw)

    def __call__(self, hidden_states: jax.Array, head_mask: jax.Array | None = None, output_attentions: bool = False,
                 rngs: nnx.Rngs | None = None) -> tuple[jax.Array, jax.Array | None]:
        context, probs = self.attention(hidden_states, head_mask, output_attentions, rngs)
        return self.output(context, rngs), probs


class FlaxViTIntermediate(nnx.Module):
    """The MLP's expansion and activation."""

    def __init__(self, config: ViTConfig, **kw: Any) -> None:
        self.dense = Dense(config.hidden_size, config.intermediate_size, **kw)
        self.activation = ACTIVATIONS[config.hidden_act]

    def __call__(self, hidden_states: jax.Array) -> jax.Array:
        return self.activation(self.dense(hidden_states))


class FlaxViTOutput(nnx.Module):
    """The MLP's projection back to hidden_size, plus the residual."""

    def __init__(self, config: ViTConfig, **kw: Any) -> None:
        self.dense = Dense(config.intermediate_size, config.hidden_size, **kw)
        self.dropout_rate = config.hidden_dropout_prob

    def __call__(self, hidden_states: jax.Array, residual: jax.Array | None, rngs: nnx.Rngs | None = None) -> jax.Array:
        out = dropout(self.dense(hidden_states), self.dropout_rate, rngs)
        return out if residual is None else out + residual


class FlaxViTSwiGLU(nnx.Module):
    """SwiGLU MLP (DINOv2-g): silu(gate) * value from one fused projection, then back to hidden_size."""

    def __init__(self, config: ViTConfig, **kw: Any) -> None:
        self.weights_in = Dense(config.hidden_size, 2 * config.intermediate_size, **kw)
        self.weights_out = Dense(config.intermediate_size, config.hidden_size, **kw)
        self.dropout_rate = config.hidden_dropout_prob

    def __call__(self, hidden_states: jax.Array, residual: jax.Array | None, rngs: nnx.Rngs | None = None) -> jax.Array:
        gate, value = jnp.split(self.weights_in(hidden_states), 2, axis=-1)
        out = dropout(self.weights_out(jax.nn.silu(gate) * value), self.dropout_rate, rngs)
        return out if residual is None else out + residual


class FlaxViTLayerScale(nnx.Module):
    """LayerScale (CaiT, DINOv2): a learned per-channel factor on a residual branch."""

    def __init__(self, config: ViTConfig, *, dtype: Any = None, param_dtype: Any = jnp.float32) -> None:
        self.lambda1 = nnx.Param(jnp.ones((config.hidden_size,), param_dtype))

    def __call__(self, hidden_states: jax.Array) -> jax.Array:
        return hidden_states * self.lambda1[...].astype(hidden_states.dtype)


class FlaxViTLayer(nnx.Module):
    """One pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)); LayerScale on each branch if set."""

    def __init__(self, config: ViTConfig, **kw: Any) -> None:
        self.attention = FlaxViTAttention(config, **kw)
        self.use_swiglu = config.use_swiglu_ffn
        if config.use_swiglu_ffn:
            self.mlp = FlaxViTSwiGLU(config, **kw)
        else:
            self.intermediate = FlaxViTIntermediate(config, **kw)
            self.output = FlaxViTOutput(config, **kw)
        self.layernorm_before = LayerNorm(config.hidden_size, config.layer_norm_eps, **kw)
        self.layernorm_after = LayerNorm(config.hidden_size, config.layer_norm_eps, **kw)
        use_scale = config.layer_scale_init_value is not None
        self.layer_scale1 = FlaxViTLayerScale(config, **kw) if use_scale else None
        self.layer_scale2 = FlaxViTLayerScale(config, **kw) if use_scale else None

    def feed_forward(self, hidden_states: jax.Array, residual: jax.Array | None, rngs: nnx.Rngs | None) -> jax.Array:
        """The MLP (or SwiGLU) branch, plus the residual when one is given."""
        if self.use_swiglu:
            return self.mlp(hidden_states, residual, rngs)
        return self.output(self.intermediate(hidden_states), residual, rngs)

    def __call__(self, hidden_states: jax.Array, head_mask: jax.Array | None = None, output_attentions: bool = False,
                 rngs: nnx.Rngs | None = None) -> tuple[jax.Array, jax.Array | None]:
        attended, probs = self.attention(self.layernorm_before(hidden_states), head_mask, output_attentions, rngs)
        if self.layer_scale1 is None:
            hidden_states = attended + hidden_states
            return self.feed_forward(self.layernorm_after(hidden_states), hidden_states, rngs), probs
        hidden_states = self.layer_scale1(attended) + hidden_states
        branch = self.feed_forward(self.layernorm_after(hidden_states), None, rngs)
        return self.layer_scale2(branch) + hidden_states, probs


class FlaxViTEncoder(nnx.Module):
    """The stack of blocks; collects hidden states and attention maps on request."""

    def __init__(self, config: ViTConfig, **kw: Any) -> None:
        self.layer = nnx.List([FlaxViTLayer(config, **kw) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def __call__(self, hidden_states: jax.Array, head_mask: jax.Array | None = None, output_attentions: bool = False,
                 output_hidden_states: bool = False, rngs: nnx.Rngs | None = None):
        all_hidden = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for i, layer in enumerate(self.layer):
            layer_mask = head_mask[i] if head_mask is not None else None
            if self.gradient_checkpointing:
                # Recompute the block's activations in the backward pass instead of storing them.
                run = nnx.remat(lambda module, h, m, r: module(h, m, output_attentions, r))
                hidden_states, probs = run(layer, hidden_states, layer_mask, rngs)
            else:
                hidden_states, probs = layer(hidden_states, layer_mask, output_attentions, rngs)
            if output_hidden_states:
                all_hidden.append(hidden_states)
            if output_attentions:
                all_attentions.append(probs)
        return hidden_states, all_hidden, all_attentions


class FlaxViTPooler(nnx.Module):
    """Dense + activation on the pooled token (HF's pooler; the original code's pre-logits)."""

    def __init__(self, config: ViTConfig, **kw: Any) -> None:
        self.dense = Dense(config.hidden_size, config.pooler_output_size, **kw)
        self.activation = ACTIVATIONS[config.pooler_act]

    def __call__(self, pooled: jax.Array) -> jax.Array:
        return self.activation(self.dense(pooled))


class _Projections(nnx.Module):
    """A named group of Dense layers (the MAP head's `attention` and `mlp`), so their paths are HF-like."""

    def __init__(self, shapes: dict[str, tuple[int, int]], **kw: Any) -> None:
        for name, (n_in, n_out) in shapes.items():
            setattr(self, name, Dense(n_in, n_out, **kw))


class FlaxViTAttentionPoolingHead(nnx.Module):
    """Attention pooling (MAP, SigLIP's head): a learned probe attends to the tokens, then a residual MLP."""

    def __init__(self, config: ViTConfig, **kw: Any) -> None:
        d, mlp = config.hidden_size, config.intermediate_size
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.probe = nnx.Param(jnp.zeros((1, 1, d), kw.get("param_dtype", jnp.float32)))
        self.attention = _Projections({"query": (d, d), "key": (d, d), "value": (d, d), "out_proj": (d, d)}, **kw)
        self.layernorm = LayerNorm(d, config.layer_norm_eps, **kw)
        self.mlp = _Projections({"fc1": (d, mlp), "fc2": (mlp, d)}, **kw)
        self.activation = ACTIVATIONS[config.hidden_act]

    def __call__(self, sequence: jax.Array) -> jax.Array:
        def heads(x: jax.Array) -> jax.Array:
            return x.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(0, 2, 1, 3)

        probe = jnp.broadcast_to(self.probe[...].astype(sequence.dtype), (sequence.shape[0], 1, sequence.shape[2]))
        q = heads(self.attention.query(probe))
        k, v = heads(self.attention.key(sequence)), heads(self.attention.value(sequence))
        context = dot("...qk,...kd->...qd", attention_probs(q, k), v).transpose(0, 2, 1, 3)
        pooled = self.attention.out_proj(context.reshape(context.shape[0], context.shape[1], -1))
        pooled = pooled + self.mlp.fc2(self.activation(self.mlp.fc1(self.layernorm(pooled))))
        return pooled[:, 0]


class PixelShuffle(nnx.Module):
    """Depth to space with a (rows, cols) factor, in torch's NCHW channel order."""

    def __init__(self, factor: tuple[int, int]) -> None:
        self.factor = factor

    def __call__(self, x: jax.Array) -> jax.Array:
        (sh, sw), (b, c, h, w) = self.factor, x.shape
        x = x.reshape(b, c // (sh * sw), sh, sw, h, w).transpose(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c // (sh * sw), h * sh, w * sw)


class _Conv1x1NCHW(nnx.Module):
    """A 1x1 convolution on NCHW maps (kernel (1, 1, in, out), as Flax stores convolutions)."""

    def __init__(self, in_channels: int, out_channels: int, *, dtype: Any = None, param_dtype: Any = jnp.float32) -> None:
        self.kernel = nnx.Param(jnp.zeros((1, 1, in_channels, out_channels), param_dtype))
        self.bias = nnx.Param(jnp.zeros((out_channels,), param_dtype))
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = self.dtype or x.dtype
        y = jnp.einsum("bchw,co->bohw", x.astype(dtype), self.kernel[...][0, 0].astype(dtype))
        return y + self.bias[...].astype(dtype)[None, :, None, None]


# ------------------------------------------------------------------------------------ public classes
# Each public class wraps an NNX network (defined right above it) as HF's Flax models do: plain params, a jitted call.
def _params_to_state(params: dict) -> dict:
    """HF's params tree has string keys ("0") where NNX lists have int keys (0)."""
    return {int(k) if isinstance(k, str) and k.isdigit() else k: _params_to_state(v) if isinstance(v, dict) else v
            for k, v in params.items()}


def _state_to_params(state: dict) -> dict:
    return {str(k): _state_to_params(v) if isinstance(v, dict) else v for k, v in state.items()}


class FlaxViTPreTrainedModel(PretrainedMixin):
    """Shared by the Flax models: `params`, the cached jit-compiled call, checkpoint I/O and input checks.

    `dtype` is the compute dtype (e.g. `jnp.bfloat16`); `param_dtype` the dtype params are stored in.
    """

    config_class = ViTConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    network_class: type[nnx.Module]

    def __init__(self, config: ViTConfig, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 seed: int = 0, **network_kwargs: Any) -> None:
        if not isinstance(config, ViTConfig):
            raise TypeError(f"config must be a ViTConfig, got {type(config).__name__}")
        check_model_family(type(self), config)
        # Any framework's spelling ("bfloat16", jnp.bfloat16, tf.bfloat16) becomes a jnp dtype.
        dtype, param_dtype = jnp.dtype(dtype_name(dtype)), jnp.dtype(dtype_name(param_dtype))
        self.config, self.dtype, self.param_dtype = config, dtype, param_dtype
        self._network_kwargs = network_kwargs
        abstract = nnx.eval_shape(lambda: self.network_class(config, **network_kwargs, dtype=dtype, param_dtype=param_dtype))
        self._graphdef, abstract_state = nnx.split(abstract)
        self._abstract_state = abstract_state
        self.params = jax.tree_util.tree_map(
            lambda x: jnp.zeros(x.shape, x.dtype), _state_to_params(nnx.to_pure_dict(abstract_state))
        )
        self.gradient_checkpointing = False
        self._jitted = self._compile()
        if not init_is_skipped():
            self.init_weights(seed)

    # -- the pure function behind __call__
    # `head_loop` is read (from the context) at trace time, so it keys the cache: a function traced inside
    # batched_attention() is never reused outside it, nor the other way round.
    _STATIC = ("grid", "output_attentions", "output_hidden_states", "train", "head_loop")

    def _compile(self):
        return jax.jit(self._apply, static_argnames=self._STATIC)

    def _network(self, params: dict, train: bool = False) -> nnx.Module:
        state = jax.tree_util.tree_map(lambda leaf: leaf, self._abstract_state)  # a copy: the original stays abstract
        nnx.replace_by_pure_dict(state, _params_to_state(params))
        network = nnx.merge(self._graphdef, state)
        encoder = network.vit.encoder if hasattr(network, "vit") else network.encoder
        # The rule in every framework: recompute the blocks in the backward pass when enabled and training.
        encoder.gradient_checkpointing = self.gradient_checkpointing and train
        return network

    def _apply(self, params: dict, pixel_values: jax.Array, inputs: dict, dropout_rng, *, grid: tuple[int, int],
               output_attentions: bool, output_hidden_states: bool, train: bool, head_loop: bool):
        rngs = nnx.Rngs(dropout=dropout_rng) if train and dropout_rng is not None else None
        return self._network(params, train)(pixel_values, grid, **inputs, output_attentions=output_attentions,
                                             output_hidden_states=output_hidden_states, rngs=rngs)

    def _check_inputs(self, pixel_values, bool_masked_pos, head_mask, interpolate_pos_encoding) -> tuple:
        """Validate the inputs and cast pixel_values to the compute dtype (the one place that casts).

        Returns (pixel_values, grid, bool_masked_pos, head_mask), as in the PyTorch and TF twins.
        """
        pixel_values = jnp.asarray(pixel_values) if not isinstance(pixel_values, jax.Array) else pixel_values
        interpolate = bool(interpolate_pos_encoding) or self.config.always_interpolate_pos_encoding
        grid = check_pixel_values(tuple(pixel_values.shape), self.config, interpolate)
        if not jnp.issubdtype(pixel_values.dtype, jnp.floating):
            raise ValueError(f"pixel_values must be floating point, got {pixel_values.dtype}; use ViTImageProcessor.")
        # Only concrete inputs can be checked (under the caller's jit the values are not known yet), and only on
        # the CPU: on an accelerator the check would force a device-to-host copy on every call.
        concrete = not isinstance(pixel_values, jax.core.Tracer)
        if concrete and {d.platform for d in pixel_values.devices()} == {"cpu"} and not np.isfinite(np.asarray(pixel_values)).all():
            raise ValueError("pixel_values holds NaN or infinite values.")
        if bool_masked_pos is not None:
            bool_masked_pos = jnp.asarray(bool_masked_pos)
            check_mask(tuple(bool_masked_pos.shape), pixel_values.shape[0], grid[0] * grid[1])
        if head_mask is not None:
            head_mask = jnp.asarray(head_mask)
            check_head_mask(tuple(head_mask.shape), self.config)
            if head_mask.ndim == 1:
                head_mask = jnp.broadcast_to(head_mask, (self.config.num_hidden_layers, head_mask.shape[0]))
            head_mask = head_mask[:, None, :, None, None]
        return pixel_values.astype(self.dtype), grid, bool_masked_pos, head_mask

    def _run(self, pixel_values, inputs: dict, *, grid, params, dropout_rng, train, output_attentions,
             output_hidden_states, return_dict):
        if train and dropout_rng is None and (self.config.hidden_dropout_prob or self.config.attention_probs_dropout_prob):
            raise ValueError("train=True with dropout needs dropout_rng=jax.random.key(...).")
        output_attentions, output_hidden_states, return_dict = self._output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        output = self._jitted(self.params if params is None else params, pixel_values, inputs, dropout_rng, grid=grid,
                              output_attentions=bool(output_attentions),
                              output_hidden_states=bool(output_hidden_states), train=bool(train),
                              head_loop=_HEAD_LOOP_ALLOWED.get())
        return output if return_dict else output.to_tuple()

    # -- PretrainedMixin
    def canonical_state_dict(self, params: dict | None = None) -> dict[str, np.ndarray]:
        """The canonical state of `params` (default: the model's own)."""
        params = self.params if params is None else params
        if set(params) == {"params"}:  # a linen-style {"params": ...} collection
            params = params["params"]
        flat = flatten(dict(params))
        out = {}
        for name, spec in self.parameter_specs().items():
            array = np.asarray(flat[layout_name(spec, "flax")], dtype=np.float32)
            out[name] = from_layout(array, spec.kind, spec.leaf, "flax")
        return out

    def load_canonical_state_dict(self, state: dict[str, np.ndarray]) -> None:
        specs = self.parameter_specs()
        flat = flatten(self.params)
        for name, array in state.items():
            spec = specs[name]
            flat[layout_name(spec, "flax")] = jnp.asarray(to_layout(np.asarray(array), spec.kind, spec.leaf, "flax"),
                                                          dtype=self.param_dtype)
        self.params = nest(flat)

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each block in the backward pass (`nnx.remat`) to save memory."""
        self.gradient_checkpointing = True
        self._jitted = self._compile()

    def gradient_checkpointing_disable(self) -> None:
        self.gradient_checkpointing = False
        self._jitted = self._compile()

    def _state_to_save(self, kwargs: dict) -> dict[str, np.ndarray]:
        """HF Flax's `save_pretrained(out, params=state.params)` saves those params, e.g. a train state's."""
        return self.canonical_state_dict(kwargs.pop("params", None))


class _ViTNetwork(nnx.Module):
    """ViTModel's network: embeddings -> encoder -> norm -> pool -> pooler."""

    def __init__(self, config: ViTConfig, add_pooling_layer: bool, use_mask_token: bool, **kw: Any) -> None:
        self.config = config
        self.embeddings = FlaxViTEmbeddings(config, use_mask_token, **kw)
        # CLIP norms the embeddings before the blocks.
        self.pre_layernorm = LayerNorm(config.hidden_size, config.layer_norm_eps, **kw) if config.pre_layernorm else None
        self.encoder = FlaxViTEncoder(config, **kw)
        self.layernorm = LayerNorm(config.hidden_size, config.layer_norm_eps, **kw) if not config.use_fc_norm else None
        self.fc_norm = LayerNorm(config.hidden_size, config.layer_norm_eps, **kw) if config.use_fc_norm else None
        self.map_head = FlaxViTAttentionPoolingHead(config, **kw) if config.pooling == "map" else None
        self.pooler = FlaxViTPooler(config, **kw) if add_pooling_layer and config.pooler_dense else None
        self.add_pooling_layer = add_pooling_layer

    def pool(self, sequence: jax.Array) -> jax.Array:
        """The class token, the mean of the patch tokens or the attention pool; then fc_norm (timm, CLIP)."""
        if self.config.pooling == "cls":
            pooled = sequence[:, 0]
        elif self.config.pooling == "map":
            pooled = self.map_head(sequence)
        else:
            pooled = sequence[:, self.config.num_prefix_tokens:].mean(axis=1)
        return self.fc_norm(pooled) if self.fc_norm is not None else pooled

    def __call__(self, pixel_values, grid, bool_masked_pos=None, head_mask=None, output_attentions=False,
                 output_hidden_states=False, rngs=None) -> BaseModelOutputWithPooling:
        embedded = self.embeddings(pixel_values, grid, bool_masked_pos, rngs)
        if self.pre_layernorm is not None:
            embedded = self.pre_layernorm(embedded)
        sequence, hidden_states, attentions = self.encoder(embedded, head_mask, output_attentions, output_hidden_states, rngs)
        if self.layernorm is not None:
            sequence = self.layernorm(sequence)
        if self.pooler is not None:
            pooled = self.pooler(self.pool(sequence))
        else:  # DINOv2, CLIP, SigLIP: the pooled token itself is the pooler output
            pooled = self.pool(sequence) if self.add_pooling_layer and not self.config.pooler_dense else None
        return BaseModelOutputWithPooling(
            last_hidden_state=sequence,
            pooler_output=pooled,
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
        )


class FlaxViTModel(FlaxViTPreTrainedModel):
    """The bare ViT encoder in JAX: `last_hidden_state` and, with the pooling layer, `pooler_output`.

    Example:
        >>> import numpy as np
        >>> from vit import ViTConfig, FlaxViTModel
        >>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
        ...                    num_attention_heads=4, intermediate_size=64)
        >>> model = FlaxViTModel(config)
        >>> model(np.zeros((1, 3, 32, 32), np.float32)).last_hidden_state.shape
        (1, 17, 32)
    """

    head = "base"
    hf_architecture = "ViTModel"
    network_class = _ViTNetwork

    def __init__(self, config: ViTConfig, add_pooling_layer: bool = True, use_mask_token: bool = False,
                 dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, seed: int = 0) -> None:
        self.add_pooling_layer, self.use_mask_token = add_pooling_layer, use_mask_token
        super().__init__(config, dtype, param_dtype, seed, add_pooling_layer=add_pooling_layer, use_mask_token=use_mask_token)

    def forward_features(self, pixel_values, bool_masked_pos=None, interpolate_pos_encoding: bool = False,
                         params: dict | None = None) -> jax.Array:
        """The normalised token sequence (batch, tokens, hidden)."""
        return self(pixel_values, bool_masked_pos, interpolate_pos_encoding=interpolate_pos_encoding,
                    params=params).last_hidden_state

    def pool(self, sequence: jax.Array, params: dict | None = None) -> jax.Array:
        """The class token, or the mean of the patch tokens (then fc_norm, as timm does)."""
        return self._network(self.params if params is None else params).pool(sequence)

    def __call__(self, pixel_values, bool_masked_pos=None, head_mask=None, output_attentions: bool | None = None,
                 output_hidden_states: bool | None = None, interpolate_pos_encoding: bool | None = None,
                 return_dict: bool | None = None, params: dict | None = None, dropout_rng=None, train: bool = False):
        pixel_values, grid, bool_masked_pos, head_mask = self._check_inputs(pixel_values, bool_masked_pos, head_mask,
                                                                            interpolate_pos_encoding)
        if bool_masked_pos is not None and not self.use_mask_token:
            raise ValueError("bool_masked_pos needs a mask token; build the model with use_mask_token=True.")
        return self._run(pixel_values, {"bool_masked_pos": bool_masked_pos, "head_mask": head_mask}, grid=grid,
                         params=params, dropout_rng=dropout_rng, train=train, output_attentions=output_attentions,
                         output_hidden_states=output_hidden_states, return_dict=return_dict)


class _MaskedImageModelingNetwork(nnx.Module):
    """FlaxViTForMaskedImageModeling's network: the encoder, then a 1x1 conv and a pixel shuffle."""

    def __init__(self, config: ViTConfig, **kw: Any) -> None:
        self.config = config
        self.vit = _ViTNetwork(config, add_pooling_layer=False, use_mask_token=True, **kw)
        sh, sw = config.stride_hw
        self.decoder = nnx.List([_Conv1x1NCHW(config.hidden_size, sh * sw * config.num_channels, **kw), PixelShuffle((sh, sw))])

    def __call__(self, pixel_values, grid, bool_masked_pos=None, head_mask=None, output_attentions=False,
                 output_hidden_states=False, rngs=None) -> MaskedImageModelingOutput:
        outputs = self.vit(pixel_values, grid, bool_masked_pos, head_mask, output_attentions, output_hidden_states, rngs)
        patches = outputs.last_hidden_state[:, self.config.num_prefix_tokens:]
        feature_map = patches.transpose(0, 2, 1).reshape(patches.shape[0], -1, *grid)
        reconstruction = self.decoder[1](self.decoder[0](feature_map))
        loss = None
        if bool_masked_pos is not None:
            (ph, pw) = self.config.patch_hw
            mask = bool_masked_pos.reshape(-1, *grid).astype(reconstruction.dtype)
            mask = jnp.repeat(jnp.repeat(mask, ph, axis=1), pw, axis=2)[:, None]
            target = pixel_values[:, :, : grid[0] * ph, : grid[1] * pw].astype(reconstruction.dtype)
            l1 = jnp.abs(target - reconstruction)
            loss = (l1 * mask).sum() / (mask.sum() + 1e-5) / self.config.num_channels
        return MaskedImageModelingOutput(loss, reconstruction, outputs.hidden_states, outputs.attentions)


class FlaxViTForMaskedImageModeling(FlaxViTPreTrainedModel):
    """ViT with SimMIM's decoder in JAX (HF has none in Flax): reconstructs the pixels of masked patches.

    Example:
        >>> import numpy as np
        >>> from vit import ViTConfig, FlaxViTForMaskedImageModeling
        >>> config = ViTConfig(image_size=32, patch_size=8, encoder_stride=8, hidden_size=32,
        ...                    num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
        >>> model = FlaxViTForMaskedImageModeling(config)
        >>> mask = np.zeros((1, 16), bool); mask[:, ::2] = True
        >>> model(np.zeros((1, 3, 32, 32), np.float32), bool_masked_pos=mask).reconstruction.shape
        (1, 3, 32, 32)
    """

    head = "mim"
    hf_architecture = "ViTForMaskedImageModeling"
    network_class = _MaskedImageModelingNetwork

    def __init__(self, config: ViTConfig, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, seed: int = 0) -> None:
        super().__init__(config, dtype, param_dtype, seed)

    def __call__(self, pixel_values, bool_masked_pos=None, head_mask=None, output_attentions: bool | None = None,
                 output_hidden_states: bool | None = None, interpolate_pos_encoding: bool | None = None,
                 return_dict: bool | None = None, params: dict | None = None, dropout_rng=None, train: bool = False):
        if bool_masked_pos is not None:
            check_mim_stride(self.config)
        pixel_values, grid, bool_masked_pos, head_mask = self._check_inputs(pixel_values, bool_masked_pos, head_mask,
                                                                            interpolate_pos_encoding)
        return self._run(pixel_values, {"bool_masked_pos": bool_masked_pos, "head_mask": head_mask}, grid=grid,
                         params=params, dropout_rng=dropout_rng, train=train, output_attentions=output_attentions,
                         output_hidden_states=output_hidden_states, return_dict=return_dict)


class _ImageClassificationNetwork(nnx.Module):
    """FlaxViTForImageClassification's network: the encoder, pool, then the classifier."""

    def __init__(self, config: ViTConfig, **kw: Any) -> None:
        self.config = config
        self.vit = _ViTNetwork(config, add_pooling_layer=config.classifier_input == "pooler", use_mask_token=False, **kw)
        self.classifier = Dense(classifier_width(config), config.num_labels, **kw) if config.num_labels > 0 else None

    def __call__(self, pixel_values, grid, labels=None, head_mask=None, output_attentions=False,
                 output_hidden_states=False, rngs=None) -> ImageClassifierOutput:
        outputs = self.vit(pixel_values, grid, None, head_mask, output_attentions, output_hidden_states, rngs)
        if self.config.classifier_input == "pooler":
            features = outputs.pooler_output
        elif self.config.classifier_input == "cls_and_mean":  # DINOv2: class token and mean of the patch tokens
            sequence = outputs.last_hidden_state
            features = jnp.concatenate([sequence[:, 0], sequence[:, self.config.num_prefix_tokens:].mean(axis=1)], axis=-1)
        else:
            features = self.vit.pool(outputs.last_hidden_state)
        logits = self.classifier(features) if self.classifier is not None else features
        loss = self.loss_from_labels(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss, logits, outputs.hidden_states, outputs.attentions)

    def loss_from_labels(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        """The same losses and mean reduction as the PyTorch twin."""
        logits = logits.astype(jnp.float32)
        num_labels = self.config.num_labels
        problem = resolve_problem_type(self.config, jnp.issubdtype(labels.dtype, jnp.integer))
        if problem == "regression":
            labels = labels.astype(logits.dtype)
            if num_labels == 1:
                return jnp.mean(jnp.square(jnp.squeeze(logits) - jnp.squeeze(labels)))
            return jnp.mean(jnp.square(logits - labels))
        if problem == "single_label_classification":
            flat_logits = logits.reshape(-1, num_labels)
            log_probs = jax.nn.log_softmax(flat_logits, axis=-1)
            picked = jnp.take_along_axis(log_probs, labels.reshape(-1, 1).astype(jnp.int32), axis=-1)
            return -jnp.mean(picked)
        labels = labels.astype(logits.dtype)
        return jnp.mean(jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits))))


class FlaxViTForImageClassification(FlaxViTPreTrainedModel):
    """ViT with a linear classifier on the pooled token; `labels` give a loss by `problem_type`.

    Example:
        >>> import numpy as np
        >>> from vit import ViTConfig, FlaxViTForImageClassification
        >>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
        ...                    num_attention_heads=4, intermediate_size=64, num_labels=10)
        >>> model = FlaxViTForImageClassification(config)
        >>> model(np.zeros((2, 3, 32, 32), np.float32), labels=np.array([1, 2])).logits.shape
        (2, 10)
    """

    head = "classification"
    hf_architecture = "ViTForImageClassification"
    network_class = _ImageClassificationNetwork

    def __init__(self, config: ViTConfig, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, seed: int = 0) -> None:
        self.num_labels = config.num_labels
        super().__init__(config, dtype, param_dtype, seed)

    def __call__(self, pixel_values, head_mask=None, labels=None, output_attentions: bool | None = None,
                 output_hidden_states: bool | None = None, interpolate_pos_encoding: bool | None = None,
                 return_dict: bool | None = None, params: dict | None = None, dropout_rng=None, train: bool = False):
        pixel_values, grid, _, head_mask = self._check_inputs(pixel_values, None, head_mask, interpolate_pos_encoding)
        labels = jnp.asarray(labels) if labels is not None else None
        return self._run(pixel_values, {"labels": labels, "head_mask": head_mask}, grid=grid, params=params,
                         dropout_rng=dropout_rng, train=train, output_attentions=output_attentions,
                         output_hidden_states=output_hidden_states, return_dict=return_dict)


class _ImageEmbeddingsNetwork(nnx.Module):
    """FlaxViTWithProjection's network: the encoder, pool, then the projection without bias."""

    def __init__(self, config: ViTConfig, **kw: Any) -> None:
        self.config = config
        self.vit = _ViTNetwork(config, add_pooling_layer=False, use_mask_token=False, **kw)
        self.visual_projection = Dense(config.hidden_size, config.projection_dim, use_bias=False, **kw)

    def __call__(self, pixel_values, grid, head_mask=None, output_attentions=False, output_hidden_states=False,
                 rngs=None) -> ImageEmbeddingsOutput:
        outputs = self.vit(pixel_values, grid, None, head_mask, output_attentions, output_hidden_states, rngs)
        image_embeds = self.visual_projection(self.vit.pool(outputs.last_hidden_state))
        return ImageEmbeddingsOutput(image_embeds, outputs.last_hidden_state, outputs.hidden_states, outputs.attentions)


class FlaxViTWithProjection(FlaxViTPreTrainedModel):
    """ViT with a linear projection (no bias) of the pooled token into an embedding space, as CLIP's image tower.

    Example:
        >>> import numpy as np
        >>> from vit import ViTConfig, FlaxViTWithProjection
        >>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
        ...                    num_attention_heads=4, intermediate_size=64, projection_dim=24)
        >>> FlaxViTWithProjection(config)(np.zeros((1, 3, 32, 32), np.float32)).image_embeds.shape
        (1, 24)
    """

    head = "projection"
    hf_architecture = "ViTWithProjection"
    network_class = _ImageEmbeddingsNetwork

    def __init__(self, config: ViTConfig, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, seed: int = 0) -> None:
        if config.projection_dim is None:
            raise ConfigError(f"{type(self).__name__} needs `projection_dim` in the config (CLIP's projection_dim).")
        super().__init__(config, dtype, param_dtype, seed)

    def __call__(self, pixel_values, head_mask=None, output_attentions: bool | None = None,
                 output_hidden_states: bool | None = None, interpolate_pos_encoding: bool | None = None,
                 return_dict: bool | None = None, params: dict | None = None, dropout_rng=None, train: bool = False):
        pixel_values, grid, _, head_mask = self._check_inputs(pixel_values, None, head_mask, interpolate_pos_encoding)
        return self._run(pixel_values, {"head_mask": head_mask}, grid=grid, params=params, dropout_rng=dropout_rng,
                         train=train, output_attentions=output_attentions,
                         output_hidden_states=output_hidden_states, return_dict=return_dict)


class _ImageClassificationWithTeacherNetwork(nnx.Module):
    """FlaxViTForImageClassificationWithTeacher's network: the encoder, then DeiT's two heads."""

    def __init__(self, config: ViTConfig, **kw: Any) -> None:
        self.config = config
        self.vit = _ViTNetwork(config, add_pooling_layer=False, use_mask_token=False, **kw)
        self.cls_classifier = Dense(config.hidden_size, config.num_labels, **kw)
        self.distillation_classifier = Dense(config.hidden_size, config.num_labels, **kw)

    def __call__(self, pixel_values, grid, head_mask=None, output_attentions=False, output_hidden_states=False,
                 rngs=None) -> ImageClassifierWithTeacherOutput:
        outputs = self.vit(pixel_values, grid, None, head_mask, output_attentions, output_hidden_states, rngs)
        sequence = outputs.last_hidden_state
        cls_logits = self.cls_classifier(sequence[:, 0])
        distillation_logits = self.distillation_classifier(sequence[:, 1])
        return ImageClassifierWithTeacherOutput((cls_logits + distillation_logits) / 2, cls_logits, distillation_logits,
                                                outputs.hidden_states, outputs.attentions)


class FlaxViTForImageClassificationWithTeacher(FlaxViTPreTrainedModel):
    """ViT with DeiT's two heads: one on the class token, one on the distillation token; `logits` is their mean.

    Example:
        >>> import numpy as np
        >>> from vit import ViTConfig, FlaxViTForImageClassificationWithTeacher
        >>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
        ...                    num_attention_heads=4, intermediate_size=64, num_labels=5, distillation_token=True)
        >>> model = FlaxViTForImageClassificationWithTeacher(config)
        >>> model(np.zeros((1, 3, 32, 32), np.float32)).distillation_logits.shape
        (1, 5)
    """

    head = "distilled"
    hf_architecture = "ViTForImageClassificationWithTeacher"
    network_class = _ImageClassificationWithTeacherNetwork

    def __init__(self, config: ViTConfig, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, seed: int = 0) -> None:
        if not config.distillation_token or config.num_labels == 0:
            raise ConfigError(f"{type(self).__name__} needs distillation_token=True and num_labels > 0 in the config.")
        super().__init__(config, dtype, param_dtype, seed)

    def __call__(self, pixel_values, head_mask=None, output_attentions: bool | None = None,
                 output_hidden_states: bool | None = None, interpolate_pos_encoding: bool | None = None,
                 return_dict: bool | None = None, params: dict | None = None, dropout_rng=None, train: bool = False):
        pixel_values, grid, _, head_mask = self._check_inputs(pixel_values, None, head_mask, interpolate_pos_encoding)
        return self._run(pixel_values, {"head_mask": head_mask}, grid=grid, params=params, dropout_rng=dropout_rng,
                         train=train, output_attentions=output_attentions,
                         output_hidden_states=output_hidden_states, return_dict=return_dict)


# ----------------------------------------------------------------------------------------- the ViT family
# Each class fixes the family (checked against the config), the head and HF's architecture name; the network
# is the ViT above, configured by the family's config.
class FlaxCLIPVisionModel(FlaxViTModel):
    """CLIP's image tower (HF's FlaxCLIPVisionModel): `pooler_output` is the normed class token."""

    families = ("clip",)
    hf_architecture = "CLIPVisionModel"


class FlaxCLIPVisionModelWithProjection(FlaxViTWithProjection):
    """CLIP's image tower with its projection: `image_embeds` (HF has no Flax class for it)."""

    families = ("clip",)
    hf_architecture = "CLIPVisionModelWithProjection"


class FlaxSiglipVisionModel(FlaxViTModel):
    """SigLIP's image tower: `pooler_output` is the attention pool of the normed tokens (HF has no Flax SigLIP)."""

    families = ("siglip",)
    hf_architecture = "SiglipVisionModel"


class FlaxDinov2Model(FlaxViTModel):
    """DINOv2 (HF's FlaxDinov2Model, with PyTorch's position-embedding resize): LayerScale, a mask token."""

    families = ("dinov2",)
    hf_architecture = "Dinov2Model"

    def __init__(self, config: ViTConfig, add_pooling_layer: bool = True, use_mask_token: bool = True,
                 dtype: Any = jnp.float32, param_dtype: Any = jnp.float32, seed: int = 0) -> None:
        super().__init__(config, add_pooling_layer, use_mask_token, dtype, param_dtype, seed)


class FlaxDinov2ForImageClassification(FlaxViTForImageClassification):
    """DINOv2 with HF's linear head on the class token and the mean of the patch tokens."""

    families = ("dinov2",)
    hf_architecture = "Dinov2ForImageClassification"


class FlaxDinov2WithRegistersModel(FlaxDinov2Model):
    """DINOv2 with register tokens (HF has no Flax class for it)."""

    families = ("dinov2_with_registers",)
    hf_architecture = "Dinov2WithRegistersModel"


class FlaxDinov2WithRegistersForImageClassification(FlaxViTForImageClassification):
    """DINOv2 with registers and HF's linear head on the class token and the mean of the patch tokens."""

    families = ("dinov2_with_registers",)
    hf_architecture = "Dinov2WithRegistersForImageClassification"


class FlaxDeiTModel(FlaxViTModel):
    """DeiT: class and distillation tokens, a dense pooler (HF has no Flax DeiT)."""

    families = ("deit",)
    hf_architecture = "DeiTModel"


class FlaxDeiTForImageClassification(FlaxViTForImageClassification):
    """DeiT with a linear head on the class token."""

    families = ("deit",)
    hf_architecture = "DeiTForImageClassification"


class FlaxDeiTForImageClassificationWithTeacher(FlaxViTForImageClassificationWithTeacher):
    """DeiT with the class-token and distillation-token heads."""

    families = ("deit",)
    hf_architecture = "DeiTForImageClassificationWithTeacher"
