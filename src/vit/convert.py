"""Conversion of timm and original google-research / big_vision checkpoints, to and from the canonical layout.

Every name comes from the `timm` and `jax` columns of the one parameter table (`vit.params.MODULES`); this
module only adds the layout rules those columns need: timm's fused `qkv`, and the original code's per-head
attention kernels, old and new module numbering, scanned layers and position embeddings without a class row.

Whatever a state dict reveals is inferred (patch size, depth, width, MLP size, qkv bias, class token,
pooling, fc_norm, pre-logits, labels). What it does not reveal is asked for by name, and a tensor that no
supported architecture has is an error naming it, never silently dropped.
"""

from __future__ import annotations

import json
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
from .params import EMBEDDING, LEAVES, ParamSpec, from_layout, parameter_specs, to_layout
from .processor import ViTImageProcessor
from .resize import resize_position_embeddings

# timm's head counts for its standard widths (ViT-Ti/S/B/L/H all use 64-wide heads except H and L's 16).
TIMM_STANDARD_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}
TIMM_UNSUPPORTED = (
    ("reg_token", "register tokens"),
    ("dist_token", "a distillation token (DeiT distilled); use the non-distilled DeiT checkpoint"),
    ("head_dist", "a distillation head (DeiT distilled); use the non-distilled DeiT checkpoint"),
    (".ls1.", "layer scale"),
    (".ls2.", "layer scale"),
    (".q_norm.", "qk-norm"),
    (".k_norm.", "qk-norm"),
    ("attn_pool", "an attention-pool head"),
    ("norm_pre", "a pre-norm before the blocks"),
    (".q_bias", "separate q/v biases"),
)
# timm's global_pool values that vit has; 'avgmax', 'max', 'map' and '' (no pooling) it does not.
TIMM_POOLING = {"token": "cls", "avg": "mean"}
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


def _specs(config: ViTConfig) -> dict[str, ParamSpec]:
    return parameter_specs(config, "classification")


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


def _position_layout(rows: int, class_token: bool, patch_hw: tuple[int, int], image_size: Any,
                     what: str) -> tuple[tuple[int, int], bool]:
    """(patch grid, whether the first row belongs to the class token) of a position embedding with `rows` rows.

    An `image_size` whose grid fits the rows says which; otherwise a square grid is inferred, and
    `image_size` is only the size to resize to.
    """
    if image_size is not None:
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        grid = (h // patch_hw[0], w // patch_hw[1])
        if class_token and grid[0] * grid[1] == rows - 1:
            return grid, True
        if grid[0] * grid[1] == rows:
            return grid, False
    for has_class_row in ((True, False) if class_token else (False,)):
        n = rows - int(has_class_row)
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
    """A timm `VisionTransformer` state dict -> canonical. `image_size` also resizes the position grid.

    `global_pool` is timm's own setting (a timm hub folder's config.json has it). A state dict with a class token
    and no fc_norm does not reveal whether timm pooled the class token or averaged the tokens, so without
    `global_pool` or `pooling` it is refused rather than guessed.
    """
    _check_timm_supported(state)
    if "patch_embed.proj.weight" not in state or "pos_embed" not in state:
        raise CheckpointError("Not a timm VisionTransformer state dict: no patch_embed.proj.weight / pos_embed.")
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
    fc_norm = "fc_norm.weight" in state
    grid, has_class_row = _position_layout(state["pos_embed"].shape[1], class_token, (ph, pw), image_size, "timm")
    if class_token and not has_class_row:
        raise CheckpointError(
            "timm tensor 'pos_embed' has no class-token row (no_embed_class=True), which vit does not support. "
            "If the model has a class row on a non-square grid instead, pass --image-size HEIGHT WIDTH."
        )
    if global_pool is not None:
        if global_pool not in TIMM_POOLING:
            raise CheckpointError(f"timm global_pool={global_pool!r} is not supported; vit pools with 'token' or 'avg'.")
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
    labels = state["head.weight"].shape[0] if "head.weight" in state else 0
    if num_labels is not None and num_labels != labels:
        raise CheckpointError(f"The checkpoint's head has {labels} classes but --num-labels says {num_labels}.")
    config = ViTConfig(
        hidden_size=hidden, num_hidden_layers=depth, num_attention_heads=num_attention_heads,
        intermediate_size=state["blocks.0.mlp.fc1.weight"].shape[0], hidden_act=hidden_act,
        layer_norm_eps=layer_norm_eps, **_geometry(grid, ph, pw), num_channels=channels, qkv_bias="blocks.0.attn.qkv.bias" in state, pooling=pooling, use_fc_norm=fc_norm,
        class_token=class_token, num_labels=labels,
        classifier_input="pooler" if "pre_logits.fc.weight" in state else "sequence",
        pooler_output_size=state["pre_logits.fc.weight"].shape[0] if "pre_logits.fc.weight" in state else None,
    )
    canonical, used = {}, set()
    for name, spec in _specs(config).items():
        timm_name, part = _foreign_name(spec, "timm")
        if timm_name not in state:
            raise CheckpointError(f"timm checkpoint lacks {timm_name!r} (for {name}).")
        array = state[timm_name]
        if part is not None:
            array = np.split(array, 3, axis=0)[part]
        canonical[name] = np.ascontiguousarray(array)
        used.add(timm_name)
    leftover = sorted(set(state) - used)
    if leftover:
        raise CheckpointError(f"timm tensors that vit's ViT has no place for (never dropped silently): {leftover}")
    config = _resized(canonical, config, image_size, resize_method)
    recipe = {"resample": 3, "image_mean": [0.5] * channels, "image_std": [0.5] * channels, **(processor or {})}
    recipe["size"] = dict(zip(("height", "width"), config.image_hw, strict=True))
    return Converted(config, canonical, ViTImageProcessor(**recipe))


def to_timm(state: dict[str, np.ndarray], config: ViTConfig) -> dict[str, np.ndarray]:
    """Canonical (classification) -> timm's `VisionTransformer` state dict, with the fused qkv."""
    out: dict[str, np.ndarray] = {}
    fused: dict[str, list] = {}
    for name, spec in _specs(config).items():
        timm_name, part = _foreign_name(spec, "timm")
        if part is None:
            out[timm_name] = state[name]
        else:
            fused.setdefault(timm_name, [None, None, None])[part] = state[name]
    for timm_name, parts in fused.items():
        out[timm_name] = np.concatenate(parts, axis=0)
    return out


# ------------------------------------------------------------------------------------------- original JAX
def _normalise_jax_names(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Strip big_vision's `params/`, unstack scanned layers, and rename new Flax numbering to the old one."""
    arrays = {k.removeprefix("params/"): v for k, v in arrays.items()}
    out: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        if name.startswith("Transformer/encoderblock/"):
            rest = name[len("Transformer/encoderblock/"):]
            for i in range(array.shape[0]):
                out[f"Transformer/encoderblock_{i}/{rest}"] = array[i]
        else:
            out[name] = array
    if any("MultiHeadDotProductAttention_0" in k for k in out):
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
    exact. `image_size` also resizes the position grid (the original's linear zoom by default).
    """
    a = _normalise_jax_names(arrays)
    for name in a:
        if name.startswith("MAPHead"):
            raise CheckpointError(f"Tensor {name!r} belongs to a MAP (attention-pool) head, which vit does not support.")
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
    config = ViTConfig(
        hidden_size=hidden, num_hidden_layers=depth, num_attention_heads=heads,
        intermediate_size=a[block + "MlpBlock_3/Dense_0/kernel"].shape[1], hidden_act=hidden_act,
        layer_norm_eps=layer_norm_eps, **_geometry(grid, ph, pw), num_channels=channels, qkv_bias=block + "MultiHeadDotProductAttention_1/query/bias" in a,
        pooling=pooling or ("cls" if class_token else "mean"), class_token=class_token, num_labels=labels,
        classifier_input="pooler" if pre_logits else "sequence",
        pooler_output_size=a["pre_logits/kernel"].shape[1] if pre_logits else None,
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
    """"hf", "timm" or "jax", from the files and tensor names."""
    if os.path.isdir(path):
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
    if any(n.startswith("blocks.") or n == "patch_embed.proj.weight" for n in names):
        return "timm"
    if any("encoderblock" in n for n in names):
        return "jax"
    if any(".embeddings." in n or n.startswith("embeddings.") for n in names):
        raise CheckpointError(f"{path} holds HF tensors; pass the folder with its config.json instead of the file.")
    raise CheckpointError(f"Cannot tell what kind of checkpoint {path} is; pass --from hf, timm or jax.")


def convert_checkpoint(source: str, out_dir: str, source_kind: str = "auto", **options: Any) -> Converted:
    """Convert `source` (an HF folder, a timm file or folder, an original .npz) into an HF folder `out_dir`."""
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
    else:
        raise CheckpointError(f"Unknown source kind {kind!r}; choose auto, hf, timm or jax.")
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
    """(config, canonical state) of any HF head (ViTModel, classification, MIM) in the names `to_timm`/`to_jax`
    take. What the target has no place for (the SimMIM decoder, the mask token) is named in a warning."""
    config = ViTConfig.from_pretrained(folder)
    state = {k.removeprefix("vit."): v for k, v in read_canonical(folder, config).items()}
    has_classifier, has_pooler = "classifier.weight" in state, "pooler.dense.weight" in state
    # The pooler (dense + tanh on the class token) is the original's pre-logits layer; a classifier that reads
    # the sequence instead leaves it unused.
    pooler_exported = has_pooler and (not has_classifier or config.classifier_input == "pooler")
    export_config = config.copy(num_labels=config.num_labels if has_classifier else 0,
                                classifier_input="pooler" if pooler_exported else "sequence")
    out = {}
    for name in parameter_specs(export_config, "classification", add_pooling_layer=pooler_exported):
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
           "from_jax", "from_timm", "to_jax", "to_timm"]
