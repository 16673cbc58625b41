"""The one table of ViT parameters, and every layout derived from it.

Canonical names are Hugging Face PyTorch's (`vit.encoder.layer.0.attention.attention.query.weight`) and
canonical arrays are in PyTorch layout. Each row of `MODULES` names one module and its *kind*; the kind,
never the array's rank, decides how its arrays are transposed or reshaped into another layout:

| kind      | canonical (PyTorch)   | TF / Flax / original JAX          |
|-----------|-----------------------|-----------------------------------|
| dense     | weight (out, in)      | kernel (in, out)                  |
| conv      | weight (out, in, h, w)| kernel (h, w, in, out)            |
| norm      | weight, bias          | gamma, beta (TF) / scale, bias    |
| embedding | the tensor itself     | the same tensor                   |

The other columns give the module's name in timm and in the original google-research code; the
conversion module (`vit.convert`) reads them, so there is no second copy of the table anywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .config import ViTConfig

DENSE, CONV, NORM, EMBEDDING = "dense", "conv", "norm", "embedding"
HEADS = ("base", "classification", "mim")
HEAD_PREFIX = "vit."


@dataclass(frozen=True)
class Module:
    """One row of the table. `{i}` in a name stands for the layer index."""

    name: str  # canonical module path, relative to ViTModel
    kind: str
    timm: str | None  # timm's module name ("" part selectors are handled by vit.convert)
    jax: str | None  # google-research vision_transformer name, old Flax numbering
    # Which models own it: "backbone" (all), "layer" (all, once per layer), "mask_token" (ViTModel with
    # use_mask_token), "pooler" (ViTModel with add_pooling_layer), or a head ("classification", "mim").
    scope: str = "backbone"
    # The original JAX code keeps attention projections per head: "out" splits the output axis into
    # (heads, head_dim) (query/key/value), "in" splits the input axis (the output projection).
    jax_heads: str | None = None


MODULES: tuple[Module, ...] = (
    Module("embeddings.cls_token", EMBEDDING, "cls_token", "cls"),
    Module("embeddings.mask_token", EMBEDDING, None, None, scope="mask_token"),
    Module("embeddings.position_embeddings", EMBEDDING, "pos_embed", "Transformer/posembed_input/pos_embedding"),
    Module("embeddings.patch_embeddings.projection", CONV, "patch_embed.proj", "embedding"),
    Module("encoder.layer.{i}.layernorm_before", NORM, "blocks.{i}.norm1", "Transformer/encoderblock_{i}/LayerNorm_0", "layer"),
    Module("encoder.layer.{i}.attention.attention.query", DENSE, "blocks.{i}.attn.qkv#0",
           "Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/query", "layer", "out"),
    Module("encoder.layer.{i}.attention.attention.key", DENSE, "blocks.{i}.attn.qkv#1",
           "Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/key", "layer", "out"),
    Module("encoder.layer.{i}.attention.attention.value", DENSE, "blocks.{i}.attn.qkv#2",
           "Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/value", "layer", "out"),
    Module("encoder.layer.{i}.attention.output.dense", DENSE, "blocks.{i}.attn.proj",
           "Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/out", "layer", "in"),
    Module("encoder.layer.{i}.layernorm_after", NORM, "blocks.{i}.norm2", "Transformer/encoderblock_{i}/LayerNorm_2", "layer"),
    Module("encoder.layer.{i}.intermediate.dense", DENSE, "blocks.{i}.mlp.fc1",
           "Transformer/encoderblock_{i}/MlpBlock_3/Dense_0", "layer"),
    Module("encoder.layer.{i}.output.dense", DENSE, "blocks.{i}.mlp.fc2",
           "Transformer/encoderblock_{i}/MlpBlock_3/Dense_1", "layer"),
    Module("layernorm", NORM, "norm", "Transformer/encoder_norm"),
    Module("fc_norm", NORM, "fc_norm", None),
    Module("pooler.dense", DENSE, "pre_logits.fc", "pre_logits", scope="pooler"),
    Module("classifier", DENSE, "head", "head", scope="classification"),
    Module("decoder.0", CONV, None, None, scope="mim"),
)

# Leaf names of each kind's arrays, per layout.
LEAVES = {
    "pt": {DENSE: ("weight", "bias"), CONV: ("weight", "bias"), NORM: ("weight", "bias")},
    "tf": {DENSE: ("kernel", "bias"), CONV: ("kernel", "bias"), NORM: ("gamma", "beta")},
    "flax": {DENSE: ("kernel", "bias"), CONV: ("kernel", "bias"), NORM: ("scale", "bias")},
}
LEAVES["timm"] = LEAVES["pt"]
LEAVES["jax"] = LEAVES["flax"]


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a concrete model: canonical name, kind, leaf index (0 weight, 1 bias), shape."""

    name: str
    module: Module
    layer: int | None
    leaf: int  # 0 = weight/kernel/scale or the embedding itself, 1 = bias
    shape: tuple[int, ...]

    @property
    def kind(self) -> str:
        return self.module.kind


def _module_shapes(config: ViTConfig) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Canonical shapes of every module's (weight, bias), for this config."""
    d, mlp, c = config.hidden_size, config.intermediate_size, config.num_channels
    ph, pw = config.patch_hw
    sh, sw = config.stride_hw
    n_pos = config.num_patches + config.num_prefix_tokens
    qkv = ((d, d), (d,)) if config.qkv_bias else ((d, d),)
    return {
        "embeddings.cls_token": ((1, 1, d),),
        "embeddings.mask_token": ((1, 1, d),),
        "embeddings.position_embeddings": ((1, n_pos, d),),
        "embeddings.patch_embeddings.projection": ((d, c, ph, pw), (d,)),
        "encoder.layer.{i}.layernorm_before": ((d,), (d,)),
        "encoder.layer.{i}.attention.attention.query": qkv,
        "encoder.layer.{i}.attention.attention.key": qkv,
        "encoder.layer.{i}.attention.attention.value": qkv,
        "encoder.layer.{i}.attention.output.dense": ((d, d), (d,)),
        "encoder.layer.{i}.layernorm_after": ((d,), (d,)),
        "encoder.layer.{i}.intermediate.dense": ((mlp, d), (mlp,)),
        "encoder.layer.{i}.output.dense": ((d, mlp), (d,)),
        "layernorm": ((d,), (d,)),
        "fc_norm": ((d,), (d,)),
        "pooler.dense": ((config.pooler_output_size, d), (config.pooler_output_size,)),
        "classifier": (
            (config.num_labels, classifier_width(config)),
            (config.num_labels,),
        ),
        "decoder.0": ((c * sh * sw, d, 1, 1), (c * sh * sw,)),
    }


def classifier_width(config: ViTConfig) -> int:
    return config.pooler_output_size if config.classifier_input == "pooler" else config.hidden_size


def model_modules(
    config: ViTConfig, head: str, add_pooling_layer: bool | None = None, use_mask_token: bool | None = None
) -> list[Module]:
    """The modules that a model with this head and config owns, in table order."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if add_pooling_layer is None:
        add_pooling_layer = head == "base" or (head == "classification" and config.classifier_input == "pooler")
    if use_mask_token is None:
        use_mask_token = head == "mim"
    wanted = []
    for module in MODULES:
        if module.name == "embeddings.cls_token" and not config.class_token:
            continue
        if module.scope == "mask_token" and not use_mask_token:
            continue
        if module.name == "layernorm" and config.use_fc_norm:
            continue
        if module.name == "fc_norm" and not config.use_fc_norm:
            continue
        if module.scope == "pooler" and not add_pooling_layer:
            continue
        if module.scope == "classification" and (head != "classification" or config.num_labels == 0):
            continue
        if module.scope == "mim" and head != "mim":
            continue
        wanted.append(module)
    return wanted


def parameter_specs(
    config: ViTConfig, head: str, add_pooling_layer: bool | None = None, use_mask_token: bool | None = None
) -> dict[str, ParamSpec]:
    """Every parameter of a model, by canonical name, with its canonical shape.

    Heads' names carry HF's `vit.` prefix on the backbone (`vit.embeddings.cls_token`); ViTModel's do not.
    """
    shapes = _module_shapes(config)
    prefix = "" if head == "base" else HEAD_PREFIX
    specs: dict[str, ParamSpec] = {}
    for module in model_modules(config, head, add_pooling_layer, use_mask_token):
        owner = "" if module.scope in ("classification", "mim") else prefix
        layers = range(config.num_hidden_layers) if "{i}" in module.name else [None]
        for layer in layers:
            base = module.name.format(i=layer)
            for leaf, shape in enumerate(shapes[module.name]):
                if module.kind == EMBEDDING:
                    name = owner + base
                else:
                    name = f"{owner}{base}.{LEAVES['pt'][module.kind][leaf]}"
                specs[name] = ParamSpec(name, module, layer, leaf, shape)
    return specs


def all_known_specs(config: ViTConfig) -> dict[str, ParamSpec]:
    """The union over heads, with and without the `vit.` prefix: every name a ViT checkpoint may hold."""
    known: dict[str, ParamSpec] = {}
    for head in HEADS:
        for pooler in (True, False):
            for with_prefix in (True, False):
                for name, spec in parameter_specs(config, head, pooler, True).items():
                    if not with_prefix and name.startswith(HEAD_PREFIX):
                        name = name[len(HEAD_PREFIX):]
                        spec = ParamSpec(name, spec.module, spec.layer, spec.leaf, spec.shape)
                    known.setdefault(name, spec)
    return known


# ------------------------------------------------------------------------------------------ layouts
def layout_name(spec: ParamSpec, layout: str) -> str:
    """The parameter's name in HF's TF layout ("tf", `/`-separated, `layer_._0`) or Flax layout ("flax")."""
    if layout == "pt":
        return spec.name
    parts = spec.name.split(".")
    if spec.kind != EMBEDDING:
        parts[-1] = LEAVES[layout][spec.kind][spec.leaf]
    out = "/".join(parts)
    if layout == "tf":
        out = re.sub(r"(^|/)layer/(\d+)(/|$)", r"\1layer_._\2\3", out)
    elif layout != "flax":
        raise ValueError(f"unknown layout {layout!r}")
    return out


def to_layout(array: np.ndarray, kind: str, leaf: int, layout: str) -> np.ndarray:
    """Canonical (PyTorch) array -> the layout's array. The kind, not the rank, decides."""
    if layout in ("pt", "timm") or leaf == 1 or kind in (NORM, EMBEDDING):
        return array
    if kind == DENSE:
        return np.ascontiguousarray(array.T)
    if kind == CONV:
        return np.ascontiguousarray(array.transpose(2, 3, 1, 0))
    raise ValueError(f"unknown kind {kind!r}")


def from_layout(array: np.ndarray, kind: str, leaf: int, layout: str) -> np.ndarray:
    """The layout's array -> canonical (PyTorch) array; the inverse of `to_layout`."""
    if layout in ("pt", "timm") or leaf == 1 or kind in (NORM, EMBEDDING):
        return array
    if kind == DENSE:
        return np.ascontiguousarray(array.T)
    if kind == CONV:
        return np.ascontiguousarray(array.transpose(3, 2, 0, 1))
    raise ValueError(f"unknown kind {kind!r}")


def state_to_layout(state: dict[str, np.ndarray], specs: dict[str, ParamSpec], layout: str) -> dict[str, np.ndarray]:
    """A canonical state dict -> {layout name: array} for the given specs (names outside them are kept as is)."""
    out = {}
    for name, array in state.items():
        spec = specs[name]
        out[layout_name(spec, layout)] = to_layout(array, spec.kind, spec.leaf, layout)
    return out


def state_from_layout(
    arrays: dict[str, np.ndarray], config: ViTConfig, layout: str
) -> tuple[dict[str, np.ndarray], list[str]]:
    """{layout name: array} -> canonical state dict. Returns the names that no ViT parameter has."""
    known = all_known_specs(config)
    by_layout = {layout_name(spec, layout): spec for spec in known.values()}
    state, unknown = {}, []
    for name, array in arrays.items():
        spec = by_layout.get(name)
        if spec is None:
            unknown.append(name)
            state[name] = array
        else:
            state[spec.name] = from_layout(array, spec.kind, spec.leaf, layout)
    return state, unknown


def nest(flat: dict[str, np.ndarray]) -> dict:
    """{"a/b/c": x} -> {"a": {"b": {"c": x}}}: the Flax params tree."""
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def flatten(tree: dict, prefix: str = "") -> dict:
    """The inverse of `nest`."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat
