"""Checkpoint I/O shared by the three frameworks.

Everything here works on *canonical state dicts*: `{HF PyTorch name: numpy array in PyTorch layout}`.
Reading turns any HF file (safetensors, sharded safetensors, pytorch_model.bin, tf_model.h5,
flax_model.msgpack) into one; `fit_state_dict` checks it against the model's parameter table; writing
turns one into any of those files, atomically.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import warnings
from dataclasses import dataclass, field

import numpy as np

from .config import ViTConfig
from .errors import CheckpointError
from .files import atomic_save_folder, resolve_local_folder
from .params import (
    EMBEDDING,
    HEAD_PREFIX,
    HEAD_SCOPES,
    ParamSpec,
    all_known_specs,
    family_state_from_layout,
    flatten,
    layout_name,
    nest,
    parameter_specs,
    state_from_layout,
    state_to_family,
    to_layout,
)
from .resize import resize_position_embeddings

logger = logging.getLogger("vit")

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_INDEX_NAME = "model.safetensors.index.json"
PT_WEIGHTS_NAME = "pytorch_model.bin"
PT_INDEX_NAME = "pytorch_model.bin.index.json"
TF_WEIGHTS_NAME = "tf_model.h5"
FLAX_WEIGHTS_NAME = "flax_model.msgpack"
# The order in which a folder's weight files are tried: the canonical file first.
WEIGHT_FILES = (SAFE_WEIGHTS_NAME, SAFE_INDEX_NAME, PT_WEIGHTS_NAME, PT_INDEX_NAME, TF_WEIGHTS_NAME, FLAX_WEIGHTS_NAME)

# HF's Keras class names (Keras turns CamelCase into snake_case: TFViTModel -> tf_vi_t_model).
_TF_MODEL_NAMES = {
    "base": "tf_vi_t_model",
    "classification": "tf_vi_t_for_image_classification",
    "mim": "tf_vi_t_for_masked_image_modeling",
}


# HF's class for each family and head, written to config.json's `architectures` whichever class saved.
FAMILY_ARCHITECTURES = {
    ("clip", "base"): "CLIPVisionModel",
    ("clip", "projection"): "CLIPVisionModelWithProjection",
    ("siglip", "base"): "SiglipVisionModel",
    ("dinov2", "base"): "Dinov2Model",
    ("dinov2", "classification"): "Dinov2ForImageClassification",
    ("dinov2_with_registers", "base"): "Dinov2WithRegistersModel",
    ("dinov2_with_registers", "classification"): "Dinov2WithRegistersForImageClassification",
    ("deit", "base"): "DeiTModel",
    ("deit", "classification"): "DeiTForImageClassification",
    ("deit", "distilled"): "DeiTForImageClassificationWithTeacher",
}


# --------------------------------------------------------------------------------------------- reading
def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            header = f.read(8)
        if len(header) < 8 or struct.unpack("<Q", header)[0] + 8 > size:
            raise CheckpointError(f"{path} is truncated (its header promises more bytes than the file has).")
        arrays = load_file(path)
    except CheckpointError:
        raise
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        if "bfloat16" in str(err).lower() or "BF16" in str(err):
            return _read_safetensors_bf16(path)
        raise CheckpointError(f"Cannot read {path}: {err}. The file is corrupt or not safetensors; re-download it.") from err
    return arrays


def _read_safetensors_bf16(path: str) -> dict[str, np.ndarray]:
    """safetensors' NumPy reader knows bfloat16 only once ml_dtypes is imported; read it via ml_dtypes."""
    import ml_dtypes

    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    dtypes = {"BF16": ml_dtypes.bfloat16, "F16": np.float16, "F32": np.float32, "F64": np.float64,
              "I64": np.int64, "I32": np.int32, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        array = np.frombuffer(body[start:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
        out[name] = array.copy()
    return out


def _read_sharded(folder: str, index_name: str) -> dict[str, np.ndarray]:
    index_path = os.path.join(folder, index_name)
    _refuse_lfs_pointer(index_path)
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{index_path} is not a valid shard index ({err}).") from err
    arrays: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = os.path.join(folder, shard)
        if not os.path.isfile(shard_path):
            names = [k for k, v in weight_map.items() if v == shard]
            raise CheckpointError(
                f"{index_path} names the shard {shard!r} (holding {len(names)} tensors, e.g. {names[0]!r}), "
                f"but {shard_path} does not exist. Download the missing shard."
            )
        arrays.update(_read_file(shard_path))
    return arrays


def _read_tf_h5(path: str) -> dict[str, np.ndarray]:
    """HF's Keras 2 h5 layout: one group per top-level layer, datasets named `<model>/<weight path>:0`."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            out = {}

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    # Drop the top-level layer group and the Keras model name; keep HF's weight path.
                    parts = name.split("/")[2:]
                    out["/".join(parts).removesuffix(":0")] = np.array(obj)

            f.visititems(visit)
            return out
    except OSError as err:
        raise CheckpointError(f"Cannot read {path}: {err}. The HDF5 file is corrupt or truncated; re-download it.") from err


def _read_flax_msgpack(path: str) -> dict[str, np.ndarray]:
    """Flax's msgpack format, read with plain msgpack so that no JAX is needed."""
    import msgpack

    def ext_hook(code, data):
        if code in (1, 3):  # flax's ndarray and numpy-scalar extension types
            shape, dtype_name, buffer = msgpack.unpackb(data, raw=True)
            if dtype_name == b"bfloat16":
                import ml_dtypes

                dtype = np.dtype(ml_dtypes.bfloat16)
            else:
                dtype = np.dtype(dtype_name.decode())
            array = np.frombuffer(buffer, dtype=dtype).reshape(shape)
            return array.astype(np.float32) if dtype_name == b"bfloat16" else array
        return msgpack.ExtType(code, data)

    try:
        with open(path, "rb") as f:
            tree = msgpack.unpackb(f.read(), ext_hook=ext_hook, raw=False, strict_map_key=False)
    except (ValueError, msgpack.exceptions.ExtraData, msgpack.exceptions.UnpackException, TypeError) as err:
        raise CheckpointError(f"Cannot read {path}: {err}. The msgpack file is corrupt or truncated; re-download it.") from err
    if not isinstance(tree, dict):
        raise CheckpointError(f"{path} does not hold a tree of parameters.")
    tree = _unchunk(tree)
    return {name: np.asarray(v) for name, v in flatten(tree).items()}


def _unchunk(tree):
    if isinstance(tree, dict):
        if "__msgpack_chunked_array__" in tree:
            shape = tuple(tree["shape"][str(i)] for i in range(len(tree["shape"])))
            chunks = [tree["chunks"][str(i)] for i in range(len(tree["chunks"]))]
            return np.concatenate(chunks).reshape(shape)
        return {k: _unchunk(v) for k, v in tree.items()}
    return tree


def _read_file(path: str) -> dict[str, np.ndarray]:
    # Whether a reader returns bfloat16 arrays depends on whether ml_dtypes was imported before (by an
    # earlier load, jax or tensorflow); widening here gives every load the same float32 arrays.
    return {name: _widen_bfloat16(array) for name, array in _read_file_as_stored(path).items()}


_LFS_POINTER_START = b"version https://git-lfs.github.com/spec/"


def _refuse_lfs_pointer(path: str) -> None:
    """A clone without `git lfs` leaves small text pointers where the weights should be; say so."""
    with open(path, "rb") as f:
        start = f.read(len(_LFS_POINTER_START))
    if start == _LFS_POINTER_START:
        raise CheckpointError(
            f"{path} is a Git LFS pointer ({os.path.getsize(path)} bytes of text), not the weights: the repository "
            "was cloned without its large files. Run `git lfs install && git lfs pull` in that folder, or download "
            "the folder with `huggingface-cli download`."
        )


def _read_file_as_stored(path: str) -> dict[str, np.ndarray]:
    from .torch_pickle import load_torch_state_dict

    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); the download or save did not finish. Get the file again.")
    _refuse_lfs_pointer(path)
    if path.endswith(".safetensors"):
        return _read_safetensors(path)
    if path.endswith(".bin") or path.endswith(".pt") or path.endswith(".pth"):
        return load_torch_state_dict(path)
    if path.endswith(".h5"):
        return _read_tf_h5(path)
    if path.endswith(".msgpack"):
        return _read_flax_msgpack(path)
    raise CheckpointError(f"Unknown checkpoint format: {path}")


def find_weights_file(folder: str) -> str:
    """The weights file that `from_pretrained(folder)` reads, canonical first."""
    folder = resolve_local_folder(folder, "weights")
    for name in WEIGHT_FILES:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise CheckpointError(
        f"No weights in {folder}: expected one of {', '.join(WEIGHT_FILES)}. For a timm or original-JAX "
        "checkpoint, convert it first with `vit convert` (conversion/convert.py)."
    )


def read_canonical(path: str, config: ViTConfig) -> dict[str, np.ndarray]:
    """Read a weights file or folder (any HF format) into a canonical state dict.

    Names that no ViT parameter has are kept, under their original name, so that `fit_state_dict` can
    report them. Files that HF writes its own way are normalised here: legacy `gamma`/`beta` LayerNorm names
    in PyTorch files, and the all-zero query/key/value biases that HF's TF classes write for
    `qkv_bias=False` (dropped; non-zero ones are refused).
    """
    if os.path.isdir(path):
        path = find_weights_file(path)
    name = os.path.basename(path)
    folder = os.path.dirname(path)
    if name.endswith(".index.json"):
        arrays = _read_sharded(folder, name)
    else:
        arrays = _read_file(path)
    layout = "tf" if name.endswith(".h5") else "flax" if name.endswith(".msgpack") else "pt"
    # Map with q/k/v biases in the table, so that a file holding them has them under canonical names.
    mapping_config = config if config.qkv_bias else config.copy(qkv_bias=True)
    if config.family != "vit":
        # CLIP, SigLIP, DINOv2, DeiT: the family's column of the parameter table names the tensors.
        state, _unknown, tower = family_state_from_layout(arrays, mapping_config, layout)
        if tower:
            logger.info("%s holds a two-tower %s model: loaded the vision tower, ignored the text tower (%d tensors).",
                        path, config.family, len(tower))
    elif layout == "pt":
        state = _rename_legacy_norm_names(arrays, mapping_config)
    else:
        state, _unknown = state_from_layout(arrays, mapping_config, layout)
    # Integer `position_ids` buffers (some HF-ported checkpoints carry them) are an arange, not a parameter.
    buffers = [n for n, a in state.items() if n.rsplit(".", 1)[-1] == "position_ids" and np.issubdtype(a.dtype, np.integer)]
    if buffers:
        logger.info("Ignored position_ids buffers: %s", ", ".join(buffers))
        state = {n: a for n, a in state.items() if n not in buffers}
    if _is_foreign(state, mapping_config):
        raise CheckpointError(_describe_foreign_checkpoint(path, sorted(state)))
    if not config.qkv_bias:
        state = _drop_zero_qkv_biases(state, config, mapping_config, path)
    return state


# (pattern in a tensor name, what the file is, what to do), tried in order on checkpoints with no ViT name.
_FOREIGN_CHECKPOINTS = (
    (re.compile(r"(^|\.)(blocks\.\d+\.attn\.qkv\.weight|patch_embed\.proj\.weight)$"),
     "a timm Vision Transformer state dict (timm's names and fused qkv)",
     "Convert it to an HF folder first: `vit convert --from timm {path} OUT_DIR --num-attention-heads N` "
     "(conversion/convert.py), then load OUT_DIR."),
    (re.compile(r"Transformer/encoderblock_\d+"),
     "an original google-research / big_vision ViT checkpoint",
     "Convert it to an HF folder first: `vit convert --from jax {path} OUT_DIR`, then load OUT_DIR."),
    (re.compile(r"word_embeddings"),
     "a text model (BERT-like: it has word embeddings), not a Vision Transformer",
     "Pass the folder of a ViT checkpoint."),
    (re.compile(r"(^|\.)(resnet|embedder\.embedder\.convolution|conv1|layer\d+\.\d+\.conv\d|stem)\b"),
     "a convolutional network (ResNet-like), not a Vision Transformer",
     "Pass the folder of a ViT checkpoint."),
)


def _is_foreign(state: dict[str, np.ndarray], config: ViTConfig) -> bool:
    """No ViT's file: no patch embedding, and most names unknown (BERT shares some, e.g. `encoder.layer.0.output.dense`)."""
    if not state:
        return False
    known = all_known_specs(config)
    has_patch_embedding = any(
        n in known and known[n].module.name == "embeddings.patch_embeddings.projection" for n in state
    )
    return not has_patch_embedding and sum(n in known for n in state) < len(state) / 2


def _describe_foreign_checkpoint(path: str, names: list[str]) -> str:
    """One short message for a checkpoint that holds no ViT tensor at all: what it seems to be, what to do."""
    examples = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    for pattern, what, todo in _FOREIGN_CHECKPOINTS:
        hit = next((n for n in names if pattern.search(n)), None)
        if hit is not None:
            return (f"{path} is {what}: it lacks HF ViT's patch embedding, and most of its {len(names)} tensors have no HF ViT name (it has {hit!r}). "
                    + todo.format(path=path))
    prefixes = sorted({n.split(".")[0].split("/")[0] for n in names})
    return (f"{path} holds no Vision Transformer: it has no patch embedding, and most of its {len(names)} tensors "
            f"({examples}) have no ViT name; its top-level modules are {', '.join(prefixes[:5])}. It is another kind of model. "
            "Pass the folder of an HF ViT checkpoint, or convert timm / original-JAX weights with `vit convert`.")


def _rename_legacy_norm_names(state: dict[str, np.ndarray], config: ViTConfig) -> dict[str, np.ndarray]:
    """`layernorm.gamma` / `.beta` (early TF-ported PyTorch files) -> `.weight` / `.bias`, for norm parameters only."""
    known = all_known_specs(config)
    out = {}
    for name, array in state.items():
        for legacy, modern in ((".gamma", ".weight"), (".beta", ".bias")):
            renamed = name[: -len(legacy)] + modern if name.endswith(legacy) else None
            if renamed is not None and renamed not in state and getattr(known.get(renamed), "kind", None) == "norm":
                name = renamed
                break
        out[name] = array
    return out


def _drop_zero_qkv_biases(
    state: dict[str, np.ndarray], config: ViTConfig, biased_config: ViTConfig, path: str
) -> dict[str, np.ndarray]:
    """HF's TF classes ignore `qkv_bias=False` and save all-zero biases: drop those, refuse any other."""
    qkv_biases = set(all_known_specs(biased_config)) - set(all_known_specs(config))
    found = sorted(n for n in state if n in qkv_biases)
    nonzero = [n for n in found if np.any(state[n] != 0)]
    if nonzero:
        raise CheckpointError(
            f"config.json says qkv_bias=false, but {path} holds non-zero query/key/value biases "
            f"({len(nonzero)} tensors, e.g. {nonzero[0]}). A model without these biases would give other "
            "numbers. If the weights are right, set \"qkv_bias\": true in config.json."
        )
    if found:
        logger.info("Dropped %d all-zero query/key/value biases (qkv_bias=False; HF's TF classes write them).", len(found))
    return {n: a for n, a in state.items() if n not in qkv_biases}


# -------------------------------------------------------------------------------------------- fitting
@dataclass
class LoadReport:
    """What `fit_state_dict` did: tensors to initialise fresh, dropped, and resized."""

    initialised: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)


_MAX_LISTED = 20  # a longer list hides the message; the count says how many more there are


def _describe(names: list[str], shapes: dict[str, tuple]) -> str:
    names = sorted(names)
    rows = [f"  - {n} {tuple(shapes[n]) if n in shapes else ''}" for n in names[:_MAX_LISTED]]
    if len(names) > _MAX_LISTED:
        rows.append(f"  ... and {len(names) - _MAX_LISTED} more")
    return "\n".join(rows)


def _head_scoped(spec: ParamSpec) -> bool:
    return spec.module.scope in ("pooler", "mask_token", *HEAD_SCOPES)


def fit_state_dict(
    state: dict[str, np.ndarray],
    config: ViTConfig,
    head: str,
    add_pooling_layer: bool | None = None,
    use_mask_token: bool | None = None,
    ignore_mismatched_sizes: bool = False,
    source_config: ViTConfig | None = None,
    resize_method: str = "bicubic",
) -> tuple[dict[str, np.ndarray], LoadReport]:
    """Check a canonical state dict against a model and return the tensors the model should load.

    - HF's `vit.` prefix is added or removed, so a head checkpoint loads into ViTModel and the reverse.
    - Tensors of another head (pooler, classifier, decoder, mask token) are dropped; this model's head
      tensors that the checkpoint lacks are reported in `report.initialised` (a new head, as in HF).
    - Position embeddings on another grid are resized with `resize_method` (see `vit.resize`).
    - Anything else that is missing, unexpected or mis-shaped raises `CheckpointError` listing every
      name and shape, unless `ignore_mismatched_sizes` (then mis-shaped tensors are re-initialised).
    """
    specs = parameter_specs(config, head, add_pooling_layer, use_mask_token)
    known = all_known_specs(config)
    wants_prefix = head != "base"
    has_prefix = any(k.startswith(HEAD_PREFIX) for k in state)
    normalised: dict[str, np.ndarray] = {}
    for name, array in state.items():
        bare = name[len(HEAD_PREFIX):] if name.startswith(HEAD_PREFIX) else name
        is_head_module = bare in known and known[bare].module.scope in HEAD_SCOPES
        if wants_prefix and not has_prefix and not is_head_module and bare in known:
            name = HEAD_PREFIX + bare
        elif not wants_prefix and name.startswith(HEAD_PREFIX):
            name = bare
        normalised[name] = array

    report = LoadReport()
    out: dict[str, np.ndarray] = {}
    unexpected, mismatched = [], []
    for name, array in normalised.items():
        spec = specs.get(name)
        if spec is None:
            other = known.get(name)
            if other is not None and _head_scoped(other):
                report.dropped.append(name)
            else:
                unexpected.append(name)
            continue
        if tuple(array.shape) != spec.shape:
            if spec.module.name == "embeddings.position_embeddings":
                array = _resize_positions(array, spec, config, source_config, resize_method)
                report.resized.append(name)
            else:
                mismatched.append(name)
                continue
        out[name] = array
    missing = [n for n in specs if n not in out and n not in mismatched]
    missing_required = [n for n in missing if not _head_scoped(specs[n])]
    report.initialised = [n for n in missing if _head_scoped(specs[n])]

    problems = []
    all_shapes = {n: a.shape for n, a in normalised.items()}
    if missing_required:
        problems.append(f"missing tensors:\n{_describe(missing_required, {n: specs[n].shape for n in specs})}")
    if unexpected:
        problems.append(f"unexpected tensors (no ViT with this config has them):\n{_describe(unexpected, all_shapes)}")
    if mismatched and not ignore_mismatched_sizes:
        rows = "\n".join(f"  - {n}: checkpoint {tuple(all_shapes[n])}, model {specs[n].shape}" for n in sorted(mismatched))
        problems.append(
            "mis-shaped tensors:\n" + rows + "\n  (pass ignore_mismatched_sizes=True to re-initialise them, "
            "e.g. for a new classification head)"
        )
    if problems:
        raise CheckpointError(
            "The checkpoint does not fit the model: " + "; ".join(p.split(":")[0] for p in problems) + ".\n"
            + "\n".join(problems) + "\nCheck that config.json belongs to these weights."
        )
    if mismatched:
        report.mismatched = sorted(mismatched)
        warnings.warn(
            "Re-initialised mis-shaped tensors (ignore_mismatched_sizes=True):\n"
            + "\n".join(f"  - {n}: checkpoint {tuple(all_shapes[n])}, model {specs[n].shape}" for n in report.mismatched),
            stacklevel=3,
        )
    if report.initialised:
        warnings.warn(
            "Some weights were not in the checkpoint and are newly initialised; train them before use:\n"
            + _describe(report.initialised, {n: specs[n].shape for n in specs}),
            stacklevel=3,
        )
    if report.dropped:
        logger.info("Ignored tensors of another head: %s", ", ".join(sorted(report.dropped)))
    for name, array in out.items():
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            warnings.warn(f"Checkpoint tensor {name} holds NaN or infinite values.", stacklevel=3)
    return out, report


def _resize_positions(array, spec, config, source_config, method) -> np.ndarray:
    prefix = config.num_position_prefix_tokens
    n_old = array.shape[1] - prefix
    if source_config is not None and source_config.num_patches != n_old:
        # The checkpoint's own config disagrees with its weights: resizing would hide a wrong config.json.
        side = int(round(max(n_old, 0) ** 0.5))
        hint = (f" ({side}x{side} patches: image_size {side * source_config.patch_hw[0]} with patch_size "
                f"{source_config.patch_hw[0]})" if side * side == n_old else "")
        raise CheckpointError(
            f"The position embeddings in the weights hold {n_old} patch positions{hint}, but config.json's "
            f"image_size {source_config.image_size} and patch_size {source_config.patch_size} give "
            f"{source_config.num_patches}. Fix image_size in config.json to the weights' size; to run at another "
            "size, pass image_size=... to from_pretrained (which resizes them) or use interpolate_pos_encoding=True."
        )
    if source_config is not None:
        old_grid = source_config.grid_hw
    else:
        side = int(round(n_old**0.5))
        if side * side != n_old or array.ndim != 3 or array.shape[2] != spec.shape[2]:
            raise CheckpointError(
                f"Cannot resize position embeddings of shape {tuple(array.shape)} to {spec.shape}: the "
                "checkpoint's grid is not square and its config does not say its image size."
            )
        old_grid = (side, side)
    return resize_position_embeddings(array, old_grid, config.grid_hw, prefix, method).astype(array.dtype)


# -------------------------------------------------------------------------------------------- writing
def _write_safetensors(state: dict[str, np.ndarray], path: str, metadata: dict[str, str] | None = None) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, path, metadata=metadata or {"format": "pt"})


def _tf_weights(state: dict[str, np.ndarray], specs: dict[str, ParamSpec], head: str, config: ViTConfig,
                architecture: str | None) -> tuple[dict[str, np.ndarray], str]:
    """({HF TF weight path: array in TF layout}, the Keras model name) that HF's TF class for this model has."""
    if config.family != "vit":
        weights = state_to_family(state, specs, config.family, "tf")
        return weights, _keras_name("TF" + (architecture or "Model"))
    weights = {}
    for name, array in state.items():
        spec = specs[name]
        tf_name = layout_name(spec, "tf")
        if head == "base":
            tf_name = "vit/" + tf_name  # TFViTModel keeps its backbone in a layer called "vit"
        weights[tf_name] = to_layout(array, spec.kind, spec.leaf, "tf")
    return weights, _TF_MODEL_NAMES[head]


def _keras_name(class_name: str) -> str:
    """Keras 2's default layer name for a class (its CamelCase-to-snake_case rule): TFCLIPVisionModel ->
    tfclip_vision_model, TFDeiTModel -> tf_dei_t_model. HF strips it when loading; written for fidelity."""
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", class_name)).lower()


def _write_tf_h5(weights: dict[str, np.ndarray], model_name: str, path: str) -> None:
    """HF's `tf_model.h5` layout, readable by HF's TF models (and by `_read_tf_h5`): one group per top-level
    layer (the first component of each weight path), datasets named `<model name>/<weight path>:0`."""
    import h5py

    by_layer: dict[str, list[tuple[str, np.ndarray]]] = {}
    for tf_name, array in weights.items():
        by_layer.setdefault(tf_name.split("/")[0], []).append((tf_name, _widen_bfloat16(array)))
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["layer_names"] = np.array([n.encode() for n in by_layer], dtype="S")
        for layer, weights in by_layer.items():
            group = f.create_group(layer)
            group.attrs["weight_names"] = np.array([f"{model_name}/{n}:0".encode() for n, _ in weights], dtype="S")
            for tf_name, array in weights:
                group.create_dataset(f"{model_name}/{tf_name}:0", data=array)
        f.create_group("top_level_model_weights").attrs["weight_names"] = np.array([], dtype="S")


def _flax_weights(state: dict[str, np.ndarray], specs: dict[str, ParamSpec], config: ViTConfig) -> dict[str, np.ndarray]:
    """{`/`-joined path in HF's Flax params tree: array in Flax layout} for this model."""
    if config.family != "vit":
        return state_to_family(state, specs, config.family, "flax")
    return {layout_name(specs[n], "flax"): to_layout(a, specs[n].kind, specs[n].leaf, "flax") for n, a in state.items()}


def _write_flax_msgpack(flat: dict[str, np.ndarray], path: str) -> None:
    """Flax's msgpack format (what `flax.serialization.to_bytes` writes) of a flat {path: array}, without JAX."""
    import msgpack

    def pack_array(x):
        if isinstance(x, np.ndarray):
            payload = msgpack.packb((x.shape, x.dtype.name, np.ascontiguousarray(x).tobytes("C")), use_bin_type=True)
            return msgpack.ExtType(1, payload)
        raise TypeError(f"cannot serialise {type(x).__name__}")

    with open(path, "wb") as f:
        f.write(msgpack.packb(nest(flat), default=pack_array, strict_types=True))


# Every weight file that HF or vit may leave in a folder: single files, shard indexes and shards.
_WEIGHT_FILE_RE = re.compile(
    r"(model(-\d{5}-of-\d{5})?\.safetensors|pytorch_model(-\d{5}-of-\d{5})?\.bin|tf_model(-\d{5}-of-\d{5})?\.h5"
    r"|flax_model(-\d{5}-of-\d{5})?\.msgpack)(\.index\.json)?"
)
# HF's shard names (huggingface_hub's filename patterns) for the formats that can be sharded.
_SHARD_PATTERNS = {"safetensors": ("model{suffix}.safetensors", SAFE_INDEX_NAME),
                   "pt": ("pytorch_model{suffix}.bin", PT_INDEX_NAME)}


def is_weight_file(name: str) -> bool:
    """True for the name of a weights file, shard or shard index that HF or vit writes."""
    return _WEIGHT_FILE_RE.fullmatch(name) is not None


def _split_into_shards(state: dict[str, np.ndarray], pattern: str, max_shard_size: int | str) -> dict[str, list[str]]:
    """{file name: tensor names}, split as HF does (huggingface_hub's rule: in order, a new shard when full)."""
    from huggingface_hub import split_state_dict_into_shards_factory

    if isinstance(max_shard_size, bool) or not isinstance(max_shard_size, (int, str)) or (
        isinstance(max_shard_size, int) and max_shard_size <= 0
    ):
        raise ValueError(f"max_shard_size must be a positive number of bytes or a size such as '5GB', got {max_shard_size!r}.")
    try:
        split = split_state_dict_into_shards_factory(
            state, get_storage_size=lambda array: int(array.nbytes), filename_pattern=pattern, max_shard_size=max_shard_size
        )
    except ValueError as err:
        raise ValueError(f"max_shard_size={max_shard_size!r}: {err}") from err
    return {name: list(keys) for name, keys in split.filename_to_tensors.items()}


def save_checkpoint(
    folder: str,
    config: ViTConfig,
    state: dict[str, np.ndarray],
    head: str,
    formats: tuple[str, ...] = ("safetensors",),
    architecture: str | None = None,
    extra_files: dict[str, str] | None = None,
    max_shard_size: int | str | None = None,
    safe_serialization: bool = True,
) -> None:
    """Write config.json and the weights in the given formats ("safetensors", "pt", "tf", "flax") atomically.

    As in HF, weight files in the folder that this save does not write (an earlier save's other formats or
    shards) are removed, so that `from_pretrained(folder)` can only read this save's weights.
    `max_shard_size` (bytes, or a size such as "5GB" or "200MB") splits model.safetensors and
    pytorch_model.bin into HF's shards and index (`model-00001-of-00002.safetensors` and
    `model.safetensors.index.json`); None writes one file. `safe_serialization=False` writes
    pytorch_model.bin instead of model.safetensors, as HF's keyword does.

    A family model (CLIP, SigLIP, DINOv2, DINOv2 with registers, DeiT) is written under its family's HF names in
    every format, from the family columns of the parameter table. HF's TF and Flax classes read tf_model.h5 and
    flax_model.msgpack where transformers 4.57.6 has them (TF CLIP and DeiT, Flax CLIP and DINOv2); where it has
    none (SigLIP, DINOv2 with registers, TF DINOv2, Flax DeiT) the files follow HF's naming convention
    (`vit.params.FAMILY_TF_MAIN_LAYER`, `FAMILY_LEAVES`) and `from_pretrained` reads them in every framework.
    """
    specs = parameter_specs(config, head, *_flags_from_state(state, config, head))
    unknown = [n for n in state if n not in specs]
    if unknown:
        raise CheckpointError(f"Cannot save tensors that the parameter table does not know: {unknown}")
    if not formats:  # a save without weights would remove the folder's weights and write none
        raise ValueError("formats is empty; give at least one of safetensors, pt, tf, flax.")
    for fmt in formats:
        if fmt not in ("safetensors", "pt", "tf", "flax"):
            raise ValueError(f"Unknown checkpoint format {fmt!r}; choose from safetensors, pt, tf, flax.")
    if not safe_serialization:
        formats = tuple(dict.fromkeys("pt" if fmt == "safetensors" else fmt for fmt in formats))
    hf_state = state  # the tensors under the names written to model.safetensors / pytorch_model.bin
    if config.family != "vit":
        # The family's own HF names (e.g. CLIP's vision_model.*), so that HF's class for the family reads the file;
        # tf_model.h5 and flax_model.msgpack get the same table's TF and Flax names (`_tf_weights`, `_flax_weights`).
        try:
            hf_state = state_to_family(state, specs, config.family)
        except KeyError as err:
            raise CheckpointError(
                f"HF's {config.family} models have no place for this model's parameters ({err.args[0]}); "
                "save it as a plain ViT: model.config.family = 'vit' before save_pretrained."
            ) from err
    out_config = config.copy()
    architecture = FAMILY_ARCHITECTURES.get((config.family, head), architecture)
    if architecture:
        out_config.extra["architectures"] = [architecture]
    out_config.extra["dtype"] = str(next(iter(state.values())).dtype) if state else "float32"
    out_config.extra.pop("torch_dtype", None)
    writers = {"config.json": lambda p: _write_text(p, out_config.to_json_string())}
    for name, text in (extra_files or {}).items():
        writers[name] = lambda p, text=text: _write_text(p, text)
    write_one = {"safetensors": _write_safetensors, "pt": _write_torch_bin}
    for fmt in formats:
        if fmt in _SHARD_PATTERNS:
            pattern, index_name = _SHARD_PATTERNS[fmt]
            shards = {pattern.format(suffix=""): list(hf_state)}
            if max_shard_size is not None:
                shards = _split_into_shards(hf_state, pattern, max_shard_size)
            for file_name, names in shards.items():
                part = {n: hf_state[n] for n in names}
                writers[file_name] = lambda p, part=part, fmt=fmt: write_one[fmt](part, p)
            if len(shards) > 1:  # the index is written after its shards, so it never names a missing one
                index = {"metadata": {"total_size": sum(int(a.nbytes) for a in hf_state.values())},
                         "weight_map": {n: f for f, names in shards.items() for n in names}}
                index_text = json.dumps(index, indent=2, sort_keys=True) + "\n"
                writers[index_name] = lambda p, text=index_text: _write_text(p, text)
        elif max_shard_size is not None and len(_split_into_shards(state, "{suffix}", max_shard_size)) > 1:
            raise ValueError(
                f"max_shard_size={max_shard_size!r} would need shards, but only model.safetensors and "
                f"pytorch_model.bin are sharded; the {fmt!r} format is written whole. Save it without max_shard_size."
            )
        elif fmt == "tf":
            tf_weights, model_name = _tf_weights(state, specs, head, config, architecture)
            writers[TF_WEIGHTS_NAME] = lambda p, w=tf_weights, m=model_name: _write_tf_h5(w, m, p)
        else:
            flax_weights = _flax_weights(state, specs, config)
            writers[FLAX_WEIGHTS_NAME] = lambda p, w=flax_weights: _write_flax_msgpack(w, p)
    atomic_save_folder(folder, writers, remove_stale=is_weight_file)


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _write_torch_bin(state: dict[str, np.ndarray], path: str) -> None:
    import torch

    torch.save({k: _numpy_to_torch(v) for k, v in state.items()}, path)


def _numpy_to_torch(array: np.ndarray):
    """torch.from_numpy, also for ml_dtypes' bfloat16 (which torch reads only as raw 16-bit words)."""
    import torch

    if _is_bfloat16(array):
        return torch.from_numpy(np.array(array, copy=True).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.array(array, copy=True))


def _is_bfloat16(array: np.ndarray) -> bool:
    return array.dtype.name == "bfloat16"


def _widen_bfloat16(array: np.ndarray) -> np.ndarray:
    """bfloat16 -> float32, exactly. Loaders get float32 (HF's default dtype); HDF5 has no bfloat16 at all."""
    return array.astype(np.float32) if _is_bfloat16(array) else array


def _flags_from_state(state: dict[str, np.ndarray], config: ViTConfig, head: str) -> tuple[bool, bool]:
    """(add_pooling_layer, use_mask_token) as the state dict shows them."""
    prefix = "" if head == "base" else HEAD_PREFIX
    return (f"{prefix}pooler.dense.weight" in state, f"{prefix}embeddings.mask_token" in state)


def init_state(config: ViTConfig, specs: dict[str, ParamSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """HF's initialisation, in NumPy so that every framework starts from the same numbers for a seed.

    Dense and conv weights: truncated normal (std = initializer_range, cut at 2 std); biases zero;
    LayerNorm weight one, bias zero; position embeddings and the class token truncated normal; the mask
    token zero.
    """
    rng = np.random.default_rng(seed)
    std = config.initializer_range
    state = {}
    for name, spec in specs.items():
        if spec.kind == EMBEDDING:
            if spec.module.name == "embeddings.mask_token":
                value = np.zeros(spec.shape)
            elif spec.module.scope == "layer_scale":
                value = np.full(spec.shape, config.layer_scale_init_value)
            else:
                value = _truncated_normal(rng, spec.shape, std)
        elif spec.leaf == 1:
            value = np.zeros(spec.shape)
        elif spec.kind == "norm":
            value = np.ones(spec.shape)
        else:
            value = _truncated_normal(rng, spec.shape, std)
        state[name] = value.astype(np.float32)
    return state


def _truncated_normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    values = rng.standard_normal(shape)
    while True:
        bad = np.abs(values) > 2
        if not bad.any():
            return values * std
        values[bad] = rng.standard_normal(int(bad.sum()))
