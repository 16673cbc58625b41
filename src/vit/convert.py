"""Conversion of timm, original google-research / big_vision and OpenCLIP checkpoints, to and from the canonical
layout.

Every name comes from the `timm`, `jax` and `openclip` columns of the one parameter table (`vit.params.MODULES`);
this module only adds the layout rules those columns need: fused projections (timm's `qkv` and `attn_pool.kv`,
OpenCLIP's `in_proj_weight`), timm's two SwiGLU layouts, and the original code's per-head attention kernels, old
and new module numbering, scanned layers and position embeddings without a class row.

Whatever a state dict reveals is inferred (patch size, depth, width, MLP size, qkv bias, class token,
pooling, fc_norm, pre-logits, labels). What it does not reveal is asked for by name, and a tensor that no
supported architecture has is an error naming it, never silently dropped.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from .checkpoint import find_weights_file, fit_state_dict, read_canonical, save_checkpoint
from .config import ViTConfig
from .errors import CheckpointError
from .params import (
    DENSE,
    EMBEDDING,
    LEAVES,
    MATMUL,
    MODULES,
    ParamSpec,
    family_name,
    from_layout,
    parameter_specs,
    to_layout,
)
from .processor import ViTImageProcessor
from .resize import resize_position_embeddings

logger = logging.getLogger("vit")

# timm's head counts for its standard widths (ViT-Ti/S/B/L/H all use 64-wide heads except H and L's 16).
TIMM_STANDARD_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}
TIMM_UNSUPPORTED = (
    (".q_norm.", "qk-norm"),
    (".k_norm.", "qk-norm"),
    (".q_bias", "separate q/v biases"),
    (".mlp.norm.", "a norm inside the MLP (timm's scale_mlp)"),
)
# LayerScale's init value is not in a trained checkpoint (only the trained factors are); it only matters for
# training from scratch, so converted models get HF DINOv2's default.
CONVERTED_LAYER_SCALE_INIT = 1.0
# timm's global_pool values that vit has; 'avgmax', 'max' and '' (no pooling) it does not.
TIMM_POOLING = {"token": "cls", "avg": "mean", "map": "map"}
# The released checkpoints use old Flax numbering; current Flax numbers the block's submodules anew.
JAX_NEW_TO_OLD = {"MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1", "LayerNorm_1": "LayerNorm_2",
                  "MlpBlock_0": "MlpBlock_3"}
JAX_OLD_TO_NEW = {v: k for k, v in JAX_NEW_TO_OLD.items()}


@dataclass
class Converted:
    """A checkpoint in canonical form: what `save` writes as an HF folder."""

    config: ViTConfig
    state: dict[str, np.ndarray]
    processor: ViTImageProcessor
    head: str = "classification"

    def save(self, folder: str) -> None:
        architecture = {"classification": "ViTForImageClassification", "mim": "ViTForMaskedImageModeling"}.get(
            self.head, "ViTModel")
        save_checkpoint(folder, self.config, self.state, self.head, ("safetensors",), architecture,
                        extra_files={"preprocessor_config.json": self.processor.to_json_string()})


def _foreign_name(spec: ParamSpec, column: str) -> tuple[str, int | None]:
    """(name in timm or original-JAX layout, part of a fused tensor or None) for a canonical parameter."""
    template = getattr(spec.module, column)
    if template is None:
        raise CheckpointError(f"{spec.name} has no {column} equivalent.")
    base, _, part = template.format(i=spec.layer).partition("#")
    if spec.kind != EMBEDDING:
        base = f"{base}{'.' if column == 'timm' else '/'}{LEAVES[column][spec.kind][spec.leaf]}"
    return base, int(part) if part else None


def _specs(config: ViTConfig, head: str = "classification") -> dict[str, ParamSpec]:
    return parameter_specs(config, head)


def _fused_parts(column: str) -> dict[str, int]:
    """{name template of a fused tensor: how many table rows share it} for a column ('qkv#0..2', 'kv#0..1')."""
    parts: dict[str, int] = {}
    for module in MODULES:
        value = getattr(module, column)
        name = value if isinstance(value, str) or value is None else value.name
        if name and "#" in name:
            base = name.partition("#")[0]
            parts[base] = parts.get(base, 0) + 1
    return parts


def _split_part(array: np.ndarray, spec: ParamSpec, column: str, part: int) -> np.ndarray:
    """Part `part` of a fused tensor, stacked along the output axis; the table says how many parts there are."""
    value = getattr(spec.module, column)
    template = (value if isinstance(value, str) else value.name).partition("#")[0]
    return np.split(array, _fused_parts(column)[template], axis=0)[part]


def _geometry(grid: tuple[int, int], ph: int, pw: int) -> dict[str, Any]:
    """image_size, patch_size and encoder_stride for a patch grid: ints when square, [h, w] pairs when not."""
    square_patch = ph == pw
    image = grid[0] * ph if square_patch and grid[0] == grid[1] else [grid[0] * ph, grid[1] * pw]
    patch = ph if square_patch else [ph, pw]
    return {"image_size": image, "patch_size": patch, "encoder_stride": patch}


def _resized(state: dict[str, np.ndarray], config: ViTConfig, image_size: Any, method: str) -> ViTConfig:
    """The config at `image_size`, with the position embeddings in `state` resized to its grid."""
    if image_size is None:
        return config
    target = config.copy(image_size=image_size)
    name = "vit.embeddings.position_embeddings"
    if config.grid_hw != target.grid_hw:
        state[name] = resize_position_embeddings(state[name], config.grid_hw, target.grid_hw,
                                                 target.num_prefix_tokens, method).astype(state[name].dtype)
    return target


def _position_layout(rows: int, prefix_rows: int, patch_hw: tuple[int, int], image_size: Any,
                     what: str) -> tuple[tuple[int, int], bool]:
    """(patch grid, whether the first `prefix_rows` rows belong to the prefix tokens) of a position embedding with
    `rows` rows; `prefix_rows` is the class token (1), or the class and distillation tokens (2).

    An `image_size` whose grid fits the rows says which; otherwise a square grid is inferred, and
    `image_size` is only the size to resize to.
    """
    prefix_rows = int(prefix_rows)
    if image_size is not None:
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        grid = (h // patch_hw[0], w // patch_hw[1])
        if prefix_rows and grid[0] * grid[1] == rows - prefix_rows:
            return grid, True
        if grid[0] * grid[1] == rows:
            return grid, False
    for has_class_row in ((True, False) if prefix_rows else (False,)):
        n = rows - prefix_rows * int(has_class_row)
        side = int(round(n**0.5))
        if side * side == n:
            return (side, side), has_class_row
    raise CheckpointError(
        f"The {what} position embedding has {rows} rows, which is not a square grid of patches; pass "
        "--image-size HEIGHT WIDTH (image_size=[h, w]) with the size it was trained at."
    )


# --------------------------------------------------------------------------------------------------- timm
def _check_timm_supported(state: dict[str, np.ndarray]) -> None:
    for name in state:
        for marker, feature in TIMM_UNSUPPORTED:
            if marker in name:
                raise CheckpointError(f"timm tensor {name!r} belongs to {feature}, which vit does not support.")


def _pack_timm_swiglu(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """timm's `SwiGLU` (separate `fc1_g` gate and `fc1_x` value) -> `SwiGLUPacked`'s one `fc1` (gate rows first),
    the layout of the table's `weights_in`; both compute act(gate) * value."""
    out = dict(state)
    for name in [n for n in state if ".mlp.fc1_g." in n]:
        value_name = name.replace(".fc1_g.", ".fc1_x.")
        if value_name not in state:
            raise CheckpointError(f"timm tensor {name!r} (SwiGLU's gate) has no {value_name!r} (its value half).")
        out[name.replace(".fc1_g.", ".fc1.")] = np.concatenate([out.pop(name), out.pop(value_name)], axis=0)
    stray = [n for n in out if ".mlp.fc1_x." in n]
    if stray:
        raise CheckpointError(f"timm tensors {stray} (SwiGLU's value half) have no fc1_g gate half.")
    return out


def from_timm(
    state: dict[str, np.ndarray],
    num_attention_heads: int | None = None,
    image_size: int | list[int] | None = None,
    pooling: str | None = None,
    layer_norm_eps: float = 1e-6,
    hidden_act: str = "gelu",
    num_labels: int | None = None,
    resize_method: str = "bicubic_antialias",
    processor: dict[str, Any] | None = None,
    global_pool: str | None = None,
) -> Converted:
    """A timm `VisionTransformer` (or DeiT's `VisionTransformerDistilled`) state dict -> canonical.

    The tensors reveal LayerScale (`ls1.gamma`), register tokens (`reg_token`), position embeddings without
    prefix rows (`no_embed_class`), the attention-pool head (`attn_pool.*`, pooling "map"), the absence of a class
    token, the pre-norm (`norm_pre`), SwiGLU (packed `fc1` twice as wide as `fc2`'s input, or `fc1_g`/`fc1_x`)
    and DeiT's distillation token and head (`dist_token`, `head_dist`). The activation and LayerNorm eps are not
    in the tensors: `hidden_act` and `layer_norm_eps` (timm's defaults here). `image_size` also resizes the
    position grid.

    `global_pool` is timm's own setting (a timm hub folder's config.json has it). A state dict with a class token
    and no fc_norm does not reveal whether timm pooled the class token or averaged the tokens, so without
    `global_pool` or `pooling` it is refused rather than guessed.
    """
    _check_timm_supported(state)
    if "patch_embed.proj.weight" not in state or "pos_embed" not in state:
        raise CheckpointError("Not a timm VisionTransformer state dict: no patch_embed.proj.weight / pos_embed.")
    state = _pack_timm_swiglu(state)
    hidden, channels, ph, pw = state["patch_embed.proj.weight"].shape
    depth = len({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    if depth == 0:
        raise CheckpointError("The timm checkpoint has no transformer blocks (no 'blocks.0.*' tensors).")
    if num_attention_heads is None:
        if hidden not in TIMM_STANDARD_HEADS:
            raise CheckpointError(
                f"timm's fused qkv does not reveal the number of attention heads (width {hidden} is not a standard "
                "timm width); pass --num-attention-heads N."
            )
        num_attention_heads = TIMM_STANDARD_HEADS[hidden]
        warnings.warn(f"Assuming timm's standard {num_attention_heads} heads for width {hidden}; pass "
                      "--num-attention-heads if the model differs.", stacklevel=2)
    class_token = "cls_token" in state
    distillation_token = "dist_token" in state
    registers = state["reg_token"].shape[1] if "reg_token" in state else 0
    fc_norm = "fc_norm.weight" in state
    attention_pool = "attn_pool.latent" in state
    # timm's SwiGLUPacked: fc1 holds the gate and the value, so it is twice as wide as fc2's input.
    mlp_in, mlp_out = state["blocks.0.mlp.fc1.weight"].shape[0], state["blocks.0.mlp.fc2.weight"].shape[1]
    swiglu = mlp_in == 2 * mlp_out
    prefix_rows = int(class_token) + int(distillation_token)
    if registers:
        grid, covers_prefix = _position_layout(state["pos_embed"].shape[1], prefix_rows + registers, (ph, pw),
                                               image_size, "timm")
        if covers_prefix:
            raise CheckpointError(
                "timm tensor 'pos_embed' has rows for the register tokens (reg_tokens with no_embed_class=False), "
                "which vit does not support: vit's register tokens, like HF's and DINOv2's, have no position "
                "embedding. If the grid is not square instead, pass --image-size HEIGHT WIDTH."
            )
    grid, has_prefix_rows = _position_layout(state["pos_embed"].shape[1], prefix_rows, (ph, pw), image_size, "timm")
    # timm's no_embed_class: the position embeddings cover the patches only; the prefix tokens get none.
    no_embed_class = prefix_rows > 0 and not has_prefix_rows
    if no_embed_class and image_size is None:
        # The same rows could be a class row plus a non-square grid; only the image size tells them apart.
        warnings.warn(
            f"timm tensor 'pos_embed' has no rows for the prefix tokens: read as no_embed_class on a {grid[0]}x"
            f"{grid[1]} grid ({grid[0] * ph}x{grid[1] * pw} images). If the model has a class row on a non-square grid "
            "instead, pass --image-size HEIGHT WIDTH.", stacklevel=2)
    if attention_pool:
        if pooling not in (None, "map"):
            raise CheckpointError(f"The checkpoint has an attention-pool head (attn_pool.*), which is its pooling; "
                                  f"drop --pooling {pooling}.")
        pooling = "map"
        latent = state["attn_pool.latent"].shape[1]
        if latent != 1:
            raise CheckpointError(f"timm tensor 'attn_pool.latent' has {latent} latents; vit's attention-pool "
                                  "head has one (timm's default latent_len=1).")
        pool_mlp = state.get("attn_pool.mlp.fc1.weight")
        if pool_mlp is not None and pool_mlp.shape[0] != mlp_out:
            raise CheckpointError(
                f"timm's attention-pool MLP is {pool_mlp.shape[0]} wide but the blocks' MLP is {mlp_out}; vit's "
                "attention-pool head uses the blocks' width (timm's default mlp_ratio).")
    if global_pool is not None:
        if global_pool not in TIMM_POOLING:
            raise CheckpointError(f"timm global_pool={global_pool!r} is not supported; vit pools with 'token', 'avg' or 'map'.")
        if pooling is not None and pooling != TIMM_POOLING[global_pool]:
            raise CheckpointError(f"The timm config says global_pool={global_pool!r}, which conflicts with "
                                  f"--pooling {pooling}; drop --pooling.")
        pooling = TIMM_POOLING[global_pool]
    if pooling is None:
        if class_token and not fc_norm:
            # Both global_pool='token' and global_pool='avg' with fc_norm=False give exactly these tensors.
            raise CheckpointError(
                "The timm state dict has a class token and no fc_norm, so it does not say whether the model pools "
                "the class token (timm's global_pool='token') or averages the tokens (global_pool='avg', "
                "fc_norm=False); pass --pooling cls or --pooling mean (pooling=...), or convert the timm folder "
                "whose config.json names global_pool."
            )
        pooling = "mean"  # fc_norm, or no class token: timm averages
    if fc_norm and pooling != "mean":
        raise CheckpointError("The checkpoint has fc_norm, which timm uses only with average pooling; drop --pooling cls.")
    distilled_head = "head_dist.weight" in state
    if distilled_head and not distillation_token:
        raise CheckpointError("timm tensor 'head_dist.weight' (a distillation head) has no 'dist_token'.")
    labels = state["head.weight"].shape[0] if "head.weight" in state else 0
    if num_labels is not None and num_labels != labels:
        raise CheckpointError(f"The checkpoint's head has {labels} classes but --num-labels says {num_labels}.")
    config = ViTConfig(
        hidden_size=hidden, num_hidden_layers=depth, num_attention_heads=num_attention_heads,
        intermediate_size=mlp_out, hidden_act=hidden_act,
        layer_norm_eps=layer_norm_eps, **_geometry(grid, ph, pw), num_channels=channels, qkv_bias="blocks.0.attn.qkv.bias" in state, pooling=pooling, use_fc_norm=fc_norm,
        class_token=class_token, num_labels=labels,
        classifier_input="pooler" if "pre_logits.fc.weight" in state else "sequence",
        pooler_output_size=state["pre_logits.fc.weight"].shape[0] if "pre_logits.fc.weight" in state else None,
        # DeiT's distilled model is HF's DeiT (DeiTForImageClassificationWithTeacher); everything else is a ViT.
        family="deit" if distillation_token else "vit",
        distillation_token=distillation_token,
        num_register_tokens=registers,
        no_embed_class=no_embed_class,
        pre_layernorm="norm_pre.weight" in state,
        layer_scale_init_value=CONVERTED_LAYER_SCALE_INIT if "blocks.0.ls1.gamma" in state else None,
        use_swiglu_ffn=swiglu,
        patch_embedding_bias="patch_embed.proj.bias" in state,
        # The attention pool's output is the pooled output itself (timm's pre-logits, HF SigLIP's pooler_output).
        pooler_dense=not attention_pool or "pre_logits.fc.weight" in state,
    )
    head = "distilled" if distilled_head else "classification"
    canonical, used = {}, set()
    for name, spec in _specs(config, head).items():
        timm_name, part = _foreign_name(spec, "timm")
        if timm_name not in state:
            raise CheckpointError(f"timm checkpoint lacks {timm_name!r} (for {name}).")
        array = state[timm_name]
        if part is not None:
            array = _split_part(array, spec, "timm", part)
        canonical[name] = np.ascontiguousarray(array)
        used.add(timm_name)
    leftover = sorted(set(state) - used)
    if leftover:
        raise CheckpointError(f"timm tensors that vit's ViT has no place for (never dropped silently): {leftover}")
    config = _resized(canonical, config, image_size, resize_method)
    recipe = {"resample": 3, "image_mean": [0.5] * channels, "image_std": [0.5] * channels, **(processor or {})}
    recipe["size"] = dict(zip(("height", "width"), config.image_hw, strict=True))
    return Converted(config, canonical, ViTImageProcessor(**recipe), head)


def _state_head(state: dict[str, np.ndarray]) -> str:
    """The head whose parameters a canonical state holds: DeiT's two classifiers, or the classification head."""
    return "distilled" if "cls_classifier.weight" in state else "classification"


def to_timm(state: dict[str, np.ndarray], config: ViTConfig, swiglu: str = "packed") -> dict[str, np.ndarray]:
    """Canonical -> timm's `VisionTransformer` state dict, with the fused qkv (and attn_pool.kv).

    A distilled DeiT gives `VisionTransformerDistilled`'s names. SwiGLU is written as timm's `SwiGLUPacked`
    (`swiglu="packed"`, one `fc1`, as timm's DINOv2 models have it) or its `SwiGLU` (`"split"`: `fc1_g`, `fc1_x`).
    """
    if swiglu not in ("packed", "split"):
        raise ValueError(f"swiglu must be 'packed' or 'split', got {swiglu!r}")
    out: dict[str, np.ndarray] = {}
    fused: dict[str, dict[int, np.ndarray]] = {}
    for name, spec in _specs(config, _state_head(state)).items():
        timm_name, part = _foreign_name(spec, "timm")
        if part is None:
            out[timm_name] = state[name]
        else:
            fused.setdefault(timm_name, {})[part] = state[name]
    for timm_name, parts in fused.items():
        out[timm_name] = np.concatenate([parts[k] for k in sorted(parts)], axis=0)
    if config.use_swiglu_ffn and swiglu == "split":
        for name in [n for n in out if re.fullmatch(r"blocks\.\d+\.mlp\.fc1\.(weight|bias)", n)]:
            gate, value = np.split(out.pop(name), 2, axis=0)
            out[name.replace(".fc1.", ".fc1_g.")], out[name.replace(".fc1.", ".fc1_x.")] = gate, value
    return out


# ------------------------------------------------------------------------------------------- original JAX
def _normalise_jax_names(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Strip big_vision's `params/` (and a two-tower model's `img/`), unstack scanned layers, and rename new Flax
    numbering to the old one."""
    arrays = {k.removeprefix("params/"): v for k, v in arrays.items()}
    if any(k.startswith("img/") for k in arrays):
        # A SigLIP / LiT checkpoint: the image tower under img/, the text tower (txt/) and the temperature and bias
        # (t, b) beside it. The image tower is converted; the rest is read past.
        others = [k for k in arrays if not k.startswith("img/")]
        if others:
            logger.info("big_vision checkpoint: converting its image tower (img/); %d other tensors (the text "
                        "tower, t, b) are ignored.", len(others))
        arrays = {k.removeprefix("img/"): v for k, v in arrays.items() if k.startswith("img/")}
    out: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        if name.startswith("Transformer/encoderblock/"):
            rest = name[len("Transformer/encoderblock/"):]
            for i in range(array.shape[0]):
                out[f"Transformer/encoderblock_{i}/{rest}"] = array[i]
        else:
            out[name] = array
    if any(k.startswith("Transformer/encoderblock_") and "MultiHeadDotProductAttention_0" in k for k in out):
        renamed = {}
        for name, array in out.items():
            parts = name.split("/")
            if len(parts) > 2 and parts[1].startswith("encoderblock_"):
                parts[2] = JAX_NEW_TO_OLD.get(parts[2], parts[2])
            renamed["/".join(parts)] = array
        out = renamed
    if "pos_embedding" in out:  # big_vision keeps the position embedding at the top level
        out["Transformer/posembed_input/pos_embedding"] = out.pop("pos_embedding")
    return out


def _jax_to_canonical(array: np.ndarray, spec: ParamSpec) -> np.ndarray:
    heads = spec.module.jax_heads
    if heads == "out":  # (in, heads, head_dim) kernel or (heads, head_dim) bias
        array = array.reshape(array.shape[0], -1) if spec.leaf == 0 else array.reshape(-1)
    elif heads == "in" and spec.leaf == 0:  # (heads, head_dim, out)
        array = array.reshape(-1, array.shape[-1])
    return from_layout(array, spec.kind, spec.leaf, "jax")


def _canonical_to_jax(array: np.ndarray, spec: ParamSpec, config: ViTConfig) -> np.ndarray:
    array = to_layout(array, spec.kind, spec.leaf, "jax")
    heads, h, d = spec.module.jax_heads, config.num_attention_heads, config.head_dim
    if heads == "out":
        return array.reshape(array.shape[0], h, d) if spec.leaf == 0 else array.reshape(h, d)
    if heads == "in" and spec.leaf == 0:
        return array.reshape(h, d, array.shape[-1])
    return array


def from_jax(
    arrays: dict[str, np.ndarray],
    image_size: int | list[int] | None = None,
    layer_norm_eps: float = 1e-6,
    hidden_act: str = "gelu_pytorch_tanh",
    num_labels: int | None = None,
    pooling: str | None = None,
    resize_method: str = "linear",
) -> Converted:
    """An original google-research / big_vision ViT checkpoint (flat '/' names) -> canonical.

    The original uses Flax's tanh GELU and LayerNorm eps 1e-6; those are the defaults here, so the import is
    exact. `image_size` also resizes the position grid (the original's linear zoom by default). big_vision's
    attention-pool head (`MAPHead_0`, SigLIP's image tower) becomes pooling "map".
    """
    a = _normalise_jax_names(arrays)
    if "embedding/kernel" not in a or "Transformer/posembed_input/pos_embedding" not in a:
        raise CheckpointError("Not an original ViT checkpoint: no embedding/kernel or position embedding.")
    ph, pw, channels, hidden = a["embedding/kernel"].shape
    depth = len({int(m.group(1)) for k in a if (m := re.match(r"Transformer/encoderblock_(\d+)/", k))})
    if depth == 0:
        raise CheckpointError("The checkpoint has no encoder blocks (no 'Transformer/encoderblock_0/*' tensors).")
    block = "Transformer/encoderblock_0/"
    heads = a[block + "MultiHeadDotProductAttention_1/query/kernel"].shape[1]
    class_token = "cls" in a
    pos = a["Transformer/posembed_input/pos_embedding"]
    grid, has_class_row = _position_layout(pos.shape[1], class_token, (ph, pw), image_size, "original")
    if class_token and not has_class_row:
        # big_vision adds the position embedding before prepending the class token: its row is zero.
        a["Transformer/posembed_input/pos_embedding"] = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
    labels = a["head/kernel"].shape[1] if "head/kernel" in a else 0
    if num_labels is not None and num_labels != labels:
        raise CheckpointError(f"The checkpoint's head has {labels} classes but --num-labels says {num_labels}.")
    pre_logits = "pre_logits/kernel" in a
    attention_pool = "MAPHead_0/probe" in a
    if attention_pool:
        if pooling not in (None, "map"):
            raise CheckpointError(f"The checkpoint has an attention-pool head (MAPHead_0), which is its pooling; "
                                  f"drop --pooling {pooling}.")
        pooling = "map"
        map_heads = a["MAPHead_0/MultiHeadDotProductAttention_0/query/kernel"].shape[1]
        map_mlp = a["MAPHead_0/MlpBlock_0/Dense_0/kernel"].shape[1]
        mlp = a[block + "MlpBlock_3/Dense_0/kernel"].shape[1]
        if (map_heads, map_mlp) != (heads, mlp):
            raise CheckpointError(
                f"The attention-pool head (MAPHead_0) has {map_heads} heads and an MLP {map_mlp} wide, but the "
                f"encoder has {heads} heads and {mlp}; vit's attention-pool head uses the encoder's (big_vision's "
                "default).")
    config = ViTConfig(
        hidden_size=hidden, num_hidden_layers=depth, num_attention_heads=heads,
        intermediate_size=a[block + "MlpBlock_3/Dense_0/kernel"].shape[1], hidden_act=hidden_act,
        layer_norm_eps=layer_norm_eps, **_geometry(grid, ph, pw), num_channels=channels, qkv_bias=block + "MultiHeadDotProductAttention_1/query/bias" in a,
        pooling=pooling or ("cls" if class_token else "mean"), class_token=class_token, num_labels=labels,
        classifier_input="pooler" if pre_logits else "sequence",
        pooler_output_size=a["pre_logits/kernel"].shape[1] if pre_logits else None,
        # The MAP head's output is the pooled output itself (big_vision's pre_logits, HF SigLIP's pooler_output).
        pooler_dense=not attention_pool or pre_logits,
    )
    canonical, used = {}, set()
    for name, spec in _specs(config).items():
        jax_name, _ = _foreign_name(spec, "jax")
        if jax_name not in a:
            raise CheckpointError(f"The checkpoint lacks {jax_name!r} (for {name}).")
        canonical[name] = np.ascontiguousarray(_jax_to_canonical(np.asarray(a[jax_name]), spec)).astype(np.float32)
        used.add(jax_name)
    leftover = sorted(set(a) - used)
    if leftover:
        raise CheckpointError(f"Tensors that vit's ViT has no place for (never dropped silently): {leftover}")
    config = _resized(canonical, config, image_size, resize_method)
    size = dict(zip(("height", "width"), config.image_hw, strict=True))
    recipe = ViTImageProcessor(size=size, resample=2, image_mean=[0.5] * channels, image_std=[0.5] * channels)
    return Converted(config, canonical, recipe)


def to_jax(state: dict[str, np.ndarray], config: ViTConfig, numbering: str = "old") -> dict[str, np.ndarray]:
    """Canonical (classification) -> the original code's flat '/' names, old (released) or new Flax numbering."""
    out = {}
    for name, spec in _specs(config).items():
        jax_name, _ = _foreign_name(spec, "jax")
        if numbering == "new":
            parts = jax_name.split("/")
            if len(parts) > 2 and parts[1].startswith("encoderblock_"):
                parts[2] = JAX_OLD_TO_NEW.get(parts[2], parts[2])
            jax_name = "/".join(parts)
        out[jax_name] = _canonical_to_jax(state[name], spec, config)
    return out


# ----------------------------------------------------------------------------------------------- OpenCLIP
OPENCLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]  # open_clip's OPENAI_DATASET_MEAN / STD
OPENCLIP_STD = [0.26862954, 0.26130258, 0.27577711]
OPENCLIP_UNSUPPORTED = (
    ("visual.trunk.", "a timm trunk (open_clip's TimmModel); convert its visual.trunk.* tensors with --from timm"),
    ("visual.attn_pool", "CoCa's attentional pooler"),
    ("visual.head.", "a timm-style head"),
)
# An OpenCLIP hub folder: open_clip's own config (model_cfg, preprocess_cfg) beside its weights.
OPENCLIP_CONFIG = "open_clip_config.json"
OPENCLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def from_openclip(
    state: dict[str, np.ndarray],
    hidden_act: str | None = None,
    layer_norm_eps: float = 1e-5,
    num_attention_heads: int | None = None,
    image_size: int | list[int] | None = None,
    resize_method: str = "bicubic",
    processor: dict[str, Any] | None = None,
) -> Converted:
    """An OpenCLIP state dict (its image tower, `visual.*`) -> a canonical CLIP vision model with projection.

    open_clip's `VisionTransformer` is CLIP's: `visual.ln_pre` before the blocks, `visual.ln_post` on the class
    token and `visual.proj` (x @ proj, no bias). The text tower is ignored. The activation is not in the tensors
    and differs between OpenAI's weights (quick_gelu) and OpenCLIP's own (gelu), so `hidden_act` is required;
    the LayerNorm eps is open_clip's (1e-5). Class-token pooling, open_clip's default, is assumed.
    """
    for name in state:
        for marker, feature in OPENCLIP_UNSUPPORTED:
            if name.startswith(marker):
                raise CheckpointError(f"OpenCLIP tensor {name!r} belongs to {feature}, which vit does not support.")
    tower = {k: v for k, v in state.items() if k.startswith("visual.")}
    if "visual.conv1.weight" not in tower or "visual.positional_embedding" not in tower:
        raise CheckpointError("Not an OpenCLIP state dict: no visual.conv1.weight / visual.positional_embedding.")
    if len(tower) < len(state):
        logger.info("OpenCLIP state dict: converting its image tower (visual.*); %d tensors of the text tower are "
                    "ignored.", len(state) - len(tower))
    if hidden_act is None:
        raise CheckpointError(
            "An OpenCLIP state dict does not record its activation: pass --hidden-act quick_gelu for OpenAI's CLIP "
            "weights (open_clip's '-quickgelu' models) or --hidden-act gelu for the models OpenCLIP trained.")
    hidden, channels, ph, pw = tower["visual.conv1.weight"].shape
    depth = len({int(m.group(1)) for k in tower if (m := re.match(r"visual\.transformer\.resblocks\.(\d+)\.", k))})
    if depth == 0:
        raise CheckpointError("The OpenCLIP checkpoint has no transformer blocks (no visual.transformer.resblocks.0.*).")
    if num_attention_heads is None:
        if hidden % 64:
            raise CheckpointError(
                f"OpenCLIP's fused in_proj_weight does not reveal the number of attention heads (width {hidden} is "
                "not a multiple of open_clip's default head width 64); pass --num-attention-heads N.")
        num_attention_heads = hidden // 64
        warnings.warn(f"Assuming open_clip's default head width 64: {num_attention_heads} heads for width {hidden}; "
                      "pass --num-attention-heads if the model differs.", stacklevel=2)
    grid, has_class_row = _position_layout(tower["visual.positional_embedding"].shape[0], 1, (ph, pw), image_size,
                                           "OpenCLIP")
    if not has_class_row:
        raise CheckpointError("OpenCLIP tensor 'visual.positional_embedding' has no row for the class token; pass "
                              "--image-size HEIGHT WIDTH if the grid is not square.")
    projection = "visual.proj" in tower
    config = ViTConfig(
        family="clip", hidden_size=hidden, num_hidden_layers=depth, num_attention_heads=num_attention_heads,
        intermediate_size=tower["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0], hidden_act=hidden_act,
        layer_norm_eps=layer_norm_eps, **_geometry(grid, ph, pw), num_channels=channels,
        qkv_bias="visual.transformer.resblocks.0.attn.in_proj_bias" in tower,
        # CLIP's tower: pre-norm, the post-norm on the pooled class token (fc_norm), no dense pooler.
        pre_layernorm="visual.ln_pre.weight" in tower, use_fc_norm=True, pooler_dense=False,
        patch_embedding_bias="visual.conv1.bias" in tower,
        projection_dim=tower["visual.proj"].shape[1] if projection else None,
        layer_scale_init_value=(CONVERTED_LAYER_SCALE_INIT if "visual.transformer.resblocks.0.ls_1.gamma" in tower
                                else None),
        num_labels=0,
    )
    head = "projection" if projection else "base"
    canonical, used = {}, set()
    for name, spec in _specs(config, head).items():
        source_name, part, alias = family_name(spec, "openclip")
        if source_name not in tower:
            raise CheckpointError(f"OpenCLIP checkpoint lacks {source_name!r} (for {name}).")
        array = tower[source_name]
        if part is not None:
            array = _split_part(array, spec, "openclip", part)
        if alias.kind == MATMUL:  # applied as x @ proj: a dense kernel (in, out)
            array = from_layout(array, DENSE, spec.leaf, "jax")
        canonical[name] = np.ascontiguousarray(array.reshape(spec.shape))
        used.add(source_name)
    leftover = sorted(set(tower) - used)
    if leftover:
        raise CheckpointError(f"OpenCLIP tensors that vit's CLIP has no place for (never dropped silently): {leftover}")
    config = _resized(canonical, config, image_size, resize_method)
    size = dict(zip(("height", "width"), config.image_hw, strict=True))
    defaults = dict(image_mean=OPENCLIP_MEAN, image_std=OPENCLIP_STD) if channels == 3 else dict(
        image_mean=[0.5] * channels, image_std=[0.5] * channels)
    recipe = ViTImageProcessor(**{"resample": 3, **defaults, **(processor or {}), "size": size})
    return Converted(config, canonical, recipe, head)


def _openclip_folder(folder: str, options: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(weights file, the options open_clip_config.json states, the processor recipe) of an OpenCLIP hub folder.

    open_clip's config says what the tensors cannot: the activation (`quick_gelu`) and the head width. A flag
    that disagrees with it is an error.
    """
    file = next((os.path.join(folder, n) for n in OPENCLIP_WEIGHTS if os.path.isfile(os.path.join(folder, n))), None)
    if file is None:
        raise CheckpointError(f"No OpenCLIP weights in {folder}: expected one of {', '.join(OPENCLIP_WEIGHTS)}.")
    config_path = os.path.join(folder, OPENCLIP_CONFIG)
    if not os.path.isfile(config_path):
        return file, {}, {}
    with open(config_path, encoding="utf-8") as f:
        data = json.load(f)
    model_cfg, preprocess = data.get("model_cfg") or {}, data.get("preprocess_cfg") or {}
    vision = model_cfg.get("vision_cfg") or {}
    stated: dict[str, Any] = {"hidden_act": "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"}
    if isinstance(vision.get("width"), int):
        stated["num_attention_heads"] = vision["width"] // vision.get("head_width", 64)
    for name, value in stated.items():
        given = options.get(name)
        if given is not None and given != value:
            raise CheckpointError(f"{config_path} says {name}={value!r} but --{name.replace('_', '-')} says "
                                  f"{given!r}; drop the flag.")
    recipe: dict[str, Any] = {}
    if "mean" in preprocess:
        recipe["image_mean"] = list(preprocess["mean"])
    if "std" in preprocess:
        recipe["image_std"] = list(preprocess["std"])
    if "interpolation" in preprocess:
        recipe["resample"] = {"bilinear": 2, "bicubic": 3, "nearest": 0}.get(preprocess["interpolation"], 3)
    return file, stated, recipe


# ---------------------------------------------------------------------------------------------- front door
def _read_arrays(path: str) -> dict[str, np.ndarray]:
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise CheckpointError(f"Cannot read {path}: {err}. The .npz file is corrupt or truncated.") from err
    from .checkpoint import _read_file

    return _read_file(path)


def detect_source(path: str) -> str:
    """"hf", "timm", "jax" or "openclip", from the files and tensor names."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, OPENCLIP_CONFIG)) and not os.path.isfile(os.path.join(path, "config.json")):
            return "openclip"
        config_path = os.path.join(path, "config.json")
        if os.path.isfile(config_path):
            with open(config_path, encoding="utf-8") as f:
                data = json.load(f)
            if "architecture" in data or "pretrained_cfg" in data:
                return "timm"
            return "hf"
        path = find_weights_file(path)
    if path.endswith(".npz"):
        return "jax"
    names = set(_read_arrays(path))
    if "visual.conv1.weight" in names or any(n.startswith("visual.transformer.resblocks.") for n in names):
        return "openclip"
    if any(n.startswith("blocks.") or n == "patch_embed.proj.weight" for n in names):
        return "timm"
    if any("encoderblock" in n for n in names):
        return "jax"
    if any(".embeddings." in n or n.startswith("embeddings.") for n in names):
        raise CheckpointError(f"{path} holds HF tensors; pass the folder with its config.json instead of the file.")
    raise CheckpointError(f"Cannot tell what kind of checkpoint {path} is; pass --from hf, timm, jax or openclip.")


def convert_checkpoint(source: str, out_dir: str, source_kind: str = "auto", **options: Any) -> Converted:
    """Convert `source` (an HF folder, a timm file or folder, an original .npz, an OpenCLIP state dict) into an HF
    folder `out_dir`."""
    kind = detect_source(source) if source_kind == "auto" else source_kind
    resize_method = options.pop("resize_method", None)
    if kind == "hf":
        config = ViTConfig.from_pretrained(source)
        overrides = {k: v for k, v in options.items() if v is not None and k in ("image_size", "layer_norm_eps", "hidden_act", "pooling")}
        state = read_canonical(source, config)
        head = _hf_head(state)
        _check_hf_options(config, options, labels=state["classifier.weight"].shape[0] if head == "classification" else 0)
        target = config.copy(**overrides) if overrides else config
        # Keep exactly the optional tensors the source has: a pooler or mask token it lacks is not made up.
        bare = {k.removeprefix("vit."): v for k, v in state.items()}
        fitted, _ = fit_state_dict(state, target, head, add_pooling_layer="pooler.dense.weight" in bare,
                                   use_mask_token="embeddings.mask_token" in bare, source_config=config,
                                   resize_method=resize_method or "bicubic")
        processor_file = os.path.join(source, "preprocessor_config.json")
        processor = ViTImageProcessor.from_pretrained(processor_file) if os.path.isfile(processor_file) else ViTImageProcessor(
            size=dict(zip(("height", "width"), target.image_hw, strict=True)))
        converted = Converted(target, fitted, processor, head)
    elif kind == "timm":
        file, recipe, global_pool = source, None, None
        if os.path.isdir(source):
            file = find_weights_file(source)
            recipe = _timm_recipe(os.path.join(source, "config.json"))
            global_pool = _timm_global_pool(os.path.join(source, "config.json"))
        converted = from_timm(_read_arrays(file), processor=recipe, global_pool=global_pool,
                              **_only(options, from_timm),
                              **({"resize_method": resize_method} if resize_method else {}))
    elif kind == "jax":
        converted = from_jax(_read_arrays(source), **_only(options, from_jax),
                             **({"resize_method": resize_method} if resize_method else {}))
    elif kind == "openclip":
        file, stated, recipe = source, {}, None
        if os.path.isdir(source):
            file, stated, recipe = _openclip_folder(source, options)
        converted = from_openclip(_read_arrays(file), processor=recipe, **{**stated, **_only(options, from_openclip)},
                                  **({"resize_method": resize_method} if resize_method else {}))
    else:
        raise CheckpointError(f"Unknown source kind {kind!r}; choose auto, hf, timm, jax or openclip.")
    converted.save(out_dir)
    return converted


def _hf_head(state: dict[str, np.ndarray]) -> str:
    """"classification", "mim" or "base", from the head tensors an HF state dict holds."""
    if "classifier.weight" in state:
        return "classification"
    if any(k.startswith("decoder.") for k in state):
        return "mim"
    return "base"


def _check_hf_options(config: ViTConfig, options: dict[str, Any], labels: int | None = None) -> None:
    """An HF folder states its head count and labels; a flag that disagrees is an error, never ignored."""
    heads = options.get("num_attention_heads")
    if heads is not None and heads != config.num_attention_heads:
        raise CheckpointError(f"The HF config says {config.num_attention_heads} attention heads but "
                              f"--num-attention-heads says {heads}; drop the flag or fix config.json.")
    wanted = options.get("num_labels")
    if labels is not None and wanted is not None and wanted != labels:
        raise CheckpointError(f"The checkpoint's head has {labels} classes but --num-labels says {wanted}.")


def _only(options: dict[str, Any], function) -> dict[str, Any]:
    import inspect

    accepted = set(inspect.signature(function).parameters)
    unused = [k for k, v in options.items() if v is not None and k not in accepted]
    if unused:
        raise CheckpointError(f"Options {unused} do not apply to this kind of checkpoint.")
    return {k: v for k, v in options.items() if v is not None and k in accepted}


def _timm_global_pool(config_path: str) -> str | None:
    """The global_pool a timm hub folder's config.json records (top level, or in model_args), if any."""
    if not os.path.isfile(config_path):
        return None
    with open(config_path, encoding="utf-8") as f:
        data = json.load(f)
    pool = data.get("global_pool", (data.get("model_args") or {}).get("global_pool"))
    return pool if isinstance(pool, str) else None


def _timm_recipe(config_path: str) -> dict[str, Any] | None:
    """timm hub folders describe their preprocessing in config.json's pretrained_cfg."""
    if not os.path.isfile(config_path):
        return None
    with open(config_path, encoding="utf-8") as f:
        cfg = json.load(f).get("pretrained_cfg", {})
    recipe: dict[str, Any] = {}
    if "mean" in cfg:
        recipe["image_mean"] = list(cfg["mean"])
    if "std" in cfg:
        recipe["image_std"] = list(cfg["std"])
    if "interpolation" in cfg:
        recipe["resample"] = {"bilinear": 2, "bicubic": 3, "nearest": 0}.get(cfg["interpolation"], 3)
    return recipe


# What the original code and timm compute with, whatever the file: tanh GELU in Flax's nn.gelu, erf in timm.
EXPORT_DEFAULTS = {"jax": ({"gelu_pytorch_tanh", "gelu_new"}, 1e-6), "timm": ({"gelu"}, 1e-6)}


def _exportable(folder: str, target: str) -> tuple[ViTConfig, dict[str, np.ndarray]]:
    """(config, canonical state) of any HF head (ViTModel, classification, MIM, DeiT's distilled) in the names
    `to_timm`/`to_jax` take. What the target has no place for (the SimMIM decoder, the mask token) is named in a
    warning."""
    config = ViTConfig.from_pretrained(folder)
    state = {k.removeprefix("vit."): v for k, v in read_canonical(folder, config).items()}
    distilled = "cls_classifier.weight" in state  # DeiT's two heads: timm's VisionTransformerDistilled
    has_classifier, has_pooler = "classifier.weight" in state or distilled, "pooler.dense.weight" in state
    # The pooler (dense + tanh on the class token) is the original's pre-logits layer; a classifier that reads
    # the sequence instead leaves it unused.
    pooler_exported = has_pooler and (not has_classifier or config.classifier_input == "pooler")
    classifier_input = "pooler" if pooler_exported else (
        "sequence" if config.classifier_input == "pooler" else config.classifier_input)
    export_config = config.copy(num_labels=config.num_labels if has_classifier else 0,
                                classifier_input=classifier_input)
    out = {}
    head = "distilled" if distilled else "classification"
    for name in parameter_specs(export_config, head, add_pooling_layer=pooler_exported):
        bare = name.removeprefix("vit.")
        if bare not in state:
            raise CheckpointError(f"{folder} lacks {name!r}, which the {target} export needs.")
        out[name] = state.pop(bare)
    if state:
        warnings.warn(f"Not exported, because {target}'s ViT has no place for them: {sorted(state)}.", stacklevel=3)
    activations, eps = EXPORT_DEFAULTS[target]
    if config.hidden_act not in activations or config.layer_norm_eps != eps:
        how = ("the original code always runs Flax's tanh GELU and LayerNorm eps 1e-6" if target == "jax" else
               "timm's VisionTransformer defaults to the erf GELU and LayerNorm eps 1e-6; build it with "
               "act_layer and norm_layer=partial(nn.LayerNorm, eps=...) to match")
        warnings.warn(f"This model uses hidden_act={config.hidden_act!r} and layer_norm_eps={config.layer_norm_eps}, "
                      f"which the {target} file cannot record: {how}, so its outputs will differ slightly. To "
                      f"convert it back exactly, pass --hidden-act {config.hidden_act} --layer-norm-eps "
                      f"{config.layer_norm_eps} to vit convert.", stacklevel=3)
    return export_config, out


def export_timm(folder: str, out_file: str) -> None:
    """An HF-format folder (any head) -> a timm state dict in safetensors, written atomically."""
    from safetensors.numpy import save_file

    config, state = _exportable(folder, "timm")
    arrays = {k: np.ascontiguousarray(v) for k, v in to_timm(state, config).items()}
    _write_atomically(out_file, lambda path: save_file(arrays, path))


def export_jax(folder: str, out_file: str, numbering: str = "old") -> None:
    """An HF-format folder (any head) -> the original code's `.npz`, written atomically."""
    config, state = _exportable(folder, "jax")
    arrays = to_jax(state, config, numbering)

    def write(path: str) -> None:
        with open(path, "wb") as f:  # a file object, so np.savez does not append ".npz" to the temporary name
            np.savez(f, **arrays)

    _write_atomically(out_file, write)


def _write_atomically(out_file: str, write) -> None:
    """`write(temporary path)` next to `out_file`, then rename: a failed export leaves no partial file."""
    folder = os.path.dirname(os.path.abspath(out_file))
    if not os.path.isdir(folder):
        raise CheckpointError(f"The folder of {out_file} does not exist; create it first.")
    temporary = os.path.join(folder, f".{os.path.basename(out_file)}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, out_file)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


__all__ = ["Converted", "convert_checkpoint", "detect_source", "export_jax", "export_timm",
           "from_jax", "from_openclip", "from_timm", "to_jax", "to_timm"]
