"""Export a model folder for deployment: ONNX, LiteRT (TFLite), SavedModel and StableHLO, each checked.

Every export writes its artifact to a temporary name, runs it in its own runtime (onnxruntime, the
standalone LiteRT interpreter, `tf.saved_model.load`, `jax.export.deserialize`) on a fixed input, compares
the result with the framework model it came from, and only then moves it into place. A difference above
the tolerance raises `ExportError` and leaves nothing behind.

- Input: `pixel_values`, NCHW float32 (and `bool_masked_pos`, (batch, patches) bool, for the
  masked-image-modelling head, whose reconstruction HF computes from a mask).
- The class is the one config.json's `architectures` names (`model_class_name`): plain ViT or the family
  (CLIP, SigLIP, DINOv2 with or without registers, DeiT); a two-tower CLIP or SigLIP checkpoint gives its
  image tower.
- Outputs, named after the class's main outputs: `logits`; `last_hidden_state` and `pooler_output` for
  a base model; `reconstruction` for masked image modelling; `image_embeds` for CLIP with its projection;
  `logits`, `cls_logits` and `distillation_logits` for DeiT with its teacher head.
- ONNX (from PyTorch): dynamic batch, height and width. The position embeddings are resized inside the
  graph by an ONNX `Resize` (cubic, a = -0.75, half-pixel), which is PyTorch's bicubic, or with antialias
  (a = -0.5) where the config asks for it: the same numbers as the models' resize matrices, also at the
  native size, where the resize is the identity.
- LiteRT and SavedModel (from TensorFlow), StableHLO (from JAX): dynamic batch, a fixed image size.

Example:
    >>> import numpy as np
    >>> from vit.export import export_stablehlo, run_stablehlo
    >>> report = export_stablehlo("tests/fixtures/vit-tiny-p8-32/classification/safetensors", "/tmp/vit-tiny.bin")
    >>> report.ok, report.output_names, report.max_abs_diff < 1e-4
    (True, ('logits',), True)
    >>> run_stablehlo("/tmp/vit-tiny.bin", np.zeros((5, 3, 32, 32), np.float32))["logits"].shape
    (5, 10)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .config import ViTConfig
from .errors import ViTError
from .files import atomic_path

FORMATS = ("onnx", "tflite", "savedmodel", "stablehlo")
FP32_TOLERANCE = 1e-4
# Quantised artifacts are compared with the float32 model relative to the size of its outputs:
# max |difference| <= tolerance * max |float32 output|. Measured: int8 about 0.04 on the trained digits model
# and up to 0.2 on random-weight ViT-S/16 (small logits, make bench); fp16 up to about 8e-4. The bound
# catches a broken artifact; the accuracy cost is measured on real data (tests/test_export.py, README).
QUANTIZED_TOLERANCE = {"int8": 0.3, "fp16": 0.005}
OUTPUT_NAMES = {"classification": ("logits",), "base": ("last_hidden_state", "pooler_output"),
                "mim": ("reconstruction",), "projection": ("image_embeds",),
                "distilled": ("logits", "cls_logits", "distillation_logits")}
CHECK_BATCH = 2  # the check runs two images, so a batch axis that was wrongly fixed to 1 fails
CHECK_SEED = 0


class ExportError(ViTError):
    """An export that failed, or whose artifact does not reproduce the framework model."""


@dataclasses.dataclass(frozen=True)
class ParityCheck:
    """The artifact against the framework model on one input shape."""

    input_shape: tuple[int, ...]
    max_abs_diff: float
    output_scale: float  # max |framework output|, the scale that quantised tolerances are relative to

    def __str__(self) -> str:
        return f"input {self.input_shape}: max |diff| {self.max_abs_diff:.2e} (outputs up to {self.output_scale:.3g})"


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how closely its artifact reproduced the framework model."""

    format: str
    path: str
    head: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    image_size: tuple[int, int] | None  # None: any size (dynamic height and width)
    quantize: str | None
    tolerance: float
    relative: bool  # True: tolerance is relative to the output scale (quantised artifacts)
    checks: tuple[ParityCheck, ...]

    @property
    def max_abs_diff(self) -> float:
        return max(c.max_abs_diff for c in self.checks)

    @property
    def ok(self) -> bool:
        return all(_within(c, self.tolerance, self.relative) for c in self.checks)

    def summary(self) -> str:
        size = "any image size" if self.image_size is None else f"image {self.image_size[0]}x{self.image_size[1]}"
        kind = f", {self.quantize}" if self.quantize else ""
        bound = f"{self.tolerance:g} x output scale" if self.relative else f"{self.tolerance:g}"
        lines = [f"wrote {self.path} ({self.format}{kind}, {self.head}, inputs {', '.join(self.input_names)}, "
                 f"outputs {', '.join(self.output_names)}, dynamic batch, {size})"]
        lines += [f"  parity vs the framework model, {c}" for c in self.checks]
        lines.append(f"  largest difference {self.max_abs_diff:.2e} (tolerance {bound})")
        return "\n".join(lines)


def _within(check: ParityCheck, tolerance: float, relative: bool) -> bool:
    bound = tolerance * max(check.output_scale, 1e-12) if relative else tolerance
    return bool(np.isfinite(check.max_abs_diff)) and check.max_abs_diff <= bound


# ------------------------------------------------------------------------------------------- shared pieces
# A two-tower checkpoint's image tower: CLIP's includes its projection (image_embeds, what CLIP deploys);
# SigLIP's has none (its pooler_output is the attention pool).
TWO_TOWER_IMAGE_CLASS = {"CLIPModel": "CLIPVisionModelWithProjection", "SiglipModel": "SiglipVisionModel"}


def model_class_name(config: ViTConfig) -> str:
    """The vit class (no framework prefix) that config.json's `architectures` names, as HF would load it.

    A vit or HF class name is used as is (its TF/Flax prefix dropped); a two-tower CLIP or SigLIP checkpoint
    gives its image tower; a missing or unknown architecture gives the family's base model (`AutoModel`).
    """
    import vit

    from .auto import MODEL_MAPPING, PREFIXES, class_name_for

    for architecture in config.extra.get("architectures") or []:
        if architecture in TWO_TOWER_IMAGE_CLASS:
            return TWO_TOWER_IMAGE_CLASS[architecture]
        for prefix in ("TF", "Flax", ""):
            name = architecture.removeprefix(prefix) if architecture.startswith(prefix) else None
            # Model classes only (the lookup imports no framework): each exists in all three frameworks.
            if name and all(vit._EXPORTS.get(p + name, "").endswith(".modeling") for p in PREFIXES.values()):
                return name
    return class_name_for(config.model_type, None, MODEL_MAPPING, "vit export")


def head_of(config: ViTConfig) -> str:
    """The head of the class config.json names: "classification", "mim", "base", "projection" or "distilled".

    (It imports PyTorch, whose class holds the head; the TF and Flax twins have the same.)
    """
    import vit

    return getattr(vit, model_class_name(config)).head


def _load(framework: str, model_dir: str | os.PathLike):
    import vit

    # from_pretrained resolves MODEL (and explains what to do when it is not a local folder).
    folder = os.fspath(model_dir)
    config = ViTConfig.from_pretrained(folder)
    prefix = {"pt": "", "tf": "TF", "flax": "Flax"}[framework]
    model = getattr(vit, prefix + model_class_name(config)).from_pretrained(folder)
    if framework == "pt":
        model.eval()
    return model, model.head


def _output_names(model, head: str) -> tuple[str, ...]:
    if head == "base" and getattr(model, "add_pooling_layer", True) is False:
        return ("last_hidden_state",)
    return OUTPUT_NAMES[head]


def _input_names(head: str) -> tuple[str, ...]:
    return ("pixel_values", "bool_masked_pos") if head == "mim" else ("pixel_values",)


def check_inputs(config: ViTConfig, head: str, image_hw: tuple[int, int], batch: int = CHECK_BATCH) -> dict[str, np.ndarray]:
    """The fixed inputs every check runs: seeded normal pixels and, for MIM, a seeded mask of half the patches."""
    rng = np.random.default_rng(CHECK_SEED)
    inputs = {"pixel_values": rng.standard_normal((batch, config.num_channels, *image_hw)).astype(np.float32)}
    if head == "mim":
        patches = (image_hw[0] // config.patch_hw[0]) * (image_hw[1] // config.patch_hw[1])
        inputs["bool_masked_pos"] = rng.random((batch, patches)) < 0.5
    return inputs


def other_size(config: ViTConfig) -> tuple[int, int]:
    """A second, non-square resolution for the dynamic-size check: one more patch row, two more columns."""
    (h, w), (ph, pw) = config.image_hw, config.patch_hw
    return h + ph, w + 2 * pw


def _compare(artifact: dict[str, np.ndarray], reference: dict[str, np.ndarray], shape: tuple[int, ...]) -> ParityCheck:
    missing = set(reference) - set(artifact)
    if missing:
        raise ExportError(f"The exported artifact lacks the outputs {sorted(missing)}; it has {sorted(artifact)}.")
    diff, scale = 0.0, 0.0
    for name, ref in reference.items():
        got = np.asarray(artifact[name], dtype=np.float64)
        if got.shape != ref.shape:
            raise ExportError(f"Output {name!r} of the exported artifact has shape {got.shape}; the framework model "
                              f"gives {ref.shape} for input {shape}.")
        diff = max(diff, float(np.max(np.abs(got - ref))) if got.size else 0.0)
        scale = max(scale, float(np.max(np.abs(ref))) if ref.size else 0.0)
    return ParityCheck(tuple(shape), diff if np.isfinite(diff) else float("inf"), scale)


def _verify(report: ExportReport) -> ExportReport:
    if not report.ok:
        bad = [c for c in report.checks if not _within(c, report.tolerance, report.relative)]
        bound = f"{report.tolerance:g} x the output scale" if report.relative else f"{report.tolerance:g}"
        raise ExportError(
            f"The {report.format} export does not reproduce the framework model: "
            + "; ".join(str(c) for c in bad)
            + f", above the tolerance {bound}. Nothing was written to {report.path}. "
            "Report this with the model's config.json."
        )
    return report


def _image_hw(config: ViTConfig, image_size: Any) -> tuple[int, int]:
    if image_size is None:
        return config.image_hw
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    if len(size) == 1:
        size = (size[0], size[0])
    if len(size) != 2 or min(size) < 1:
        raise ExportError(f"image_size must be H or (H, W) with positive sizes, got {image_size!r}.")
    (ph, pw) = config.patch_hw
    if size[0] < ph or size[1] < pw:
        raise ExportError(f"image_size {size} is smaller than one patch ({ph}x{pw}); pass at least {ph} {pw}.")
    return size


@contextlib.contextmanager
def _atomic_dir(final_dir: str) -> Iterator[str]:
    """A temporary folder next to `final_dir`, moved into place on success (replacing an old one), else removed."""
    final_dir = os.path.abspath(final_dir)
    if os.path.exists(final_dir) and not os.path.isdir(final_dir):
        raise ExportError(f"{final_dir} is a file; a SavedModel is a folder. Pass a folder path.")
    parent = os.path.dirname(final_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(final_dir) + ".", suffix=".tmp", dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if os.path.exists(final_dir):
            old = tempfile.mkdtemp(prefix="." + os.path.basename(final_dir) + ".", suffix=".old", dir=parent)
            os.replace(final_dir, os.path.join(old, "previous"))
        os.replace(tmp, final_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _require(module: str, what: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ExportError(f"{what} needs the package {module!r}; install the export extra: pip install 'vit[export]'.")


# -------------------------------------------------------------------------------------------- ONNX (PyTorch)
def _pt_reference(model, head: str, inputs: dict[str, np.ndarray], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    import torch

    args = {k: torch.from_numpy(v) for k, v in inputs.items()}
    with torch.inference_mode():
        out = model(**args, interpolate_pos_encoding=True, return_dict=True)
    return {n: getattr(out, n).float().numpy().astype(np.float64) for n in names}


# The config's position_interpolation (config.POSITION_INTERPOLATIONS) as torch's `F.interpolate` arguments:
# the call that vit.resize's matrices reproduce. Each exports to one ONNX Resize: cubic, a=-0.75, half-pixel
# (HF's ViT, CLIP, SigLIP, DINOv2); cubic with antialias, a=-0.5 (HF's DINOv2 with registers).
INTERPOLATE_ARGS = {
    "bicubic": {"mode": "bicubic", "align_corners": False},
    "bicubic_antialias": {"mode": "bicubic", "align_corners": False, "antialias": True},
}


def _in_graph_position_resize(embeddings) -> Callable:
    """ViTEmbeddings.interpolate_pos_encoding for tracing: always resize, with torch's `F.interpolate`.

    The eager model skips the resize at its native size (a Python branch on the shape) and multiplies by
    precomputed resize matrices otherwise; neither survives a graph with symbolic height and width. This
    replacement resizes the patch grid on every call with the config's method (INTERPOLATE_ARGS), which
    ONNX exports as a Resize and which is the identity at the native size. The rows of the tokens that have
    position embeddings (class, distillation; none with `no_embed_class` or without a class token) are kept.
    """
    import torch
    import torch.nn.functional as F

    config = embeddings.config
    method = INTERPOLATE_ARGS[config.position_interpolation]

    def interpolate_pos_encoding(self, grid: tuple[int, int]) -> torch.Tensor:
        prefix = config.num_position_prefix_tokens
        gh, gw = config.grid_hw
        pos = self.position_embeddings
        patches = pos[:, prefix:].reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=(grid[0], grid[1]), **method)
        return torch.cat([pos[:, :prefix], patches.flatten(2).transpose(1, 2)], dim=1)

    return types.MethodType(interpolate_pos_encoding, embeddings)


def _onnx_module(model, head: str, names: tuple[str, ...], dynamic_size: bool):
    """An export-only copy of `model` whose forward takes the export inputs and returns a tuple of outputs."""
    import copy

    import torch

    model = copy.deepcopy(model).eval().requires_grad_(False)
    if dynamic_size:
        embeddings = (model.vit if hasattr(model, "vit") else model).embeddings
        embeddings.interpolate_pos_encoding = _in_graph_position_resize(embeddings)

    class ExportModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None):
            extra = {"bool_masked_pos": bool_masked_pos} if head == "mim" else {}
            out = self.model(pixel_values, **extra, interpolate_pos_encoding=dynamic_size, return_dict=True)
            return tuple(getattr(out, n) for n in names)

    return ExportModule().eval()


def export_onnx(model_dir: str | os.PathLike, out_path: str | os.PathLike, opset: int | None = None,
                static: bool = False, quantize: str | None = None) -> ExportReport:
    """Export the PyTorch model in `model_dir` to ONNX and check it with onnxruntime.

    By default batch, height and width are dynamic and the check runs at the native and another size;
    `static=True` fixes the image size to the config's (the batch stays dynamic). `quantize="int8"`
    applies onnxruntime's dynamic int8 quantisation (int8 weights, activations quantised per batch).
    """
    _require("onnxruntime", "ONNX export")
    _require("onnxscript", "ONNX export")
    if quantize not in (None, "int8"):
        raise ExportError(f"ONNX export quantises to int8 only, got quantize={quantize!r}.")
    import torch

    model, head = _load("pt", model_dir)
    config = model.config
    names, input_names = _output_names(model, head), _input_names(head)
    module = _onnx_module(model, head, names, dynamic_size=not static)
    example = {k: torch.from_numpy(v) for k, v in check_inputs(config, head, config.image_hw).items()}
    batch = torch.export.Dim("batch", min=1)
    if static:
        dynamic = {"pixel_values": {0: batch}}
    else:
        # At least two patches a side: the tracer treats a size-1 patch grid as a broadcast special case.
        (ph, pw) = config.patch_hw
        height, width = torch.export.Dim("height", min=2 * ph), torch.export.Dim("width", min=2 * pw)
        dynamic = {"pixel_values": {0: batch, 2: height, 3: width}}
    if head == "mim":
        # The patch count is (height // ph) * (width // pw); Dim.AUTO lets the exporter derive it.
        dynamic["bool_masked_pos"] = {0: batch} if static else {0: batch, 1: torch.export.Dim.AUTO}
    sizes = [config.image_hw] if static else [config.image_hw, other_size(config)]
    out_path = os.fspath(out_path)
    with atomic_path(out_path) as tmp:
        fp32_path = tmp if quantize is None else tmp + ".fp32.onnx"
        try:
            with torch.no_grad():
                torch.onnx.export(module, tuple(example.values()), fp32_path, dynamo=True, external_data=False,
                                  input_names=list(input_names), output_names=list(names), opset_version=opset,
                                  dynamic_shapes=dynamic, verbose=False)
            if quantize == "int8":
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantize_dynamic(fp32_path, tmp, weight_type=QuantType.QInt8)
        finally:
            if fp32_path != tmp and os.path.exists(fp32_path):
                os.unlink(fp32_path)
        checks = []
        for hw in sizes:
            inputs = check_inputs(config, head, hw)
            checks.append(_compare(run_onnx(tmp, **inputs), _pt_reference(model, head, inputs, names),
                                   inputs["pixel_values"].shape))
        report = ExportReport("onnx", out_path, head, input_names, names, config.image_hw if static else None, quantize,
                              QUANTIZED_TOLERANCE[quantize] if quantize else FP32_TOLERANCE, bool(quantize), tuple(checks))
        _verify(report)
    return report


def run_onnx(path: str | os.PathLike, pixel_values: np.ndarray, bool_masked_pos: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Run an exported ONNX file with onnxruntime on CPU; outputs by name."""
    import onnxruntime as ort

    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    feed = {"pixel_values": np.asarray(pixel_values, np.float32)}
    if bool_masked_pos is not None:
        feed["bool_masked_pos"] = np.asarray(bool_masked_pos, bool)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed), strict=True))


# ------------------------------------------------------------------------------- TensorFlow: SavedModel, LiteRT
def _tf_function(model, head: str, names: tuple[str, ...], image_hw: tuple[int, int]):
    """A tf.function with a dynamic-batch signature that returns the outputs by name.

    Traced without autograph: the model branches only on static shapes, and autograph would convert these
    closures from their source text.
    """
    import tensorflow as tf

    from .tf.modeling import batched_attention

    config = model.config
    interpolate = tuple(image_hw) != tuple(config.image_hw)
    specs = [tf.TensorSpec((None, config.num_channels, *image_hw), tf.float32, name="pixel_values")]
    if head == "mim":
        patches = (image_hw[0] // config.patch_hw[0]) * (image_hw[1] // config.patch_hw[1])
        specs.append(tf.TensorSpec((None, patches), tf.bool, name="bool_masked_pos"))

        @tf.function(input_signature=specs, autograph=False)
        def serve(pixel_values, bool_masked_pos):
            with batched_attention():  # portable ops: LiteRT has no builtin for the per-head loop's TensorLists
                out = model(pixel_values, bool_masked_pos=bool_masked_pos, interpolate_pos_encoding=interpolate, training=False)
            return {n: getattr(out, n) for n in names}
    else:

        @tf.function(input_signature=specs, autograph=False)
        def serve(pixel_values):
            with batched_attention():  # portable ops: LiteRT has no builtin for the per-head loop's TensorLists
                out = model(pixel_values, interpolate_pos_encoding=interpolate, training=False)
            return {n: getattr(out, n) for n in names}

    return serve


def _inference_save_options():
    """Saving for inference only, without custom gradients: tf.nn.silu's (SwiGLU, silu models) captures its
    `beta` tensor, which tf.saved_model.save cannot serialise ("Found invalid capture ... beta")."""
    import tensorflow as tf

    return tf.saved_model.SaveOptions(experimental_custom_gradients=False)


def _tf_reference(model, head: str, inputs: dict[str, np.ndarray], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    out = model(**inputs, interpolate_pos_encoding=True, training=False)
    return {n: np.asarray(getattr(out, n), dtype=np.float64) for n in names}


def export_savedmodel(model_dir: str | os.PathLike, out_dir: str | os.PathLike) -> ExportReport:
    """Export the TensorFlow model to a SavedModel with a `serving_default` signature (dynamic batch)."""
    import tensorflow as tf

    model, head = _load("tf", model_dir)
    config = model.config
    names, input_names = _output_names(model, head), _input_names(head)
    serve = _tf_function(model, head, names, config.image_hw)
    holder = tf.Module()
    holder.model, holder.serve = model, serve
    out_dir = os.fspath(out_dir)
    with _atomic_dir(out_dir) as tmp:
        tf.saved_model.save(holder, tmp, signatures={"serving_default": serve.get_concrete_function()},
                            options=_inference_save_options())
        inputs = check_inputs(config, head, config.image_hw)
        check = _compare(run_savedmodel(tmp, **inputs), _tf_reference(model, head, inputs, names),
                         inputs["pixel_values"].shape)
        report = ExportReport("savedmodel", out_dir, head, input_names, names, config.image_hw, None, FP32_TOLERANCE,
                              False, (check,))
        _verify(report)
    return report


def run_savedmodel(path: str | os.PathLike, pixel_values: np.ndarray, bool_masked_pos: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Run a SavedModel's `serving_default` signature with `tf.saved_model.load`; outputs by name."""
    import tensorflow as tf

    signature = tf.saved_model.load(os.fspath(path)).signatures["serving_default"]
    feed = {"pixel_values": tf.constant(np.asarray(pixel_values, np.float32))}
    if bool_masked_pos is not None:
        feed["bool_masked_pos"] = tf.constant(np.asarray(bool_masked_pos, bool))
    return {k: v.numpy() for k, v in signature(**feed).items()}


def export_tflite(model_dir: str | os.PathLike, out_path: str | os.PathLike, image_size: Any = None,
                  quantize: str | None = None) -> ExportReport:
    """Export the TensorFlow model to a LiteRT (.tflite) file of built-in ops only, dynamic batch, fixed size.

    `quantize="int8"` is the converter's dynamic-range quantisation (int8 weights, float activations);
    `quantize="fp16"` stores the weights in float16.
    """
    _require("ai_edge_litert", "LiteRT export")
    if quantize not in (None, "int8", "fp16"):
        raise ExportError(f"LiteRT export quantises to int8 or fp16, got quantize={quantize!r}.")
    import tensorflow as tf

    # Freezing the variables into constants: the converter otherwise keeps Keras 3's resource variables as
    # VAR_HANDLE/READ_VARIABLE ops, which the standalone interpreter reads as uninitialised (NaN outputs).
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    model, head = _load("tf", model_dir)
    config = model.config
    image_hw = _image_hw(config, image_size)
    names, input_names = _output_names(model, head), _input_names(head)
    concrete = _tf_function(model, head, names, image_hw).get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    specs = [tf.TensorSpec(t.shape, t.dtype, name=n) for n, t in zip(input_names, frozen.inputs, strict=True)]

    # The frozen function returns a flat list, in tf.nest's order of the dict (sorted keys, not `names`'
    # order); packing it into the original function's structure gives each output its own name back.
    @tf.function(input_signature=specs, autograph=False)
    def named(*args):
        return tf.nest.pack_sequence_as(concrete.structured_outputs, frozen(*args))

    out_path = os.fspath(out_path)
    with tempfile.TemporaryDirectory() as saved, atomic_path(out_path) as tmp:
        tf.saved_model.save(tf.Module(), saved, signatures={"serving_default": named.get_concrete_function()},
                            options=_inference_save_options())
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "fp16":
            converter.target_spec.supported_types = [tf.float16]
        with open(tmp, "wb") as f:
            f.write(converter.convert())
        inputs = check_inputs(config, head, image_hw)
        check = _compare(run_tflite(tmp, **inputs), _tf_reference(model, head, inputs, names),
                         inputs["pixel_values"].shape)
        report = ExportReport("tflite", out_path, head, input_names, names, image_hw, quantize,
                              QUANTIZED_TOLERANCE[quantize] if quantize else FP32_TOLERANCE, bool(quantize), (check,))
        _verify(report)
    return report


def tflite_ops(path: str | os.PathLike) -> set[str]:
    """The names of the operators in a .tflite file, as the LiteRT interpreter reports them."""
    from ai_edge_litert.interpreter import Interpreter

    return {op["op_name"] for op in Interpreter(model_path=os.fspath(path))._get_ops_details()}


def run_tflite(path: str | os.PathLike, pixel_values: np.ndarray, bool_masked_pos: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Run a .tflite file with the standalone LiteRT interpreter (ai-edge-litert); outputs by name."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=os.fspath(path)).get_signature_runner("serving_default")
    feed = {"pixel_values": np.asarray(pixel_values, np.float32)}
    if bool_masked_pos is not None:
        feed["bool_masked_pos"] = np.asarray(bool_masked_pos, bool)
    return {k: np.array(v) for k, v in runner(**feed).items()}


# ---------------------------------------------------------------------------------------------- StableHLO (JAX)
def export_stablehlo(model_dir: str | os.PathLike, out_path: str | os.PathLike, image_size: Any = None) -> ExportReport:
    """Export the Flax model with `jax.export` (symbolic batch, fixed image size) to a serialised file.

    The weights are constants inside the module, so the file runs with JAX alone:
    `jax.export.deserialize(open(path, "rb").read()).call(pixel_values)` returns the outputs by name.
    """
    import jax
    import jax.numpy as jnp

    from .flax.modeling import batched_attention

    model, head = _load("flax", model_dir)
    config = model.config
    image_hw = _image_hw(config, image_size)
    names, input_names = _output_names(model, head), _input_names(head)
    interpolate = tuple(image_hw) != tuple(config.image_hw)
    params = model.params

    def serve(pixel_values, *mask):
        out = model(pixel_values, *mask, interpolate_pos_encoding=interpolate, params=params)
        return {n: getattr(out, n) for n in names}

    (batch,) = jax.export.symbolic_shape("batch")
    specs = [jax.ShapeDtypeStruct((batch, config.num_channels, *image_hw), jnp.float32)]
    if head == "mim":
        patches = (image_hw[0] // config.patch_hw[0]) * (image_hw[1] // config.patch_hw[1])
        specs.append(jax.ShapeDtypeStruct((batch, patches), jnp.bool_))
    with batched_attention():  # the portable form: the per-head loop is a CPU speed-up, not for every device
        exported = jax.export.export(jax.jit(serve))(*specs)
    out_path = os.fspath(out_path)
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as f:
            f.write(exported.serialize())
        inputs = check_inputs(config, head, image_hw)
        reference = model(*inputs.values(), interpolate_pos_encoding=interpolate)
        reference = {n: np.asarray(getattr(reference, n), dtype=np.float64) for n in names}
        check = _compare(run_stablehlo(tmp, **inputs), reference, inputs["pixel_values"].shape)
        report = ExportReport("stablehlo", out_path, head, input_names, names, image_hw, None, FP32_TOLERANCE, False,
                              (check,))
        _verify(report)
    return report


def run_stablehlo(path: str | os.PathLike, pixel_values: np.ndarray, bool_masked_pos: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Deserialise a StableHLO export with `jax.export.deserialize` and run it; outputs by name."""
    import jax

    with open(os.fspath(path), "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    args = [np.asarray(pixel_values, np.float32)] + ([np.asarray(bool_masked_pos, bool)] if bool_masked_pos is not None else [])
    return {k: np.asarray(v) for k, v in exported.call(*args).items()}


EXPORTERS: dict[str, Callable[..., ExportReport]] = {
    "onnx": export_onnx, "tflite": export_tflite, "savedmodel": export_savedmodel, "stablehlo": export_stablehlo,
}
