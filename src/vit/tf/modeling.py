"""The Vision Transformer in TensorFlow / Keras 3, laid out like `src/vit/pt/modeling.py`.

Sublayers carry HF TF's names (`vit/encoder/layer_._0/attention/attention/query/kernel`), so the
variables map to the canonical names through the one parameter table. Every numeric constant (LayerNorm
eps, GELU flavour) comes from the config, never from a Keras default.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla as tf2xla
from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext

from ..config import ViTConfig, check_model_family
from ..cpu import has_bf16_matmul
from ..errors import ConfigError
from ..inputs import check_head_mask, check_mask, check_mim_stride, check_pixel_values, resolve_problem_type
from ..outputs import (
    BaseModelOutputWithPooling,
    ImageClassifierOutput,
    ImageClassifierWithTeacherOutput,
    ImageEmbeddingsOutput,
    MaskedImageModelingOutput,
)
from ..params import classifier_width, from_layout, layout_name, to_layout
from ..pretrained import PretrainedMixin, dtype_name, init_is_skipped, skip_init
from ..resize import resize_matrix

ACTIVATIONS = {
    "gelu": lambda x: tf.nn.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: tf.nn.gelu(x, approximate=True),
    "gelu_new": lambda x: tf.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * tf.sigmoid(1.702 * x),
    "relu": tf.nn.relu,
    "silu": tf.nn.silu,
    "swish": tf.nn.silu,
    "tanh": tf.tanh,
}


def _softmax32(scores: tf.Tensor) -> tf.Tensor:
    """Softmax over the last axis with float32 statistics, cast back: the same rule in all three frameworks."""
    return tf.cast(tf.nn.softmax(tf.cast(scores, tf.float32), axis=-1), scores.dtype)


def _einsum32(equation: str, a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """tf.einsum accumulated in float32 and rounded once to the inputs' dtype, as torch's and XLA's are.

    TF's CPU einsum in bfloat16 errs as if it accumulated in bfloat16 where oneDNN has no bf16 kernel (AVX2 CPUs):
    measured 5% error on a 512-term dot product, against 0.3% for one rounding. In float32 the casts are no-ops.
    Only the 1x1 convolution of MIM's decoder uses it; the model's matmuls go through `_matmul32`.
    """
    return tf.cast(tf.einsum(equation, tf.cast(a, tf.float32), tf.cast(b, tf.float32)), a.dtype)


# oneDNN's bf16 MatMul accumulates in float32 and rounds once (measured: the error of one rounding) and runs on the
# CPU's bf16 units; TF uses oneDNN unless TF_ENABLE_ONEDNN_OPTS=0.
_NATIVE_BF16_MATMUL = has_bf16_matmul() and os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0"


def _matmul32(a: tf.Tensor, b: tf.Tensor, transpose_b: bool = False) -> tf.Tensor:
    """tf.matmul (batched or not) accumulated in float32 and rounded once to the inputs' dtype.

    In float32 this is tf.matmul. Otherwise, by where it runs:
    - under XLA, a dot with a float32 result, then rounded: XLA CPU runs bf16 x bf16 -> f32 on YNNPACK's bf16 GEMM
      (measured 830 GFLOP/s on an AMX CPU), where a bf16 result is widened and run at the float32 rate (215);
    - in graph or eager mode, bf16 on a CPU with bf16 units: tf.matmul itself, oneDNN's bf16 GEMM (940 GFLOP/s);
    - otherwise the float32 product of the widened inputs: TF's Eigen bf16 MatMul (AVX2 CPUs) errs twice as much
      as one rounding, so the demo model's first block's output was 1.4e-2 off float32, against 0.7e-2 in
      PyTorch and Flax.
    """
    if a.dtype == tf.float32:
        return tf.matmul(a, b, transpose_b=transpose_b)
    if GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()):
        return _xla_matmul32(a, b, transpose_b)
    if a.dtype == tf.bfloat16 and _NATIVE_BF16_MATMUL:
        return tf.matmul(a, b, transpose_b=transpose_b)
    return tf.cast(tf.matmul(tf.cast(a, tf.float32), tf.cast(b, tf.float32), transpose_b=transpose_b), a.dtype)


def _xla_matmul32(a: tf.Tensor, b: tf.Tensor, transpose_b: bool) -> tf.Tensor:
    """`_matmul32` under XLA: a reduced x reduced -> float32 product, rounded once, with a gradient of the same form.

    TF has no gradient for a BatchMatMulV3 whose output dtype differs from its inputs' (it multiplies the float32
    cotangent by the bf16 operand and fails), so the gradient is written here. The cotangent of the rounded output
    arrives in a.dtype, and each gradient is again a reduced x reduced -> float32 product rounded once, which XLA
    CPU runs on its bf16 GEMM. `b` is either a weight, shared by the whole batch, or batched like `a`.
    """

    @tf.custom_gradient
    def matmul(a: tf.Tensor, b: tf.Tensor) -> tuple[tf.Tensor, Any]:
        def gradient(upstream: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            upstream = tf.cast(upstream, a.dtype)  # exact: the cotangent of a value rounded to a.dtype
            grad_a = _product32(upstream, b, adj_y=not transpose_b)
            x, g = a, upstream
            if b.shape.rank == 2 and a.shape.rank > 2:  # a weight: its gradient sums over every row of the batch
                x, g = tf.reshape(a, (-1, a.shape[-1])), tf.reshape(upstream, (-1, upstream.shape[-1]))
            grad_b = _transposed_product32(g, x) if transpose_b else _transposed_product32(x, g)  # gᵀ x or xᵀ g
            return grad_a, grad_b

        return _product32(a, b, adj_y=transpose_b), gradient

    return matmul(a, b)


def _product32(x: tf.Tensor, y: tf.Tensor, adj_y: bool = False) -> tf.Tensor:
    return tf.cast(tf.raw_ops.BatchMatMulV3(x=x, y=y, Tout=tf.float32, adj_y=adj_y), x.dtype)


def _transposed_product32(left: tf.Tensor, right: tf.Tensor) -> tf.Tensor:
    """leftᵀ right over the last two axes, rounded like `_product32`, without XLA CPU's slow form.

    XLA CPU runs a dot whose left operand contracts over its rows (a weight's gradient contracts over the tokens)
    on its float32 path (measured 205 against 740 GFLOP/s in bf16). So the product is taken on a row-major copy of
    one transposed operand: leftᵀ right, or (rightᵀ left)ᵀ where that copies fewer elements (attention's key and
    value gradients copy two tokens x head_dim arrays rather than one tokens x tokens array).
    """
    rows, left_cols, right_cols = left.shape[-2], left.shape[-1], right.shape[-1]
    if None in (rows, left_cols, right_cols) or rows * left_cols <= (rows + left_cols) * right_cols:
        return _product32(_row_major(tf.linalg.matrix_transpose(_row_major(left))), right)
    flipped = _product32(_row_major(tf.linalg.matrix_transpose(_row_major(right))), left)
    return _row_major(tf.linalg.matrix_transpose(_row_major(flipped)))


def _row_major(x: tf.Tensor) -> tf.Tensor:
    """x, kept in row-major layout: XLA would otherwise fold a transpose next to a dot into the dot's dimension
    order, which is the slow form (a flat view of x passes an optimization barrier)."""
    return tf.reshape(tf2xla.optimization_barrier(tf.reshape(x, [-1])), tf.shape(x))


def _row_major_operand(x: tf.Tensor) -> tf.Tensor:
    """`_row_major` for a forward-pass operand under XLA, with a gradient: the optimization barrier has none, and
    the identity's gradient passes the same barrier."""

    @tf.custom_gradient
    def barrier(x: tf.Tensor) -> tuple[tf.Tensor, Any]:
        return _row_major(x), _row_major

    return barrier(x)


def _heads_first(x: tf.Tensor) -> tf.Tensor:
    """(batch, tokens, heads, d) -> (batch, heads, tokens, d)."""
    return tf.transpose(x, (0, 2, 1, 3))


def _keras_dtype_policy(dtype: Any) -> Any:
    """`dtype=` as Keras takes it: None (the global policy), a Keras policy ("mixed_bfloat16", a DTypePolicy),
    or "float32" / "bfloat16" / "float16" from any framework's spelling (`tf.bfloat16`, `jnp.bfloat16`)."""
    if dtype is None or isinstance(dtype, keras.DTypePolicy) or (isinstance(dtype, str) and dtype.startswith("mixed_")):
        return dtype
    return dtype_name(dtype)


@contextlib.contextmanager
def _default_dtype_policy(policy: Any):
    """Within this block, layers created without dtype= take `policy`.

    Keras gives such layers the global policy, so a model's dtype= alone would reach only the outer model while
    the weights and activations stayed float32. Keras keeps the global policy per thread.
    """
    if policy is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def resize_positions(pos: tf.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int],
                     method: str = "bicubic") -> tf.Tensor:
    """Bicubic resize of a (1, H*W, D) grid with torch's numbers, via the shared matrices."""
    mh = tf.constant(resize_matrix(old_grid[0], new_grid[0], method), dtype=pos.dtype)
    mw = tf.constant(resize_matrix(old_grid[1], new_grid[1], method), dtype=pos.dtype)
    grid = tf.reshape(pos, (old_grid[0], old_grid[1], -1))
    grid = tf.einsum("ah,hwd->awd", mh, grid)
    grid = tf.einsum("bw,awd->abd", mw, grid)
    return tf.reshape(grid, (1, new_grid[0] * new_grid[1], -1))


# ------------------------------------------------------------------------ primitives (torch has them built in)
class Dense(keras.layers.Layer):
    """y = x @ kernel + bias, with the kernel (in, out) created up front."""

    def __init__(self, in_features: int, out_features: int, use_bias: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kernel = self.add_weight(shape=(in_features, out_features), initializer="zeros", name="kernel")
        self.bias = self.add_weight(shape=(out_features,), initializer="zeros", name="bias") if use_bias else None
        self.built = True

    def call(self, x: tf.Tensor) -> tf.Tensor:
        y = _matmul32(x, self.kernel)
        return y + self.bias if self.bias is not None else y


class LayerNorm(keras.layers.Layer):
    """LayerNorm over the last axis with the config's eps (Keras' default of 1e-3 is never used)."""

    def __init__(self, size: int, eps: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.eps = eps
        self.gamma = self.add_weight(shape=(size,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(size,), initializer="zeros", name="beta")
        self.built = True

    def call(self, x: tf.Tensor) -> tf.Tensor:
        # Statistics in float32 whatever the compute dtype, as PyTorch's and the Flax twin's LayerNorm.
        x32 = tf.cast(x, tf.float32)
        mean, variance = tf.nn.moments(x32, axes=[-1], keepdims=True)
        y = (x32 - mean) * tf.math.rsqrt(variance + self.eps)
        return tf.cast(y * tf.cast(self.gamma, tf.float32) + tf.cast(self.beta, tf.float32), x.dtype)


# ------------------------------------------------------------------------------------------------ model
class TFViTPatchEmbeddings(keras.layers.Layer):
    """Cuts the NCHW image into patches and projects each: one matmul, with the conv kernel in HWIO."""

    def __init__(self, config: ViTConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.patch_hw, self.num_channels = config.patch_hw, config.num_channels
        ph, pw = config.patch_hw
        self.projection = _ConvProjection(ph, pw, config.num_channels, config.hidden_size, config.patch_embedding_bias,
                                          name="projection")
        self.built = True

    def call(self, pixel_values: tf.Tensor) -> tf.Tensor:
        (ph, pw), c = self.patch_hw, self.num_channels
        b, gh, gw = tf.shape(pixel_values)[0], pixel_values.shape[2] // ph, pixel_values.shape[3] // pw
        x = pixel_values[:, :, : gh * ph, : gw * pw]
        x = tf.reshape(x, (b, c, gh, ph, gw, pw))
        x = tf.transpose(x, (0, 2, 4, 3, 5, 1))  # (b, gh, gw, ph, pw, c): the kernel's (h, w, in) order
        x = tf.reshape(x, (b, gh * gw, ph * pw * c))
        return self.projection(x)


class _ConvProjection(keras.layers.Layer):
    """The patch projection's kernel (ph, pw, C, D), applied to flattened patches as a matmul."""

    def __init__(self, ph: int, pw: int, channels: int, hidden: int, use_bias: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kernel = self.add_weight(shape=(ph, pw, channels, hidden), initializer="zeros", name="kernel")
        self.bias = self.add_weight(shape=(hidden,), initializer="zeros", name="bias") if use_bias else None
        self.built = True

    def call(self, patches: tf.Tensor) -> tf.Tensor:
        kernel = tf.reshape(self.kernel, (-1, self.kernel.shape[-1]))
        projected = _matmul32(patches, kernel)
        return projected + self.bias if self.bias is not None else projected


class TFViTEmbeddings(keras.layers.Layer):
    """Patch embeddings, the optional mask token, the prefix tokens and the position embeddings.

    The sequence is [class, distillation, registers, patches]. Position embeddings cover the class and
    distillation tokens (not with `no_embed_class`) and the patches, never the registers (DINOv2's layout).
    """

    def __init__(self, config: ViTConfig, use_mask_token: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        d = config.hidden_size

        def token(name: str, count: int, wanted: bool):
            return self.add_weight(shape=(1, count, d), initializer="zeros", name=name) if wanted else None

        self.cls_token = token("cls_token", 1, config.class_token)
        self.distillation_token = token("distillation_token", 1, config.distillation_token)
        self.register_tokens = token("register_tokens", config.num_register_tokens, config.num_register_tokens > 0)
        self.mask_token = token("mask_token", 1, use_mask_token)
        self.patch_embeddings = TFViTPatchEmbeddings(config, name="patch_embeddings")
        self.position_embeddings = self.add_weight(shape=(1, config.num_positions, d), initializer="zeros",
                                                   name="position_embeddings")
        self.dropout = keras.layers.Dropout(config.hidden_dropout_prob)
        self.built = True

    def interpolate_pos_encoding(self, grid: tuple[int, int]) -> tf.Tensor:
        """Position embeddings for a patch grid, resized (HF PyTorch's numbers) when needed."""
        if grid == self.config.grid_hw:
            return self.position_embeddings
        prefix = self.config.num_position_prefix_tokens
        patches = resize_positions(self.position_embeddings[:, prefix:], self.config.grid_hw, grid,
                                   self.config.position_interpolation)
        return tf.concat([self.position_embeddings[:, :prefix], patches], axis=1)

    def call(self, pixel_values: tf.Tensor, grid: tuple[int, int], bool_masked_pos: tf.Tensor | None = None,
             training: bool = False) -> tf.Tensor:
        embeddings = self.patch_embeddings(pixel_values)
        if bool_masked_pos is not None:
            mask = tf.cast(bool_masked_pos, embeddings.dtype)[:, :, None]
            embeddings = embeddings * (1.0 - mask) + tf.cast(self.mask_token, embeddings.dtype) * mask
        batch = tf.shape(embeddings)[0]
        tokens = [tf.tile(tf.cast(t, embeddings.dtype), (batch, 1, 1))
                  for t in (self.cls_token, self.distillation_token) if t is not None]
        positions = tf.cast(self.interpolate_pos_encoding(grid), embeddings.dtype)
        if self.config.no_embed_class:
            embeddings = tf.concat([*tokens, embeddings + positions], axis=1)
        else:
            embeddings = tf.concat([*tokens, embeddings], axis=1) + positions
        if self.register_tokens is not None:
            # Registers go after the class and distillation tokens, without position embeddings.
            split = len(tokens)
            registers = tf.tile(tf.cast(self.register_tokens, embeddings.dtype), (batch, 1, 1))
            embeddings = tf.concat([embeddings[:, :split], registers, embeddings[:, split:]], axis=1)
        return self.dropout(embeddings, training=training)


# XLA CPU runs a matmul batched over (image, head) well below its 2-D GEMM rate once the N x N scores outgrow the
# caches. A loop of one 2-D attention per (image, head) keeps each score matrix hot: measured at 1370 tokens (518 px,
# patch 14) 1.9x faster forward and 1.5x forward+backward under XLA; at 197 tokens no faster. Same numbers to round-off.
HEAD_LOOP_MIN_TOKENS = 384
_HEAD_LOOP_ALLOWED = contextvars.ContextVar("head_loop_allowed", default=True)


@contextlib.contextmanager
def batched_attention() -> Iterator[None]:
    """Trace attention as one batched matmul at every length: graphs for other runtimes (exports), since the loop's
    TensorList ops have no LiteRT builtin."""
    token = _HEAD_LOOP_ALLOWED.set(False)
    try:
        yield
    finally:
        _HEAD_LOOP_ALLOWED.reset(token)


def attention_per_head(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    """softmax(q kᵀ / sqrt(d)) v for (batch, tokens, heads, d) inputs, one (image, head) at a time."""
    b, n, h, d = tf.shape(q)[0], tf.shape(q)[1], q.shape[2], q.shape[3]

    def per_head(x: tf.Tensor) -> tf.Tensor:
        return tf.reshape(tf.transpose(x, (0, 2, 1, 3)), (-1, n, d))

    def one(qkv: tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> tf.Tensor:
        q1, k1, v1 = qkv
        scores = _matmul32(q1, k1, transpose_b=True) / tf.cast(math.sqrt(d), q.dtype)
        return _matmul32(_softmax32(scores), v1)

    context = tf.map_fn(one, (per_head(q), per_head(k), per_head(v)), fn_output_signature=q.dtype)
    return tf.transpose(tf.reshape(context, (b, h, n, d)), (0, 2, 1, 3))


class TFViTSelfAttention(keras.layers.Layer):
    """Multi-head scaled dot-product attention."""

    def __init__(self, config: ViTConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        d = config.hidden_size
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.query = Dense(d, d, config.qkv_bias, name="query")
        self.key = Dense(d, d, config.qkv_bias, name="key")
        self.value = Dense(d, d, config.qkv_bias, name="value")
        self.dropout = keras.layers.Dropout(config.attention_probs_dropout_prob)
        self.built = True

    def project(self, hidden_states: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Query, key and value, each (batch, tokens, heads, head_dim), from one matmul instead of three.
        vit.tf.quantize's int8 copy overrides it."""
        layers = (self.query, self.key, self.value)
        qkv = _matmul32(hidden_states, tf.concat([layer.kernel for layer in layers], axis=1))
        if self.query.bias is not None:
            qkv = qkv + tf.concat([layer.bias for layer in layers], axis=0)
        qkv = tf.reshape(qkv, (tf.shape(qkv)[0], -1, 3, self.num_heads, self.head_dim))
        return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]

    def call(self, hidden_states: tf.Tensor, head_mask: tf.Tensor | None = None, output_attentions: bool = False,
             training: bool = False) -> tuple[tf.Tensor, tf.Tensor | None]:
        q, k, v = self.project(hidden_states)
        plain = head_mask is None and not output_attentions and not (training and self.dropout.rate)
        tokens = hidden_states.shape[1]  # None when the image size is left dynamic: then one batched matmul
        long = tokens is not None and tokens >= HEAD_LOOP_MIN_TOKENS
        if plain and long and _HEAD_LOOP_ALLOWED.get() and not tf.config.list_logical_devices("GPU"):
            context = attention_per_head(q, k, v)
            return tf.reshape(context, (tf.shape(context)[0], -1, self.num_heads * self.head_dim)), None
        q, k, v = _heads_first(q), _heads_first(k), _heads_first(v)
        # XLA CPU would fold the head split's transpose into the products and widen their bf16 operands to float32,
        # running q kᵀ and probs v at the float32 rate: row-major q, k and v keep them bf16 x bf16 -> f32, and a
        # row-major context does the same for its gradient's products (tests/tf/test_tf_modeling.py).
        keep_layout = q.dtype != tf.float32 and GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
        if keep_layout:
            q, k, v = _row_major_operand(q), _row_major_operand(k), _row_major_operand(v)
        scores = _matmul32(q, k, transpose_b=True) / tf.cast(math.sqrt(self.head_dim), q.dtype)
        probs = _softmax32(scores)
        dropped = self.dropout(probs, training=training)
        if head_mask is not None:
            dropped = dropped * tf.cast(head_mask, dropped.dtype)
        context = _matmul32(dropped, v)
        context = _heads_first(_row_major_operand(context) if keep_layout else context)
        context = tf.reshape(context, (tf.shape(context)[0], -1, self.num_heads * self.head_dim))
        return context, probs if output_attentions else None


class TFViTSelfOutput(keras.layers.Layer):
    """The attention's output projection; the residual is added in TFViTLayer."""

    def __init__(self, config: ViTConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dense = Dense(config.hidden_size, config.hidden_size, name="dense")
        self.dropout = keras.layers.Dropout(config.hidden_dropout_prob)
        self.built = True

    def call(self, hidden_states: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.dropout(self.dense(hidden_states), training=training)


class TFViTAttention(keras.layers.Layer):
    """Self-attention followed by its output projection."""

    def __init__(self, config: ViTConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.self_attention = TFViTSelfAttention(config, name="attention")
        self.dense_output = TFViTSelfOutput(config, name="output")
        self.built = True

    def call(self, hidden_states: tf.Tensor, head_mask: tf.Tensor | None = None, output_attentions: bool = False,
             training: bool = False) -> tuple[tf.Tensor, tf.Tensor | None]:
        context, probs = self.self_attention(hidden_states, head_mask=head_mask, output_attentions=output_attentions,
                                           training=training)
        return self.dense_output(context, training=training), probs


class TFViTIntermediate(keras.layers.Layer):
    """The MLP's expansion and activation."""

    def __init__(self, config: ViTConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dense = Dense(config.hidden_size, config.intermediate_size, name="dense")
        self.activation = ACTIVATIONS[config.hidden_act]
        self.built = True

    def call(self, hidden_states: tf.Tensor) -> tf.Tensor:
        return self.activation(self.dense(hidden_states))


class TFViTOutput(keras.layers.Layer):
    """The MLP's projection back to hidden_size, plus the residual."""

    def __init__(self, config: ViTConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dense = Dense(config.intermediate_size, config.hidden_size, name="dense")
        self.dropout = keras.layers.Dropout(config.hidden_dropout_prob)
        self.built = True

    def call(self, hidden_states: tf.Tensor, residual: tf.Tensor | None, training: bool = False) -> tf.Tensor:
        out = self.dropout(self.dense(hidden_states), training=training)
        return out if residual is None else out + residual


class TFViTSwiGLU(keras.layers.Layer):
    """SwiGLU MLP (DINOv2-g): silu(gate) * value from one fused projection, then back to hidden_size."""

    def __init__(self, config: ViTConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weights_in = Dense(config.hidden_size, 2 * config.intermediate_size, name="weights_in")
        self.weights_out = Dense(config.intermediate_size, config.hidden_size, name="weights_out")
        self.dropout = keras.layers.Dropout(config.hidden_dropout_prob)
        self.built = True

    def call(self, hidden_states: tf.Tensor, residual: tf.Tensor | None, training: bool = False) -> tf.Tensor:
        gate, value = tf.split(self.weights_in(hidden_states), 2, axis=-1)
        out = self.dropout(self.weights_out(tf.nn.silu(gate) * value), training=training)
        return out if residual is None else out + residual


class TFViTLayerScale(keras.layers.Layer):
    """LayerScale (CaiT, DINOv2): a learned per-channel factor on a residual branch."""

    def __init__(self, config: ViTConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lambda1 = self.add_weight(shape=(config.hidden_size,), initializer="ones", name="lambda1")
        self.built = True

    def call(self, hidden_states: tf.Tensor) -> tf.Tensor:
        return hidden_states * tf.cast(self.lambda1, hidden_states.dtype)


class TFViTLayer(keras.layers.Layer):
    """One pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)); LayerScale on each branch if set."""

    def __init__(self, config: ViTConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.attention = TFViTAttention(config, name="attention")
        if config.use_swiglu_ffn:
            self.mlp = TFViTSwiGLU(config, name="mlp")
        else:
            self.intermediate = TFViTIntermediate(config, name="intermediate")
            self.vit_output = TFViTOutput(config, name="output")
        self.layernorm_before = LayerNorm(config.hidden_size, config.layer_norm_eps, name="layernorm_before")
        self.layernorm_after = LayerNorm(config.hidden_size, config.layer_norm_eps, name="layernorm_after")
        use_scale = config.layer_scale_init_value is not None
        self.layer_scale1 = TFViTLayerScale(config, name="layer_scale1") if use_scale else None
        self.layer_scale2 = TFViTLayerScale(config, name="layer_scale2") if use_scale else None
        self.built = True

    def feed_forward(self, hidden_states: tf.Tensor, residual: tf.Tensor | None, training: bool = False) -> tf.Tensor:
        """The MLP (or SwiGLU) branch, plus the residual when one is given."""
        if hasattr(self, "mlp"):
            return self.mlp(hidden_states, residual=residual, training=training)
        return self.vit_output(self.intermediate(hidden_states), residual=residual, training=training)

    def call(self, hidden_states: tf.Tensor, head_mask: tf.Tensor | None = None, output_attentions: bool = False,
             training: bool = False) -> tuple[tf.Tensor, tf.Tensor | None]:
        attended, probs = self.attention(self.layernorm_before(hidden_states), head_mask=head_mask,
                                         output_attentions=output_attentions, training=training)
        if self.layer_scale1 is None:
            hidden_states = attended + hidden_states
            return self.feed_forward(self.layernorm_after(hidden_states), hidden_states, training), probs
        hidden_states = self.layer_scale1(attended) + hidden_states
        branch = self.feed_forward(self.layernorm_after(hidden_states), None, training)
        return self.layer_scale2(branch) + hidden_states, probs


class TFViTEncoder(keras.layers.Layer):
    """The stack of blocks; collects hidden states and attention maps on request."""

    def __init__(self, config: ViTConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.layer = [TFViTLayer(config, name=f"layer_._{i}") for i in range(config.num_hidden_layers)]
        self.gradient_checkpointing = False
        self.built = True

    def call(self, hidden_states: tf.Tensor, head_mask: tf.Tensor | None = None, output_attentions: bool = False,
             output_hidden_states: bool = False, training: bool = False):
        all_hidden = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for i, layer in enumerate(self.layer):
            layer_mask = head_mask[i] if head_mask is not None else None
            if self.gradient_checkpointing and training:
                # Recompute the block's activations in the backward pass instead of storing them.
                hidden_states, probs = self._recomputed(layer, hidden_states, layer_mask, output_attentions)
            else:
                hidden_states, probs = layer(hidden_states, head_mask=layer_mask, output_attentions=output_attentions,
                                             training=training)
            if output_hidden_states:
                all_hidden.append(hidden_states)
            if output_attentions:
                all_attentions.append(probs)
        return hidden_states, all_hidden, all_attentions

    @staticmethod
    def _recomputed(layer, hidden_states, head_mask, output_attentions: bool):
        """`layer` under tf.recompute_grad, which takes functions of tensors only (no None outputs)."""
        if output_attentions:
            return tf.recompute_grad(lambda h: layer(h, head_mask=head_mask, output_attentions=True, training=True))(hidden_states)
        return tf.recompute_grad(lambda h: layer(h, head_mask=head_mask, training=True)[0])(hidden_states), None


class TFViTPooler(keras.layers.Layer):
    """Dense + activation on the pooled token (HF's pooler; the original code's pre-logits)."""

    def __init__(self, config: ViTConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dense = Dense(config.hidden_size, config.pooler_output_size, name="dense")
        self.activation = ACTIVATIONS[config.pooler_act]
        self.built = True

    def call(self, pooled: tf.Tensor) -> tf.Tensor:
        return self.activation(self.dense(pooled))


class _Projections(keras.layers.Layer):
    """A named group of Dense layers (the MAP head's `attention` and `mlp`), so their paths are HF-like."""

    def __init__(self, shapes: dict[str, tuple[int, int]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name, (n_in, n_out) in shapes.items():
            setattr(self, name, Dense(n_in, n_out, name=name))
        self.built = True


class TFViTAttentionPoolingHead(keras.layers.Layer):
    """Attention pooling (MAP, SigLIP's head): a learned probe attends to the tokens, then a residual MLP."""

    def __init__(self, config: ViTConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        d, mlp = config.hidden_size, config.intermediate_size
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.probe = self.add_weight(shape=(1, 1, d), initializer="zeros", name="probe")
        self.attention = _Projections({"query": (d, d), "key": (d, d), "value": (d, d), "out_proj": (d, d)},
                                      name="attention")
        self.layernorm = LayerNorm(d, config.layer_norm_eps, name="layernorm")
        self.mlp = _Projections({"fc1": (d, mlp), "fc2": (mlp, d)}, name="mlp")
        self.activation = ACTIVATIONS[config.hidden_act]
        self.built = True

    def call(self, sequence: tf.Tensor) -> tf.Tensor:
        def heads(x: tf.Tensor) -> tf.Tensor:
            return tf.reshape(x, (tf.shape(x)[0], -1, self.num_heads, self.head_dim))

        probe = tf.tile(tf.cast(self.probe, sequence.dtype), (tf.shape(sequence)[0], 1, 1))
        q = heads(self.attention.query(probe))
        k, v = heads(self.attention.key(sequence)), heads(self.attention.value(sequence))
        scores = _matmul32(_heads_first(q), _heads_first(k), transpose_b=True) / tf.cast(math.sqrt(self.head_dim), q.dtype)
        context = _heads_first(_matmul32(_softmax32(scores), _heads_first(v)))
        pooled = self.attention.out_proj(tf.reshape(context, (tf.shape(context)[0], -1, self.num_heads * self.head_dim)))
        pooled = pooled + self.mlp.fc2(self.activation(self.mlp.fc1(self.layernorm(pooled))))
        return pooled[:, 0]


class PixelShuffle(keras.layers.Layer):
    """Depth to space with a (rows, cols) factor, in torch's NCHW channel order."""

    def __init__(self, factor: tuple[int, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor = factor
        self.built = True

    def call(self, x: tf.Tensor) -> tf.Tensor:
        (sh, sw), (c, h, w) = self.factor, x.shape[1:]
        b = tf.shape(x)[0]
        x = tf.reshape(x, (b, c // (sh * sw), sh, sw, h, w))
        x = tf.transpose(x, (0, 1, 4, 2, 5, 3))
        return tf.reshape(x, (b, c // (sh * sw), h * sh, w * sw))


class _Conv1x1NCHW(keras.layers.Layer):
    """A 1x1 convolution on NCHW maps (kernel (1, 1, in, out), as Keras stores convolutions)."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kernel = self.add_weight(shape=(1, 1, in_channels, out_channels), initializer="zeros", name="kernel")
        self.bias = self.add_weight(shape=(out_channels,), initializer="zeros", name="bias")
        self.built = True

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return _einsum32("bchw,co->bohw", x, self.kernel[0, 0]) + self.bias[None, :, None, None]


class _Decoder(keras.layers.Layer):
    """HF's `decoder` Sequential: sublayer "0" is the 1x1 convolution, "1" the pixel shuffle."""

    def __init__(self, config: ViTConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        sh, sw = config.stride_hw
        self.conv = _Conv1x1NCHW(config.hidden_size, sh * sw * config.num_channels, name="0")
        self.shuffle = PixelShuffle((sh, sw), name="1")
        self.built = True

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return self.shuffle(self.conv(x))


def _named_variables(layer: keras.layers.Layer, prefix: str = "") -> dict[str, Any]:
    """{HF TF path: variable}, from the sublayers' names (HF TF's), e.g. `encoder/layer_._0/.../kernel`."""
    found = {prefix + v.name: v for v in layer._trainable_variables + layer._non_trainable_variables}
    for child in layer._flatten_layers(include_self=False, recursive=False):
        found.update(_named_variables(child, prefix + child.name + "/"))
    return found


class TFViTPreTrainedModel(PretrainedMixin, keras.Model):
    """Shared by the TensorFlow models: construction from a config, checkpoint I/O, training and export."""

    config_class = ViTConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Each model's constructor runs with its dtype as the default policy, so every sublayer gets it."""
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            init, signature = cls.__init__, inspect.signature(cls.__init__)

            @functools.wraps(init)
            def init_in_dtype(self, *args: Any, **kw: Any) -> None:
                dtype = signature.bind(self, *args, **kw).arguments.get("dtype")
                with _default_dtype_policy(_keras_dtype_policy(dtype)):
                    init(self, *args, **kw)

            cls.__init__ = init_in_dtype

    def __init__(self, config: ViTConfig, dtype: Any = None, **kwargs: Any) -> None:
        if not isinstance(config, ViTConfig):
            raise TypeError(f"config must be a ViTConfig, got {type(config).__name__}")
        check_model_family(type(self), config)
        super().__init__(dtype=_keras_dtype_policy(dtype), **kwargs)
        self.config = config
        # Created here, not in train_step: under tf.distribute, variables must not be born inside a replica.
        self._loss_mean = keras.metrics.Mean(name="loss")

    def post_init(self) -> None:
        self.built = True
        self._variables_by_name = _named_variables(self)
        if not init_is_skipped():
            # Seeded from NumPy's global generator, so keras.utils.set_random_seed makes it repeatable.
            self.init_weights(seed=int(np.random.randint(2**31 - 1)))

    def _canonical_variables(self) -> dict[str, tuple[Any, Any]]:
        """{canonical name: (spec, keras variable)} through the parameter table."""
        out = {}
        for name, spec in self.parameter_specs().items():
            tf_name = layout_name(spec, "tf")
            if self.head == "base" and tf_name.startswith("vit/"):
                tf_name = tf_name[4:]
            out[name] = (spec, self._variables_by_name[tf_name])
        return out

    def canonical_state_dict(self) -> dict[str, np.ndarray]:
        return {
            name: from_layout(np.asarray(var.numpy(), dtype=np.float32), spec.kind, spec.leaf, "tf")
            for name, (spec, var) in self._canonical_variables().items()
        }

    def load_canonical_state_dict(self, state: dict[str, np.ndarray]) -> None:
        variables = self._canonical_variables()
        for name, array in state.items():
            spec, var = variables[name]
            var.assign(tf.cast(to_layout(np.asarray(array), spec.kind, spec.leaf, "tf"), var.dtype))

    def save_pretrained(self, save_directory: str | os.PathLike, formats: tuple[str, ...] | str | None = None, *,
                        saved_model: bool = False, version: int = 1, **kwargs: Any) -> None:
        """As `PretrainedMixin.save_pretrained`; `saved_model=True` also writes a SavedModel to
        `saved_model/<version>/` with a `serving_default` signature, as HF's TF models do."""
        super().save_pretrained(save_directory, formats, **kwargs)
        if saved_model:
            target = os.path.join(os.fspath(save_directory), "saved_model", str(version))
            staging = tempfile.mkdtemp(prefix=".saved_model.", dir=os.fspath(save_directory))
            try:
                self.export(staging)
                if os.path.isdir(target):
                    shutil.rmtree(target)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(staging, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    def canonical_name_of(self) -> dict[int, str]:
        """{id(variable): canonical name}, e.g. to label gradients from `self.trainable_variables`."""
        return {id(var): name for name, (_, var) in self._canonical_variables().items()}

    def gradient_checkpointing_enable(self) -> None:
        self._encoder().gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self._encoder().gradient_checkpointing = False

    def _encoder(self) -> TFViTEncoder:
        return self.encoder if isinstance(self, TFViTModel) else self.vit.encoder

    def _check_inputs(self, pixel_values, bool_masked_pos, head_mask, interpolate_pos_encoding) -> tuple:
        """Validate the inputs and cast pixel_values to the compute dtype (the one place that casts).

        Returns (pixel_values, grid, bool_masked_pos, head_mask), as in the PyTorch and Flax twins.
        """
        pixel_values = tf.convert_to_tensor(pixel_values)
        interpolate = bool(interpolate_pos_encoding) or self.config.always_interpolate_pos_encoding
        grid = check_pixel_values(tuple(pixel_values.shape), self.config, interpolate)
        if not pixel_values.dtype.is_floating:
            raise ValueError(f"pixel_values must be floating point, got {pixel_values.dtype.name}; use ViTImageProcessor.")
        # Only eager values can be checked; on an accelerator the check would force a device-to-host sync.
        on_cpu = "GPU" not in pixel_values.device and "TPU" not in pixel_values.device
        if tf.executing_eagerly() and on_cpu and not bool(tf.reduce_all(tf.math.is_finite(pixel_values))):
            raise ValueError("pixel_values holds NaN or infinite values.")
        if bool_masked_pos is not None:
            bool_masked_pos = tf.convert_to_tensor(bool_masked_pos)
            check_mask(tuple(bool_masked_pos.shape), pixel_values.shape[0], grid[0] * grid[1])
        if head_mask is not None:
            head_mask = tf.convert_to_tensor(head_mask)
            check_head_mask(tuple(head_mask.shape), self.config)
            if head_mask.shape.rank == 1:
                head_mask = tf.tile(head_mask[None], (self.config.num_hidden_layers, 1))
            head_mask = head_mask[:, None, :, None, None]
        return tf.cast(pixel_values, self.compute_dtype), grid, bool_masked_pos, head_mask

    # Keras training: the loss comes from the labels, as in HF's TF models.
    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        share = tf.stop_gradient(self._replica_share(x))
        with tf.GradientTape() as tape:
            output = self._step_output(x, y, training=True)
            # tf.distribute sums the replicas' gradients: weighting each replica's mean loss by its share of
            # the global batch makes the sum the gradient of the whole batch's mean loss, as on one device.
            scaled = output.loss * share
            scaled = self.optimizer.scale_loss(scaled) if hasattr(self.optimizer, "scale_loss") else scaled
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return self._update_metrics(self._global_mean(output.loss, share), y, output, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        output = self._step_output(x, y, training=False)
        return self._update_metrics(self._global_mean(output.loss, self._replica_share(x)), y, output, sample_weight)

    def predict_step(self, data):
        """`model.predict` returns the output fields as a dict of arrays, e.g. {"logits": ...}."""
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        kwargs = dict(x) if isinstance(x, dict) else {"pixel_values": x}
        return dict(self(**kwargs, training=False).items())

    @staticmethod
    def _replica_share(x) -> tf.Tensor:
        """This replica's fraction of the global batch (1 without tf.distribute)."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return tf.constant(1.0)
        pixels = x["pixel_values"] if isinstance(x, dict) else x
        local = tf.cast(tf.shape(pixels)[0], tf.float32)
        return local / context.all_reduce(tf.distribute.ReduceOp.SUM, local)

    @staticmethod
    def _global_mean(loss: tf.Tensor, share: tf.Tensor) -> tf.Tensor:
        """The whole batch's mean loss, the same on every replica."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return loss
        return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(loss, tf.float32) * share)

    def _step_output(self, x, y, training: bool):
        kwargs = dict(x) if isinstance(x, dict) else {"pixel_values": x}
        if y is not None:
            kwargs["labels"] = y
        output = self(**kwargs, training=training)
        if output.loss is None:
            raise ValueError(f"{type(self).__name__} computes no loss from these inputs; pass labels as y (or "
                             "bool_masked_pos in x for masked image modelling).")
        return output

    def _update_metrics(self, loss, y, output, sample_weight) -> dict:
        """The loss, and the metrics given to `compile(metrics=...)` on the labels and the logits."""
        self._loss_mean.update_state(loss)
        results = {"loss": self._loss_mean.result(), "last_loss": loss}
        compiled = getattr(self, "_compile_metrics", None)
        if compiled is not None and y is not None and "logits" in output:
            compiled.update_state(y, output.logits, sample_weight)
            results.update(compiled.result())
        return results

    @property
    def metrics(self):
        compiled = getattr(self, "_compile_metrics", None)
        return [self._loss_mean] + ([compiled] if compiled is not None else [])

    def export(self, filepath: str | os.PathLike, format: str = "tf_saved_model", **kwargs: Any) -> None:
        """Write a SavedModel whose `serve(pixel_values)` returns the output fields as a dict."""
        h, w = self.config.image_hw
        signature = [tf.TensorSpec((None, self.config.num_channels, h, w), tf.float32, name="pixel_values")]
        archive = keras.export.ExportArchive()
        archive.track(self)

        def serve(pixel_values):
            return dict(self(pixel_values, training=False).items())

        archive.add_endpoint("serve", serve, input_signature=signature)
        archive.write_out(os.fspath(filepath))


class TFViTModel(TFViTPreTrainedModel):
    """The bare ViT encoder in Keras: `last_hidden_state` and, with the pooling layer, `pooler_output`.

    Example:
        >>> import numpy as np
        >>> from vit import ViTConfig, TFViTModel
        >>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
        ...                    num_attention_heads=4, intermediate_size=64)
        >>> model = TFViTModel(config)
        >>> model(np.zeros((1, 3, 32, 32), np.float32)).last_hidden_state.shape
        TensorShape([1, 17, 32])
    """

    head = "base"
    hf_architecture = "ViTModel"

    def __init__(self, config: ViTConfig, add_pooling_layer: bool = True, use_mask_token: bool = False,
                 dtype: Any = None, **kwargs: Any) -> None:
        super().__init__(config, dtype=dtype, **kwargs)
        self.add_pooling_layer, self.use_mask_token = add_pooling_layer, use_mask_token
        self.embeddings = TFViTEmbeddings(config, use_mask_token, name="embeddings")
        # CLIP norms the embeddings before the blocks.
        self.pre_layernorm = LayerNorm(config.hidden_size, config.layer_norm_eps, name="pre_layernorm") if config.pre_layernorm else None
        self.encoder = TFViTEncoder(config, name="encoder")
        self.layernorm = LayerNorm(config.hidden_size, config.layer_norm_eps, name="layernorm") if not config.use_fc_norm else None
        self.fc_norm = LayerNorm(config.hidden_size, config.layer_norm_eps, name="fc_norm") if config.use_fc_norm else None
        self.map_head = TFViTAttentionPoolingHead(config, name="map_head") if config.pooling == "map" else None
        self.pooler = TFViTPooler(config, name="pooler") if add_pooling_layer and config.pooler_dense else None
        self.post_init()

    def get_input_embeddings(self) -> TFViTPatchEmbeddings:
        return self.embeddings.patch_embeddings

    def forward_features(self, pixel_values, bool_masked_pos=None, interpolate_pos_encoding: bool = False) -> tf.Tensor:
        """The normalised token sequence (batch, tokens, hidden)."""
        return self(pixel_values, bool_masked_pos=bool_masked_pos,
                    interpolate_pos_encoding=interpolate_pos_encoding).last_hidden_state

    def pool(self, sequence: tf.Tensor) -> tf.Tensor:
        """The class token, the mean of the patch tokens or the attention pool; then fc_norm (timm, CLIP)."""
        if self.config.pooling == "cls":
            pooled = sequence[:, 0]
        elif self.config.pooling == "map":
            pooled = self.map_head(sequence)
        else:
            pooled = tf.reduce_mean(sequence[:, self.config.num_prefix_tokens:], axis=1)
        return self.fc_norm(pooled) if self.fc_norm is not None else pooled

    def call(
        self,
        pixel_values,
        bool_masked_pos=None,
        head_mask=None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
        training: bool = False,
    ):
        output_attentions, output_hidden_states, return_dict = self._output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        pixel_values, grid, bool_masked_pos, head_mask = self._check_inputs(
            pixel_values, bool_masked_pos, head_mask, interpolate_pos_encoding
        )
        if bool_masked_pos is not None and self.embeddings.mask_token is None:
            raise ValueError("bool_masked_pos needs a mask token; build the model with use_mask_token=True.")
        embedded = self.embeddings(pixel_values, grid=grid, bool_masked_pos=bool_masked_pos, training=training)
        if self.pre_layernorm is not None:
            embedded = self.pre_layernorm(embedded)
        sequence, hidden_states, attentions = self.encoder(
            embedded, head_mask=head_mask, output_attentions=bool(output_attentions),
            output_hidden_states=bool(output_hidden_states), training=training,
        )
        if self.layernorm is not None:
            sequence = self.layernorm(sequence)
        if self.pooler is not None:
            pooled = self.pooler(self.pool(sequence))
        else:  # DINOv2, CLIP, SigLIP: the pooled token itself is the pooler output
            pooled = self.pool(sequence) if self.add_pooling_layer and not self.config.pooler_dense else None
        output = BaseModelOutputWithPooling(
            last_hidden_state=sequence,
            pooler_output=pooled,
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
        )
        return output if return_dict else output.to_tuple()


class TFViTForMaskedImageModeling(TFViTPreTrainedModel):
    """ViT with SimMIM's decoder in Keras (HF has none in TF): reconstructs the pixels of masked patches.

    Example:
        >>> import numpy as np
        >>> from vit import ViTConfig, TFViTForMaskedImageModeling
        >>> config = ViTConfig(image_size=32, patch_size=8, encoder_stride=8, hidden_size=32,
        ...                    num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
        >>> model = TFViTForMaskedImageModeling(config)
        >>> mask = np.zeros((1, 16), bool); mask[:, ::2] = True
        >>> model(np.zeros((1, 3, 32, 32), np.float32), bool_masked_pos=mask).reconstruction.shape
        TensorShape([1, 3, 32, 32])
    """

    head = "mim"
    hf_architecture = "ViTForMaskedImageModeling"

    def __init__(self, config: ViTConfig, dtype: Any = None, **kwargs: Any) -> None:
        super().__init__(config, dtype=dtype, **kwargs)
        with skip_init():
            self.vit = TFViTModel(config, add_pooling_layer=False, use_mask_token=True, dtype=dtype, name="vit")
        self.decoder = _Decoder(config, name="decoder")
        self.post_init()

    def call(
        self,
        pixel_values,
        bool_masked_pos=None,
        head_mask=None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
        training: bool = False,
    ):
        output_attentions, output_hidden_states, return_dict = self._output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        if bool_masked_pos is not None:
            check_mim_stride(self.config)
        outputs = self.vit(pixel_values, bool_masked_pos=bool_masked_pos, head_mask=head_mask,
                           output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                           interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, training=training)
        pixel_values = tf.cast(tf.convert_to_tensor(pixel_values), self.compute_dtype)
        (ph, pw) = self.config.patch_hw
        grid = (pixel_values.shape[2] // ph, pixel_values.shape[3] // pw)
        patches = outputs.last_hidden_state[:, self.config.num_prefix_tokens:]
        feature_map = tf.reshape(tf.transpose(patches, (0, 2, 1)), (tf.shape(patches)[0], -1, *grid))
        reconstruction = self.decoder(feature_map)
        loss = None
        if bool_masked_pos is not None:
            mask = tf.reshape(tf.cast(bool_masked_pos, reconstruction.dtype), (-1, *grid))
            mask = tf.repeat(tf.repeat(mask, ph, axis=1), pw, axis=2)[:, None]
            target = pixel_values[:, :, : grid[0] * ph, : grid[1] * pw]
            l1 = tf.abs(target - reconstruction)
            loss = tf.reduce_sum(l1 * mask) / (tf.reduce_sum(mask) + 1e-5) / self.config.num_channels
        output = MaskedImageModelingOutput(loss, reconstruction, outputs.hidden_states, outputs.attentions)
        return output if return_dict else output.to_tuple()


class TFViTForImageClassification(TFViTPreTrainedModel):
    """ViT with a linear classifier on the pooled token; `labels` give a loss by `problem_type`.

    Example:
        >>> import numpy as np
        >>> from vit import ViTConfig, TFViTForImageClassification
        >>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
        ...                    num_attention_heads=4, intermediate_size=64, num_labels=10)
        >>> model = TFViTForImageClassification(config)
        >>> model(np.zeros((2, 3, 32, 32), np.float32), labels=np.array([1, 2])).logits.shape
        TensorShape([2, 10])
    """

    head = "classification"
    hf_architecture = "ViTForImageClassification"

    def __init__(self, config: ViTConfig, dtype: Any = None, **kwargs: Any) -> None:
        super().__init__(config, dtype=dtype, **kwargs)
        self.num_labels = config.num_labels
        with skip_init():
            self.vit = TFViTModel(config, add_pooling_layer=config.classifier_input == "pooler", dtype=dtype, name="vit")
        width = classifier_width(config)
        self.classifier = Dense(width, config.num_labels, name="classifier") if config.num_labels > 0 else None
        self.post_init()

    def forward_head(self, outputs: BaseModelOutputWithPooling) -> tf.Tensor:
        if self.config.classifier_input == "pooler":
            features = outputs.pooler_output
        elif self.config.classifier_input == "cls_and_mean":  # DINOv2: class token and mean of the patch tokens
            sequence = outputs.last_hidden_state
            features = tf.concat([sequence[:, 0], tf.reduce_mean(sequence[:, self.config.num_prefix_tokens:], axis=1)],
                                 axis=-1)
        else:
            features = self.vit.pool(outputs.last_hidden_state)
        return self.classifier(features) if self.classifier is not None else features

    def call(
        self,
        pixel_values,
        head_mask=None,
        labels=None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
        training: bool = False,
    ):
        output_attentions, output_hidden_states, return_dict = self._output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        outputs = self.vit(pixel_values, head_mask=head_mask, output_attentions=output_attentions,
                           output_hidden_states=output_hidden_states, interpolate_pos_encoding=interpolate_pos_encoding,
                           return_dict=True, training=training)
        logits = self.forward_head(outputs)
        loss = self.loss_from_labels(logits, labels) if labels is not None else None
        output = ImageClassifierOutput(loss, logits, outputs.hidden_states, outputs.attentions)
        return output if return_dict else output.to_tuple()

    def loss_from_labels(self, logits: tf.Tensor, labels) -> tf.Tensor:
        """The same losses and mean reduction as the PyTorch twin."""
        labels = tf.convert_to_tensor(labels)
        logits = tf.cast(logits, tf.float32)
        problem = resolve_problem_type(self.config, labels.dtype.is_integer)
        if problem == "regression":
            labels = tf.cast(labels, logits.dtype)
            if self.num_labels == 1:
                return tf.reduce_mean(tf.square(tf.squeeze(logits) - tf.squeeze(labels)))
            return tf.reduce_mean(tf.square(logits - labels))
        if problem == "single_label_classification":
            flat = tf.reshape(tf.cast(labels, tf.int32), (-1,))
            return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(flat, tf.reshape(logits, (-1, self.num_labels))))
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(tf.cast(labels, logits.dtype), logits))


class TFViTWithProjection(TFViTPreTrainedModel):
    """ViT with a linear projection (no bias) of the pooled token into an embedding space, as CLIP's image tower.

    Example:
        >>> import numpy as np
        >>> from vit import ViTConfig, TFViTWithProjection
        >>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
        ...                    num_attention_heads=4, intermediate_size=64, projection_dim=24)
        >>> TFViTWithProjection(config)(np.zeros((1, 3, 32, 32), np.float32)).image_embeds.shape
        TensorShape([1, 24])
    """

    head = "projection"
    hf_architecture = "ViTWithProjection"

    def __init__(self, config: ViTConfig, dtype: Any = None, **kwargs: Any) -> None:
        super().__init__(config, dtype=dtype, **kwargs)
        if config.projection_dim is None:
            raise ConfigError(f"{type(self).__name__} needs `projection_dim` in the config (CLIP's projection_dim).")
        with skip_init():
            self.vit = TFViTModel(config, add_pooling_layer=False, dtype=dtype, name="vit")
        self.visual_projection = Dense(config.hidden_size, config.projection_dim, use_bias=False, name="visual_projection")
        self.post_init()

    def call(
        self,
        pixel_values,
        head_mask=None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
        training: bool = False,
    ):
        output_attentions, output_hidden_states, return_dict = self._output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        outputs = self.vit(pixel_values, head_mask=head_mask, output_attentions=output_attentions,
                           output_hidden_states=output_hidden_states, interpolate_pos_encoding=interpolate_pos_encoding,
                           return_dict=True, training=training)
        image_embeds = self.visual_projection(self.vit.pool(outputs.last_hidden_state))
        output = ImageEmbeddingsOutput(image_embeds, outputs.last_hidden_state, outputs.hidden_states, outputs.attentions)
        return output if return_dict else output.to_tuple()


class TFViTForImageClassificationWithTeacher(TFViTPreTrainedModel):
    """ViT with DeiT's two heads: one on the class token, one on the distillation token; `logits` is their mean.

    Example:
        >>> import numpy as np
        >>> from vit import ViTConfig, TFViTForImageClassificationWithTeacher
        >>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
        ...                    num_attention_heads=4, intermediate_size=64, num_labels=5, distillation_token=True)
        >>> model = TFViTForImageClassificationWithTeacher(config)
        >>> model(np.zeros((1, 3, 32, 32), np.float32)).distillation_logits.shape
        TensorShape([1, 5])
    """

    head = "distilled"
    hf_architecture = "ViTForImageClassificationWithTeacher"

    def __init__(self, config: ViTConfig, dtype: Any = None, **kwargs: Any) -> None:
        super().__init__(config, dtype=dtype, **kwargs)
        if not config.distillation_token or config.num_labels == 0:
            raise ConfigError(f"{type(self).__name__} needs distillation_token=True and num_labels > 0 in the config.")
        with skip_init():
            self.vit = TFViTModel(config, add_pooling_layer=False, dtype=dtype, name="vit")
        self.cls_classifier = Dense(config.hidden_size, config.num_labels, name="cls_classifier")
        self.distillation_classifier = Dense(config.hidden_size, config.num_labels, name="distillation_classifier")
        self.post_init()

    def call(
        self,
        pixel_values,
        head_mask=None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
        training: bool = False,
    ):
        output_attentions, output_hidden_states, return_dict = self._output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        outputs = self.vit(pixel_values, head_mask=head_mask, output_attentions=output_attentions,
                           output_hidden_states=output_hidden_states, interpolate_pos_encoding=interpolate_pos_encoding,
                           return_dict=True, training=training)
        sequence = outputs.last_hidden_state
        cls_logits = self.cls_classifier(sequence[:, 0])
        distillation_logits = self.distillation_classifier(sequence[:, 1])
        output = ImageClassifierWithTeacherOutput((cls_logits + distillation_logits) / 2, cls_logits,
                                                  distillation_logits, outputs.hidden_states, outputs.attentions)
        return output if return_dict else output.to_tuple()


# ----------------------------------------------------------------------------------------- the ViT family
# Each class fixes the family (checked against the config), the head and HF's architecture name; the network
# is the ViT above, configured by the family's config.
class TFCLIPVisionModel(TFViTModel):
    """CLIP's image tower (HF's TFCLIPVisionModel): `pooler_output` is the normed class token."""

    families = ("clip",)
    hf_architecture = "CLIPVisionModel"


class TFCLIPVisionModelWithProjection(TFViTWithProjection):
    """CLIP's image tower with its projection: `image_embeds` (HF has no TF class for it)."""

    families = ("clip",)
    hf_architecture = "CLIPVisionModelWithProjection"


class TFSiglipVisionModel(TFViTModel):
    """SigLIP's image tower: `pooler_output` is the attention pool of the normed tokens (HF has no TF SigLIP)."""

    families = ("siglip",)
    hf_architecture = "SiglipVisionModel"


class TFDinov2Model(TFViTModel):
    """DINOv2: LayerScale, a mask token, position embeddings resized to any input (HF has no TF DINOv2)."""

    families = ("dinov2",)
    hf_architecture = "Dinov2Model"

    def __init__(self, config: ViTConfig, add_pooling_layer: bool = True, use_mask_token: bool = True,
                 dtype: Any = None, **kwargs: Any) -> None:
        super().__init__(config, add_pooling_layer, use_mask_token, dtype=dtype, **kwargs)


class TFDinov2ForImageClassification(TFViTForImageClassification):
    """DINOv2 with HF's linear head on the class token and the mean of the patch tokens."""

    families = ("dinov2",)
    hf_architecture = "Dinov2ForImageClassification"


class TFDinov2WithRegistersModel(TFDinov2Model):
    """DINOv2 with register tokens."""

    families = ("dinov2_with_registers",)
    hf_architecture = "Dinov2WithRegistersModel"


class TFDinov2WithRegistersForImageClassification(TFViTForImageClassification):
    """DINOv2 with registers and HF's linear head on the class token and the mean of the patch tokens."""

    families = ("dinov2_with_registers",)
    hf_architecture = "Dinov2WithRegistersForImageClassification"


class TFDeiTModel(TFViTModel):
    """DeiT (HF's TFDeiTModel): class and distillation tokens, a dense pooler."""

    families = ("deit",)
    hf_architecture = "DeiTModel"


class TFDeiTForImageClassification(TFViTForImageClassification):
    """DeiT with a linear head on the class token (HF's TFDeiTForImageClassification)."""

    families = ("deit",)
    hf_architecture = "DeiTForImageClassification"


class TFDeiTForImageClassificationWithTeacher(TFViTForImageClassificationWithTeacher):
    """DeiT with the class-token and distillation-token heads (HF's TFDeiTForImageClassificationWithTeacher)."""

    families = ("deit",)
    hf_architecture = "DeiTForImageClassificationWithTeacher"
