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

The family columns (`clip`, `siglip`, `dinov2`, `deit`) give the module's name in that family's HF checkpoints
(`Alias` when the family also stores the tensor differently: as an `nn.Embedding` table, without the leading
singleton axes, or as one part of a fused projection). `family_state_from_layout` and `state_to_family` read and
write a family's HF names from these columns; a family is never a second table. The `openclip` column names the
image tower of an OpenCLIP state dict, which `vit.convert.from_openclip` reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .config import ViTConfig

DENSE, CONV, NORM, EMBEDDING = "dense", "conv", "norm", "embedding"
# "base" (ViTModel), "classification", "mim", "projection" (CLIPVisionModelWithProjection) and "distilled"
# (DeiTForImageClassificationWithTeacher).
HEADS = ("base", "classification", "mim", "projection", "distilled")
HEAD_SCOPES = ("classification", "mim", "projection", "distilled")
HEAD_PREFIX = "vit."
# How a family's HF checkpoints store a tensor when not as the row's kind says: "table" is an nn.Embedding
# (`weight` / TF `embeddings` / Flax `embedding`), "mha_in" is nn.MultiheadAttention's fused `in_proj_weight`.
TABLE, MHA_IN = "table", "mha_in"
# OpenCLIP's `visual.proj` is a bare (in, out) matrix applied as `x @ proj`: a dense kernel without leaf names.
MATMUL = "matmul"


@dataclass(frozen=True)
class Alias:
    """A module's name in a family's HF checkpoints, and how that family stores it.

    `squeeze` leading singleton axes of the canonical array are absent (CLIP's class_embedding is (D,), not
    (1, 1, D)); `name` ending in `#k` is part k of three stacked along the output axis (a fused projection).
    """

    name: str
    kind: str | None = None
    squeeze: int = 0


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
    # The family columns: the module's name in HF's CLIP, SigLIP, DINOv2 (with and without registers) and DeiT
    # checkpoints; None where the family has no such module.
    clip: str | Alias | None = None
    siglip: str | Alias | None = None
    dinov2: str | Alias | None = None
    deit: str | Alias | None = None
    # The module's name in an OpenCLIP state dict's image tower (`visual.*`), a source layout read by vit.convert.
    openclip: str | Alias | None = None


_CLIP_LAYER = "vision_model.encoder.layers.{i}."  # CLIP's and SigLIP's block prefix
_BV_MAP = "MAPHead_0/"  # big_vision's attention-pool head
_OC_LAYER = "visual.transformer.resblocks.{i}."  # OpenCLIP's block prefix

MODULES: tuple[Module, ...] = (
    Module("embeddings.cls_token", EMBEDDING, "cls_token", "cls",
           clip=Alias("vision_model.embeddings.class_embedding", squeeze=2), dinov2="embeddings.cls_token",
           deit="embeddings.cls_token", openclip=Alias("visual.class_embedding", squeeze=2)),
    Module("embeddings.distillation_token", EMBEDDING, "dist_token", None, scope="distillation_token",
           deit="embeddings.distillation_token"),
    Module("embeddings.register_tokens", EMBEDDING, "reg_token", None, scope="register_tokens",
           dinov2="embeddings.register_tokens"),
    Module("embeddings.mask_token", EMBEDDING, None, None, scope="mask_token",
           dinov2=Alias("embeddings.mask_token", squeeze=1), deit="embeddings.mask_token"),
    Module("embeddings.position_embeddings", EMBEDDING, "pos_embed", "Transformer/posembed_input/pos_embedding",
           clip=Alias("vision_model.embeddings.position_embedding", TABLE, squeeze=1),
           siglip=Alias("vision_model.embeddings.position_embedding", TABLE, squeeze=1),
           dinov2="embeddings.position_embeddings", deit="embeddings.position_embeddings",
           openclip=Alias("visual.positional_embedding", squeeze=1)),
    Module("embeddings.patch_embeddings.projection", CONV, "patch_embed.proj", "embedding",
           clip="vision_model.embeddings.patch_embedding", siglip="vision_model.embeddings.patch_embedding",
           dinov2="embeddings.patch_embeddings.projection", deit="embeddings.patch_embeddings.projection",
           openclip="visual.conv1"),
    Module("pre_layernorm", NORM, "norm_pre", None, scope="pre_layernorm", clip="vision_model.pre_layrnorm",
           openclip="visual.ln_pre"),
    Module("encoder.layer.{i}.layernorm_before", NORM, "blocks.{i}.norm1", "Transformer/encoderblock_{i}/LayerNorm_0", "layer",
           clip=_CLIP_LAYER + "layer_norm1", siglip=_CLIP_LAYER + "layer_norm1", dinov2="encoder.layer.{i}.norm1",
           deit="encoder.layer.{i}.layernorm_before", openclip=_OC_LAYER + "ln_1"),
    Module("encoder.layer.{i}.attention.attention.query", DENSE, "blocks.{i}.attn.qkv#0",
           "Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/query", "layer", "out",
           clip=_CLIP_LAYER + "self_attn.q_proj", siglip=_CLIP_LAYER + "self_attn.q_proj",
           dinov2="encoder.layer.{i}.attention.attention.query", deit="encoder.layer.{i}.attention.attention.query",
           openclip=Alias(_OC_LAYER + "attn#0", MHA_IN)),
    Module("encoder.layer.{i}.attention.attention.key", DENSE, "blocks.{i}.attn.qkv#1",
           "Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/key", "layer", "out",
           clip=_CLIP_LAYER + "self_attn.k_proj", siglip=_CLIP_LAYER + "self_attn.k_proj",
           dinov2="encoder.layer.{i}.attention.attention.key", deit="encoder.layer.{i}.attention.attention.key",
           openclip=Alias(_OC_LAYER + "attn#1", MHA_IN)),
    Module("encoder.layer.{i}.attention.attention.value", DENSE, "blocks.{i}.attn.qkv#2",
           "Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/value", "layer", "out",
           clip=_CLIP_LAYER + "self_attn.v_proj", siglip=_CLIP_LAYER + "self_attn.v_proj",
           dinov2="encoder.layer.{i}.attention.attention.value", deit="encoder.layer.{i}.attention.attention.value",
           openclip=Alias(_OC_LAYER + "attn#2", MHA_IN)),
    Module("encoder.layer.{i}.attention.output.dense", DENSE, "blocks.{i}.attn.proj",
           "Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/out", "layer", "in",
           clip=_CLIP_LAYER + "self_attn.out_proj", siglip=_CLIP_LAYER + "self_attn.out_proj",
           dinov2="encoder.layer.{i}.attention.output.dense", deit="encoder.layer.{i}.attention.output.dense",
           openclip=_OC_LAYER + "attn.out_proj"),
    Module("encoder.layer.{i}.layer_scale1.lambda1", EMBEDDING, "blocks.{i}.ls1.gamma", None, "layer_scale",
           dinov2="encoder.layer.{i}.layer_scale1.lambda1", openclip=_OC_LAYER + "ls_1.gamma"),
    Module("encoder.layer.{i}.layernorm_after", NORM, "blocks.{i}.norm2", "Transformer/encoderblock_{i}/LayerNorm_2", "layer",
           clip=_CLIP_LAYER + "layer_norm2", siglip=_CLIP_LAYER + "layer_norm2", dinov2="encoder.layer.{i}.norm2",
           deit="encoder.layer.{i}.layernorm_after", openclip=_OC_LAYER + "ln_2"),
    Module("encoder.layer.{i}.intermediate.dense", DENSE, "blocks.{i}.mlp.fc1",
           "Transformer/encoderblock_{i}/MlpBlock_3/Dense_0", "layer_mlp",
           clip=_CLIP_LAYER + "mlp.fc1", siglip=_CLIP_LAYER + "mlp.fc1", dinov2="encoder.layer.{i}.mlp.fc1",
           deit="encoder.layer.{i}.intermediate.dense", openclip=_OC_LAYER + "mlp.c_fc"),
    Module("encoder.layer.{i}.output.dense", DENSE, "blocks.{i}.mlp.fc2",
           "Transformer/encoderblock_{i}/MlpBlock_3/Dense_1", "layer_mlp",
           clip=_CLIP_LAYER + "mlp.fc2", siglip=_CLIP_LAYER + "mlp.fc2", dinov2="encoder.layer.{i}.mlp.fc2",
           deit="encoder.layer.{i}.output.dense", openclip=_OC_LAYER + "mlp.c_proj"),
    # SwiGLU (DINOv2-g): weights_in holds the gate and the value halves side by side, as HF and timm keep them.
    Module("encoder.layer.{i}.mlp.weights_in", DENSE, "blocks.{i}.mlp.fc1", None, "layer_swiglu",
           dinov2="encoder.layer.{i}.mlp.weights_in"),
    Module("encoder.layer.{i}.mlp.weights_out", DENSE, "blocks.{i}.mlp.fc2", None, "layer_swiglu",
           dinov2="encoder.layer.{i}.mlp.weights_out"),
    Module("encoder.layer.{i}.layer_scale2.lambda1", EMBEDDING, "blocks.{i}.ls2.gamma", None, "layer_scale",
           dinov2="encoder.layer.{i}.layer_scale2.lambda1", openclip=_OC_LAYER + "ls_2.gamma"),
    Module("layernorm", NORM, "norm", "Transformer/encoder_norm", siglip="vision_model.post_layernorm",
           dinov2="layernorm", deit="layernorm"),
    Module("fc_norm", NORM, "fc_norm", None, clip="vision_model.post_layernorm", openclip="visual.ln_post"),
    # The attention-pool (MAP) head: a learned probe attends to the tokens, then a residual MLP (SigLIP).
    Module("map_head.probe", EMBEDDING, "attn_pool.latent", _BV_MAP + "probe", scope="map",
           siglip="vision_model.head.probe"),
    Module("map_head.attention.query", DENSE, "attn_pool.q", _BV_MAP + "MultiHeadDotProductAttention_0/query", "map", "out",
           siglip=Alias("vision_model.head.attention#0", MHA_IN)),
    Module("map_head.attention.key", DENSE, "attn_pool.kv#0", _BV_MAP + "MultiHeadDotProductAttention_0/key", "map", "out",
           siglip=Alias("vision_model.head.attention#1", MHA_IN)),
    Module("map_head.attention.value", DENSE, "attn_pool.kv#1", _BV_MAP + "MultiHeadDotProductAttention_0/value", "map", "out",
           siglip=Alias("vision_model.head.attention#2", MHA_IN)),
    Module("map_head.attention.out_proj", DENSE, "attn_pool.proj", _BV_MAP + "MultiHeadDotProductAttention_0/out", "map", "in",
           siglip="vision_model.head.attention.out_proj"),
    Module("map_head.layernorm", NORM, "attn_pool.norm", _BV_MAP + "LayerNorm_0", scope="map",
           siglip="vision_model.head.layernorm"),
    Module("map_head.mlp.fc1", DENSE, "attn_pool.mlp.fc1", _BV_MAP + "MlpBlock_0/Dense_0", scope="map",
           siglip="vision_model.head.mlp.fc1"),
    Module("map_head.mlp.fc2", DENSE, "attn_pool.mlp.fc2", _BV_MAP + "MlpBlock_0/Dense_1", scope="map",
           siglip="vision_model.head.mlp.fc2"),
    Module("pooler.dense", DENSE, "pre_logits.fc", "pre_logits", scope="pooler", deit="pooler.dense"),
    Module("visual_projection", DENSE, None, None, scope="projection", clip="visual_projection",
           openclip=Alias("visual.proj", MATMUL)),
    Module("classifier", DENSE, "head", "head", scope="classification", dinov2="classifier", deit="classifier"),
    Module("cls_classifier", DENSE, "head", None, scope="distilled", deit="cls_classifier"),
    Module("distillation_classifier", DENSE, "head_dist", None, scope="distilled", deit="distillation_classifier"),
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
    qkv = ((d, d), (d,)) if config.qkv_bias else ((d, d),)
    patch = ((d, c, ph, pw), (d,)) if config.patch_embedding_bias else ((d, c, ph, pw),)
    labels = config.num_labels
    return {
        "embeddings.cls_token": ((1, 1, d),),
        "embeddings.distillation_token": ((1, 1, d),),
        "embeddings.register_tokens": ((1, config.num_register_tokens, d),),
        "embeddings.mask_token": ((1, 1, d),),
        "embeddings.position_embeddings": ((1, config.num_positions, d),),
        "embeddings.patch_embeddings.projection": patch,
        "pre_layernorm": ((d,), (d,)),
        "encoder.layer.{i}.layernorm_before": ((d,), (d,)),
        "encoder.layer.{i}.attention.attention.query": qkv,
        "encoder.layer.{i}.attention.attention.key": qkv,
        "encoder.layer.{i}.attention.attention.value": qkv,
        "encoder.layer.{i}.attention.output.dense": ((d, d), (d,)),
        "encoder.layer.{i}.layer_scale1.lambda1": ((d,),),
        "encoder.layer.{i}.layernorm_after": ((d,), (d,)),
        "encoder.layer.{i}.intermediate.dense": ((mlp, d), (mlp,)),
        "encoder.layer.{i}.output.dense": ((d, mlp), (d,)),
        "encoder.layer.{i}.mlp.weights_in": ((2 * mlp, d), (2 * mlp,)),
        "encoder.layer.{i}.mlp.weights_out": ((d, mlp), (d,)),
        "encoder.layer.{i}.layer_scale2.lambda1": ((d,),),
        "layernorm": ((d,), (d,)),
        "fc_norm": ((d,), (d,)),
        "map_head.probe": ((1, 1, d),),
        "map_head.attention.query": ((d, d), (d,)),
        "map_head.attention.key": ((d, d), (d,)),
        "map_head.attention.value": ((d, d), (d,)),
        "map_head.attention.out_proj": ((d, d), (d,)),
        "map_head.layernorm": ((d,), (d,)),
        "map_head.mlp.fc1": ((mlp, d), (mlp,)),
        "map_head.mlp.fc2": ((d, mlp), (d,)),
        "pooler.dense": ((config.pooler_output_size, d), (config.pooler_output_size,)),
        "visual_projection": ((config.projection_dim or d, d),),  # CLIP's projection has no bias
        "classifier": ((labels, classifier_width(config)), (labels,)),
        "cls_classifier": ((labels, d), (labels,)),
        "distillation_classifier": ((labels, d), (labels,)),
        "decoder.0": ((c * sh * sw, d, 1, 1), (c * sh * sw,)),
    }


def classifier_width(config: ViTConfig) -> int:
    if config.classifier_input == "pooler":
        return config.pooler_output_size
    return 2 * config.hidden_size if config.classifier_input == "cls_and_mean" else config.hidden_size


def _config_has(module: Module, config: ViTConfig) -> bool:
    """Whether this config's architecture has the module at all (before the head's choices)."""
    name, scope = module.name, module.scope
    return {
        "embeddings.cls_token": config.class_token,
        "distillation_token": config.distillation_token,
        "register_tokens": config.num_register_tokens > 0,
        "pre_layernorm": config.pre_layernorm,
        "layer_scale": config.layer_scale_init_value is not None,
        "layer_mlp": not config.use_swiglu_ffn,
        "layer_swiglu": config.use_swiglu_ffn,
        "layernorm": not config.use_fc_norm,
        "fc_norm": config.use_fc_norm,
        "map": config.pooling == "map",
        "pooler": config.pooler_dense,
        "projection": config.projection_dim is not None,
    }.get(name if name in ("embeddings.cls_token", "layernorm", "fc_norm") else scope, True)


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
        if not _config_has(module, config):
            continue
        if module.scope == "mask_token" and not use_mask_token:
            continue
        if module.scope == "pooler" and not add_pooling_layer:
            continue
        if module.scope in HEAD_SCOPES and (module.scope != head or (head != "mim" and config.num_labels == 0
                                                                        and module.scope != "projection")):
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
        owner = "" if module.scope in HEAD_SCOPES else prefix
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


# ------------------------------------------------------------------------------------------ families
# Which column of MODULES names each family's tensors (DINOv2 with registers shares DINOv2's names).
FAMILY_COLUMNS = {"clip": "clip", "siglip": "siglip", "dinov2": "dinov2", "dinov2_with_registers": "dinov2",
                  "deit": "deit", "openclip": "openclip"}  # openclip: a source layout (vit.convert), not a config family
# Where HF's head models keep the backbone (ViT's `vit.`, HF's `base_model_prefix`); CLIP's and SigLIP's names
# start with their tower, `vision_model.`, in every class.
FAMILY_HEAD_PREFIX = {"vit": HEAD_PREFIX, "clip": "", "siglip": "", "dinov2": "dinov2.",
                      "dinov2_with_registers": "dinov2_with_registers.", "deit": "deit.", "openclip": ""}
# HF's TF classes keep the backbone in one main layer named after `base_model_prefix` (TFDeiTModel: `deit/...`,
# TFCLIPVisionModel and TFCLIPModel: `clip/vision_model/...`, `clip/visual_projection/...`); heads of the other
# families are top-level layers beside it (`classifier/kernel`). SigLIP and DINOv2 (with registers) have no HF TF
# class: their main layers follow the same rule.
FAMILY_TF_MAIN_LAYER = {"clip": "clip", "siglip": "siglip", "dinov2": "dinov2",
                        "dinov2_with_registers": "dinov2_with_registers", "deit": "deit"}
# Leaf names of the storage kinds that only families use, per layout. A raw nn.Parameter such as
# nn.MultiheadAttention's `in_proj_weight` (SigLIP's MAP head) keeps its PyTorch name and layout in TF and Flax: that
# is what HF's own PyTorch-to-TF/Flax renaming gives it (only `weight` of a Linear/Conv/Embedding/LayerNorm becomes
# kernel/embeddings/gamma; transformers.modeling_tf_pytorch_utils, modeling_flax_pytorch_utils). HF has no TF or
# Flax SigLIP, so this is the layout its convention would give.
FAMILY_LEAVES = {TABLE: {"pt": ("weight",), "tf": ("embeddings",), "flax": ("embedding",)},
                 MHA_IN: {layout: ("in_proj_weight", "in_proj_bias") for layout in ("pt", "tf", "flax")},
                 MATMUL: {"pt": (None,)}}
# The storage kinds whose arrays are in PyTorch layout in every layout (an embedding table is (rows, D) everywhere).
RAW_STORAGE = (TABLE, MHA_IN)
# The text tower of a two-tower checkpoint (CLIPModel, SiglipModel): read past, never loaded.
TOWER_PREFIXES = ("text_model", "text_projection", "logit_scale", "logit_bias")


def family_alias(spec: ParamSpec, family: str) -> Alias | None:
    """The family column's entry for a parameter's module, or None if the family has no such module."""
    value = getattr(spec.module, FAMILY_COLUMNS[family])
    return Alias(value) if isinstance(value, str) else value


def family_name(spec: ParamSpec, family: str, layout: str = "pt") -> tuple[str, int | None, Alias]:
    """(the parameter's name in the family's HF layout, its part of a fused tensor or None, the alias).

    Raises KeyError when the family has no such parameter (or not in that layout).
    """
    alias = family_alias(spec, family)
    if alias is None:
        raise KeyError(f"HF's {family} models have no parameter for {spec.name}")
    base, _, part = alias.name.partition("#")
    base = base.format(i=spec.layer)
    if spec.name.startswith(HEAD_PREFIX):
        base = FAMILY_HEAD_PREFIX[family] + base
    kind = alias.kind or spec.kind
    if kind in FAMILY_LEAVES:
        leaf = FAMILY_LEAVES[kind][layout][spec.leaf]
    else:
        leaf = None if kind == EMBEDDING else LEAVES[layout][kind][spec.leaf]
    name = base if leaf is None else f"{base}.{leaf}"
    if layout != "pt":
        name = name.replace(".", "/")
        if layout == "tf":
            name = re.sub(r"(^|/)(layers?)/(\d+)(/|$)", r"\1\2_._\3\4", name)
    return name, int(part) if part else None, alias


def family_state_from_layout(
    arrays: dict[str, np.ndarray], config: ViTConfig, layout: str
) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """A family's HF tensors {name: array} (layout "pt", "tf" or "flax") -> canonical state dict.

    Returns (state, unknown names kept as they are, names of the other tower that were left out). A name
    that is not found is also tried without its first path component (HF's TF main-layer name, `clip/`).
    """
    lookup: dict[str, dict[int | None, tuple[ParamSpec, Alias]]] = {}
    for spec in all_known_specs(config).values():
        try:
            name, part, alias = family_name(spec, config.family, layout)
        except KeyError:
            continue
        lookup.setdefault(name, {}).setdefault(part, (spec, alias))
    sep = "." if layout == "pt" else "/"
    state, unknown, tower = {}, [], []
    for name, array in arrays.items():
        candidates = [name] + ([name.split(sep, 1)[1]] if sep in name else [])
        found = next((c for c in candidates if c in lookup), None)
        if found is None:
            if any(c.split(sep)[0] in TOWER_PREFIXES for c in candidates):
                tower.append(name)
            else:
                unknown.append(name)
                state[name] = array
            continue
        parts = lookup[found]
        for part, (spec, alias) in parts.items():
            # A fused tensor is split in PyTorch layout (parts stacked along the output axis, axis 0).
            value = _family_from_layout(array, spec, alias, layout)
            value = np.split(value, len(parts), axis=0)[part] if part is not None else value
            state[spec.name] = value.reshape((1,) * alias.squeeze + value.shape) if alias.squeeze else value
    return state, unknown, tower


def _family_from_layout(array: np.ndarray, spec: ParamSpec, alias: Alias, layout: str) -> np.ndarray:
    """A family's stored array (a whole fused tensor too) -> PyTorch layout; by the storage kind, never the rank."""
    return array if alias.kind in RAW_STORAGE else from_layout(array, spec.kind, spec.leaf, layout)


def _family_to_layout(array: np.ndarray, spec: ParamSpec, alias: Alias, layout: str) -> np.ndarray:
    """The inverse of `_family_from_layout`."""
    return array if alias.kind in RAW_STORAGE else to_layout(array, spec.kind, spec.leaf, layout)


def state_to_family(
    state: dict[str, np.ndarray], specs: dict[str, ParamSpec], family: str, layout: str = "pt"
) -> dict[str, np.ndarray]:
    """A canonical state dict -> the family's HF names and arrays in a layout: "pt" (what HF's PyTorch class
    loads), "tf" (the weight paths of HF's TF class, main layer first: `deit/encoder/layer_._0/...`) or "flax"
    (the `/`-joined paths of HF's Flax params tree). The inverse of `family_state_from_layout`.

    Raises KeyError when the family has no place for a parameter, or only some parts of a fused tensor are given.
    """
    out: dict[str, np.ndarray] = {}
    fused: dict[str, dict[int, tuple[ParamSpec, Alias, np.ndarray]]] = {}
    for name, array in state.items():
        spec = specs[name]
        name_in_family, part, alias = family_name(spec, family, layout)
        if layout == "tf" and (not FAMILY_HEAD_PREFIX[family] or (
                not spec.name.startswith(HEAD_PREFIX) and spec.module.scope not in HEAD_SCOPES)):
            name_in_family = f"{FAMILY_TF_MAIN_LAYER[family]}/{name_in_family}"
        if alias.squeeze:
            array = array.reshape(array.shape[alias.squeeze:])
        if part is None:
            out[name_in_family] = _family_to_layout(array, spec, alias, layout)
        else:
            fused.setdefault(name_in_family, {})[part] = (spec, alias, array)
    for name_in_family, parts in fused.items():
        if sorted(parts) != list(range(len(parts))) or len(parts) < 2:
            raise KeyError(f"{name_in_family} is fused from several parameters, but only parts {sorted(parts)} are given")
        spec, alias, _ = parts[0]
        whole = np.concatenate([parts[k][2] for k in sorted(parts)], axis=0)  # stacked in PyTorch layout
        out[name_in_family] = _family_to_layout(whole, spec, alias, layout)
    return out
