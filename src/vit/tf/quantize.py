"""`quantize()`: an int8 copy of a TensorFlow ViT for CPU inference under XLA, the twin of `vit.flax.quantize`.

`mode="dynamic"` (the one mode), as in Flax: every projection of the encoder blocks (query, key and value as one
product, the attention output, the MLP or SwiGLU layers) and the patch projection become `Int8Dense` layers:

- their weights are int8, symmetric, with one float32 scale per output channel, quantised once when the copy is
  made (`vit.quantization`, shared with Flax);
- at run time each row of their input (one token, or one patch, of one image) is quantised to int8 with its own
  scale, the product runs as an int8 x int8 -> int32 matmul, and the result is rescaled to float32 before the
  float32 bias is added. An image's logits therefore do not depend on the rest of its batch. With the same int8
  weights and the same rounding (half to even) as the Flax copy, the two agree to about 1e-3 of the largest logit
  (tests/equivalence/test_int8_equivalence.py), against about 2e-2 between either and float32.

Everything else stays float32: LayerNorm, softmax, GELU and the heads after the encoder (well under 1% of the
FLOPs). `attention_dtype=tf.bfloat16` runs attention's two products as bf16 x bf16 -> float32, for CPUs with bf16
units (AVX512-BF16, AMX).

Run it under XLA, `tf.function(jit_compile=True)`: XLA CPU runs the products as int8 x int8 -> int32 dots, on VNNI
or AMX where the CPU has them. (TensorFlow 2.21's XLA makes no YNNPACK fusions, which JAX's does, so this copy gains
less over float32 than the Flax one; `make bench` measures both.) In eager and graph mode the copy gives the same numbers, but TF's own int8 MatMul is slow there (the ViT-S/16
copy took 4.6x as long as the float32 model in graph mode, measured on a 2-core AMX Xeon).
This is TF's in-framework int8 route; `vit export tflite --quantize int8` is the other (LiteRT). `make bench`
measures both (`bench_low_precision`).

The copy is an instance of a subclass of the model's class (`isinstance(copy, type(model))`), takes the same
inputs and returns the same outputs. It is frozen: later edits to the original do not reach it. It is for
inference only (no `training=True`), and it cannot be saved: the parameter table has no int8 kernels, so
`save_pretrained` raises instead of writing something else.

Example:
    >>> import numpy as np
    >>> import tensorflow as tf
    >>> from vit import ViTConfig, TFViTForImageClassification
    >>> from vit.tf.quantize import quantize
    >>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
    ...                    num_attention_heads=4, intermediate_size=64, num_labels=3)
    >>> int8 = quantize(TFViTForImageClassification(config))
    >>> run = tf.function(lambda x: int8(x).logits, jit_compile=True)
    >>> run(np.zeros((2, 3, 32, 32), np.float32)).shape
    TensorShape([2, 3])
"""

from __future__ import annotations

import copy as copy_module
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..pretrained import skip_init
from ..quantization import INT8_MAX, Int8Copy, fused_kernel, int8_class
from .modeling import Dense, TFViTModel, TFViTPreTrainedModel, TFViTSelfAttention, _ConvProjection

MODES = ("dynamic",)


class Int8Dense(keras.layers.Layer):
    """The int8 twin of `Dense`: y = (int8(x) @ int8 kernel) * scales + bias, int32 accumulation, float32 result.

    Made from float32 layers by `from_dense`; the kernel is quantised there, once, and held as constants.
    """

    def __init__(self, kernel: np.ndarray, scale: np.ndarray, bias: np.ndarray | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kernel = tf.constant(kernel, tf.int8)
        self.scale = tf.constant(scale, tf.float32)
        self.bias = tf.constant(bias, tf.float32) if bias is not None else None
        self.built = True

    @classmethod
    def from_dense(cls, *denses: Dense | _ConvProjection, name: str | None = None) -> Int8Dense:
        """One int8 layer computing the given float layers' outputs side by side (a conv kernel (h, w, in, out)
        as the (h * w * in, out) matmul `_ConvProjection` runs), named `name` or as the first of them."""
        return cls(*fused_kernel([dense.kernel.numpy() for dense in denses],
                                 [None if dense.bias is None else dense.bias.numpy() for dense in denses]),
                   name=name or denses[0].name)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        flat = tf.reshape(tf.cast(x, tf.float32), (-1, x.shape[-1]))
        # One scale per row (token): see the module docstring for why not one per tensor.
        amax = tf.reduce_max(tf.abs(flat), axis=-1, keepdims=True)
        row_scale = tf.where(amax > 0, amax / INT8_MAX, 1.0)
        rows = tf.cast(tf.clip_by_value(tf.round(flat / row_scale), -INT8_MAX, INT8_MAX), tf.int8)
        y = tf.cast(tf.linalg.matmul(rows, self.kernel, output_type=tf.int32), tf.float32) * row_scale * self.scale
        if self.bias is not None:
            y = y + self.bias
        return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [self.kernel.shape[-1]]], axis=0))


class Int8SelfAttention(TFViTSelfAttention):
    """The copy's attention: q, k and v from one `Int8Dense`, cast to `attention_dtype` for attention's products.

    Made from a float32 `TFViTSelfAttention` by `from_attention`; everything after the projections is inherited.
    """

    def __init__(self, qkv: Int8Dense, num_heads: int, head_dim: int, dropout_rate: float, attention_dtype: Any,
                 **kwargs: Any) -> None:
        keras.layers.Layer.__init__(self, **kwargs)  # not TFViTSelfAttention's: it would make float projections
        self.qkv = qkv
        self.num_heads, self.head_dim = num_heads, head_dim
        # In attention's dtype: a float32 Dropout would cast bf16 probabilities back to float32 (Keras autocasts).
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=attention_dtype.name)
        self.attention_dtype = attention_dtype
        self.built = True

    @classmethod
    def from_attention(cls, attention: TFViTSelfAttention, attention_dtype: Any) -> Int8SelfAttention:
        qkv = Int8Dense.from_dense(attention.query, attention.key, attention.value, name="qkv")
        return cls(qkv, attention.num_heads, attention.head_dim, attention.dropout.rate, attention_dtype,
                   name=attention.name)

    def project(self, hidden_states: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        qkv = tf.reshape(self.qkv(hidden_states), (tf.shape(hidden_states)[0], -1, 3, self.num_heads, self.head_dim))
        qkv = tf.cast(qkv, self.attention_dtype)
        return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]


class Int8Inference(Int8Copy):
    """Mixed into the int8 copy's class (see `quantize`): inference only, frozen, never saved or exported."""

    quantize_module = __name__

    def call(self, *args: Any, training: bool = False, **kwargs: Any):
        if training:
            raise ValueError("This int8 copy (vit.tf.quantize.quantize) is for inference only: call it without "
                             "training=True, or train the float32 model and quantize it again.")
        return super().call(*args, **kwargs)

    def _canonical_variables(self) -> dict:  # what canonical_state_dict, save_pretrained and canonical_name_of read
        raise self.not_saveable()

    def export(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            f"{type(self).__name__} is an int8 copy and cannot be exported; for int8 outside TensorFlow export the "
            "float32 model with `vit export tflite --quantize int8`.")


def _check_model(model: TFViTPreTrainedModel) -> None:
    if not isinstance(model, TFViTPreTrainedModel):
        raise TypeError(f"quantize() takes one of vit's TensorFlow models (TFViTModel, TFViTForImageClassification, "
                        f"...), got {type(model).__name__}.")
    if isinstance(model, Int8Inference):
        raise ValueError("This model is already an int8 copy; quantize() the float32 model it was made from.")
    dtypes = {model.compute_dtype, model.variable_dtype} | {v.dtype for v in model.weights}
    if dtypes != {"float32"}:
        raise ValueError(f"quantize() takes a float32 model; this one has {sorted(dtypes)}. Load it with "
                         "dtype=\"float32\" (the default).")


def _swap(root: keras.layers.Layer, kind: type, int8_twin) -> None:
    """Replace every layer of exactly type `kind` under `root` by `int8_twin(layer)`, in place."""
    for parent in root._flatten_layers(include_self=True, recursive=True):
        for name, child in list(vars(parent).items()):
            if type(child) is kind:
                setattr(parent, name, int8_twin(child))
                parent._layers.remove(child)  # Keras tracks the new layer on setattr but keeps the old one


def quantize(model: TFViTPreTrainedModel, mode: str = "dynamic", attention_dtype: Any = None) -> TFViTPreTrainedModel:
    """An int8 copy of `model` for CPU inference under XLA (see the module docstring); `model` is unchanged.

    `attention_dtype`: None or float32 (the default), or bfloat16 (`tf.bfloat16` or "bfloat16"), for attention's
    two products.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: quantize() for TensorFlow offers {MODES} (static, calibrated activation "
                         "scales are PyTorch's: vit.pt.quantize).")
    wanted = tf.float32 if attention_dtype is None else tf.as_dtype(attention_dtype)
    if wanted not in (tf.float32, tf.bfloat16):
        raise ValueError(f"attention_dtype={attention_dtype!r}: the int8 copy runs attention in float32 (None) or "
                         "bfloat16 (tf.bfloat16).")
    _check_model(model)
    # A new float32 model with its own config and a copy of the weights (nothing is shared), whose layers are then
    # swapped; it becomes an instance of the int8 class at the end.
    options = {}
    if isinstance(model, TFViTModel):
        options["add_pooling_layer"], options["use_mask_token"] = model.model_flags
    with skip_init():
        copy = type(model)(copy_module.deepcopy(model.config), **options)
    copy.load_canonical_state_dict(model.canonical_state_dict())
    backbone = copy if isinstance(copy, TFViTModel) else copy.vit
    # Attention first: its query, key and value become one Int8Dense, so the Dense swap leaves them alone.
    _swap(backbone.encoder, TFViTSelfAttention, lambda attention: Int8SelfAttention.from_attention(attention, wanted))
    _swap(backbone.encoder, Dense, Int8Dense.from_dense)
    _swap(backbone.embeddings, _ConvProjection, Int8Dense.from_dense)
    # The model (and its backbone, a model too) also tracks every variable through its by-name index, which serves
    # the parameter table (no int8 kernels there): untracked, the swapped-out float kernels are freed.
    for part in copy._flatten_layers(include_self=True, recursive=True):
        if isinstance(part, TFViTPreTrainedModel):
            for variable in part._variables_by_name.values():
                part._untrack_variable(variable)
            del part._variables_by_name
    copy.trainable = False
    copy.__class__ = int8_class(Int8Inference, type(model))
    return copy
