"""The `vit` command: classify images, convert and export checkpoints, describe a model folder, benchmark."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence

from .errors import ViTError


def _hub_folder(path: str, revision: str | None = None, **want) -> str:
    """A local folder for a model folder or hub id (ORG/NAME, downloaded through huggingface_hub's cache)."""
    from .hub import HubOptions, resolve

    return resolve(path, HubOptions(revision=revision), **want)


def _add_revision(p: argparse.ArgumentParser) -> None:
    p.add_argument("--revision", help="for a hub id: a branch, tag or commit (default: the main branch)")


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert an HF, timm or original-JAX checkpoint into an HF folder",
                       description="Convert a checkpoint into an HF folder (config.json, model.safetensors, "
                                   "preprocessor_config.json) that vit loads in PyTorch, TensorFlow and Flax.")
    p.add_argument("--from", dest="source_kind", choices=["auto", "hf", "timm", "jax"], default="auto",
                   help="the source's kind (default: detect it)")
    p.add_argument("source", help="an HF folder, a timm .safetensors/.bin file or folder, an original .npz, or a hub id")
    p.add_argument("out_dir", help="the folder to write")
    p.add_argument("--num-attention-heads", type=int, help="timm's fused qkv does not reveal the head count")
    p.add_argument("--image-size", type=int, nargs="+", metavar=("H", "W"),
                   help="the source's size when its position grid is not square, or a size to resize to")
    p.add_argument("--pooling", choices=["cls", "mean"],
                   help="the pooling, where the tensors do not tell: a timm state dict with a class token and no "
                        "fc_norm (timm's global_pool 'token' or 'avg') needs it, unless its folder's config.json says")
    p.add_argument("--layer-norm-eps", type=float, help="default: 1e-6 for timm and JAX")
    p.add_argument("--hidden-act", help="default: gelu (timm), gelu_pytorch_tanh (original JAX)")
    p.add_argument("--num-labels", type=int, help="check the head's number of classes")
    p.add_argument("--resize-method", choices=["bicubic", "bicubic_antialias", "linear"],
                   help="how --image-size resizes positions (default: the source's own: HF bicubic, timm "
                        "bicubic_antialias, JAX linear)")
    _add_revision(p)


def _run_convert(args: argparse.Namespace) -> int:
    from .convert import convert_checkpoint

    image_size = None
    if args.image_size:
        if len(args.image_size) > 2:
            raise SystemExit("--image-size takes one or two numbers: H [W]")
        image_size = args.image_size[0] if len(args.image_size) == 1 else list(args.image_size)
    options = dict(num_attention_heads=args.num_attention_heads, image_size=image_size, pooling=args.pooling,
                   layer_norm_eps=args.layer_norm_eps, hidden_act=args.hidden_act, num_labels=args.num_labels,
                   resize_method=args.resize_method)
    source = args.source
    if not os.path.exists(source):  # a hub id: its own files (a timm repo unconverted), then the usual conversion
        from .hub import timm_options_from_config

        source = _hub_folder(source, args.revision, processor="optional", convert_timm=False)
        if args.source_kind in ("auto", "timm"):
            options.update({k: v for k, v in timm_options_from_config(source).items() if options.get(k) is None})
    converted = convert_checkpoint(source, args.out_dir, args.source_kind, **options)
    c = converted.config
    print(f"wrote {args.out_dir}: {c.num_hidden_layers} layers, width {c.hidden_size}, {c.num_attention_heads} heads, "
          f"image {c.image_size}, patch {c.patch_size}, pooling {c.pooling}, {c.num_labels} labels")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model folder for deployment (onnx, tflite, savedmodel, stablehlo) "
                                      "or to a timm state dict / original-JAX .npz",
                       description="onnx, tflite, savedmodel and stablehlo run the artifact in its own runtime "
                                   "and compare it with the framework model before writing it; the input is "
                                   "pixel_values (NCHW float32), the outputs are named after the model's head.")
    p.add_argument("target", choices=["onnx", "tflite", "savedmodel", "stablehlo", "timm", "jax"])
    p.add_argument("folder", metavar="MODEL", help="a model folder or a hub id")
    p.add_argument("out_file", metavar="OUT", help="the file (or SavedModel folder) to write")
    _add_revision(p)
    p.add_argument("--numbering", choices=["old", "new"], default="old",
                   help="jax: module numbering of the released checkpoints (old) or current Flax's (new)")
    p.add_argument("--opset", type=int, help="onnx: the ONNX opset (default: the exporter's)")
    p.add_argument("--static", action="store_true",
                   help="onnx: fix the image size to the config's (default: dynamic height and width)")
    p.add_argument("--quantize", choices=["int8", "fp16"],
                   help="onnx: int8 (onnxruntime dynamic quantisation); tflite: int8 (dynamic range) or fp16")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                   help="tflite, stablehlo: the fixed image size (default: the config's)")


def _run_export(args: argparse.Namespace) -> int:
    folder = _hub_folder(args.folder, args.revision)
    if args.target in ("timm", "jax"):
        from .convert import export_jax, export_timm

        if args.target == "timm":
            export_timm(folder, args.out_file)
        else:
            export_jax(folder, args.out_file, args.numbering)
        print(f"wrote {args.out_file}")
        return 0
    from . import export

    options = {"onnx": dict(opset=args.opset, static=args.static, quantize=args.quantize),
               "tflite": dict(image_size=args.image_size, quantize=args.quantize),
               "savedmodel": {}, "stablehlo": dict(image_size=args.image_size)}[args.target]
    given = {"--opset": args.opset is not None, "--static": args.static, "--quantize": args.quantize is not None,
             "--image-size": args.image_size is not None}
    unused = [flag for flag, on in given.items() if on and flag.lstrip("-").replace("-", "_") not in options]
    if unused:
        raise export.ExportError(f"{', '.join(unused)} does not apply to {args.target} export.")
    print(export.EXPORTERS[args.target](folder, args.out_file, **options).summary())
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a model folder: architecture, parameters, files, labels, recipe")
    p.add_argument("folder", help="a model folder or a hub id")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    _add_revision(p)


def _run_info(args: argparse.Namespace) -> int:
    import numpy as np

    from .checkpoint import WEIGHT_FILES
    from .config import ViTConfig
    from .params import parameter_specs
    from .processor import PROCESSOR_NAME, AutoImageProcessor

    args.folder = _hub_folder(args.folder, args.revision, processor="optional")
    config = ViTConfig.from_pretrained(args.folder)
    architecture = (config.extra.get("architectures") or ["ViTModel"])[0]
    head = {"ViTForImageClassification": "classification", "ViTForMaskedImageModeling": "mim"}.get(architecture, "base")
    specs = parameter_specs(config, head)
    files = sorted(f for f in os.listdir(args.folder) if not f.startswith("."))
    processor_path = os.path.join(args.folder, PROCESSOR_NAME)
    info = {
        "folder": os.path.abspath(args.folder),
        "architecture": architecture,
        "parameters": int(sum(int(np.prod(s.shape)) for s in specs.values())),
        "image_size": config.image_size, "patch_size": config.patch_size, "hidden_size": config.hidden_size,
        "layers": config.num_hidden_layers, "heads": config.num_attention_heads,
        "mlp_size": config.intermediate_size, "pooling": config.pooling, "hidden_act": config.hidden_act,
        "num_labels": config.num_labels, "labels": [config.id2label[i] for i in range(config.num_labels)],
        "weight_formats": [f for f in WEIGHT_FILES if f in files],
        "files": files,
        "processor": AutoImageProcessor.from_pretrained(processor_path).to_dict() if os.path.isfile(processor_path) else None,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if key == "labels" and len(value) > 12:
            value = value[:12] + [f"... ({len(value)} in all)"]
        print(f"{key:>15}: {value}")
    return 0


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
MODEL_CLASSES = {"pt": "ViTForImageClassification", "tf": "TFViTForImageClassification",
                 "flax": "FlaxViTForImageClassification"}


def demo_model_dir() -> str:
    """The folder of the embedded digits model that ships with the package."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_model")


def _positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (a batch size or top-k of 0 would do nothing, silently)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# The demo model knows sklearn's 8x8 grayscale digit scans; a colour image or one this large is plainly not one.
DIGIT_SCAN_MAX_SIDE = 64
DIGIT_SCAN_MAX_CHANNEL_SPREAD = 16  # grey levels by which R, G and B may differ in a grayscale scan saved as RGB


def looks_like_digit_scan(path: str) -> bool:
    """Whether an image could be a small grayscale digit scan, the only input the embedded demo model knows."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as image:
            if max(image.size) > DIGIT_SCAN_MAX_SIDE:
                return False
            if image.mode in ("1", "L", "LA", "I", "I;16", "F"):
                return True
            rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    except OSError:
        return True  # unreadable: reported as a failure by the classifier itself
    return int((rgb.max(-1) - rgb.min(-1)).max()) <= DIGIT_SCAN_MAX_CHANNEL_SPREAD


def _add_classify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="classify image files or folders (walked recursively)",
                       description="Print the top-k labels of each image. Unreadable files are reported and the "
                                   "exit code is 1; the other images are still classified.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--model", help="an HF-format model folder or a hub id (default: the embedded digits demo model)")
    _add_revision(p)
    p.add_argument("--framework", choices=["pt", "tf", "flax"], default="pt")
    p.add_argument("--top-k", type=_positive_int, default=5)
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: when stderr is a terminal)")


def collect_images(paths: Sequence[str]) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """(image files, failures, skipped non-image files) for the given files and folders."""
    files, failures, skipped = [], [], []
    for path in paths:
        if os.path.isdir(path):
            for folder, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    full = os.path.join(folder, name)
                    if name.startswith("."):
                        continue
                    (files if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES else skipped).append(full)
        elif os.path.exists(path):
            files.append(path)
        else:
            failures.append((path, "no such file or folder"))
    return files, failures, skipped


def _run_classify(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    import vit

    from .errors import ImageError
    from .processor import PROCESSOR_NAME, AutoImageProcessor, ViTImageProcessor

    model_dir = _hub_folder(args.model, args.revision, processor="optional") if args.model else demo_model_dir()
    if not args.model:
        print("vit classify: note: no --model given, so this is the embedded demo model, which knows only 8x8 "
              "scans of handwritten digits (labels 0-9); pass --model DIR to classify anything else.", file=sys.stderr)
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise vit.CheckpointError(f"No model in {model_dir}; pass --model with an HF-format folder.")
    model_class = _model_class(args.framework)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = model_class.from_pretrained(model_dir)
    if any(name.startswith("classifier.") for name in model.load_report.initialised):
        raise ViTError(f"{model_dir}: this model has no classifier (its weights hold no classifier.*, e.g. a "
                       "ViTModel backbone), so its labels would come from a random head. Use it as a feature "
                       "extractor (ViTModel), or fine-tune a classifier first: python examples/train_pt.py "
                       f"--model {model_dir} --data DATA --out OUT.")
    for warning in caught:
        warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    if args.framework == "pt":
        model.eval()
    config = model.config
    if os.path.isfile(os.path.join(model_dir, PROCESSOR_NAME)):
        processor = AutoImageProcessor.from_pretrained(model_dir)
    else:
        processor = ViTImageProcessor(size=dict(zip(("height", "width"), config.image_hw, strict=True)))
    files, failures, skipped = collect_images(args.paths)
    if not args.model:
        not_digits = [path for path in files if not looks_like_digit_scan(path)]
        if not_digits:
            print(f"vit classify: warning: {len(not_digits)} of {len(files)} images are not digit scans (colour, or "
                  f"larger than {DIGIT_SCAN_MAX_SIDE} px), e.g. {not_digits[0]}; the demo model's labels for them are "
                  "meaningless. Pass --model DIR.", file=sys.stderr)
    if skipped:
        print(f"skipped {len(skipped)} files that are not images by their suffix: {', '.join(skipped[:5])}"
              f"{' ...' if len(skipped) > 5 else ''}", file=sys.stderr)
    top_k = max(1, min(args.top_k, config.num_labels))
    results = []
    bar = tqdm(total=len(files), unit="img", disable=not args.progress if args.progress is not None else None,
               file=sys.stderr, desc="classifying")
    for start in range(0, len(files), args.batch_size):
        batch_files, arrays = [], []
        for path in files[start:start + args.batch_size]:
            try:
                arrays.append(processor(path, return_tensors="np").pixel_values[0])
                batch_files.append(path)
            except ImageError as err:
                failures.append((path, str(err)))
        if arrays:
            logits = _logits(model, args.framework, np.stack(arrays))
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            for path, row in zip(batch_files, probs, strict=True):
                order = np.argsort(-row)[:top_k]
                results.append((path, [(config.id2label[int(i)], float(row[i])) for i in order]))
        bar.update(len(files[start:start + args.batch_size]))
    bar.close()
    _print_results(results, args.format)
    for path, reason in failures:
        print(f"vit classify: failed: {path}: {reason}", file=sys.stderr)
    if failures:
        print(f"vit classify: {len(failures)} of {len(files) + sum(1 for p in args.paths if not os.path.exists(p))} "
              "inputs failed", file=sys.stderr)
    return 1 if failures else 0


def _model_class(framework: str):
    """The classification class of `framework`; a framework that is not installed is a one-line error."""
    import vit

    try:
        return getattr(vit, MODEL_CLASSES[framework])
    except ImportError as err:
        raise ViTError(f"--framework {framework} needs {FRAMEWORK_PACKAGES[framework]}, which is not installed "
                       f"({err}); install it with pip install 'vit[{framework}]', or choose another --framework."
                       ) from err


FRAMEWORK_PACKAGES = {"pt": "PyTorch", "tf": "TensorFlow", "flax": "JAX and Flax"}


def _logits(model, framework: str, pixel_values):
    import numpy as np

    if framework == "pt":
        import torch

        with torch.inference_mode():
            return model(torch.from_numpy(pixel_values)).logits.float().numpy()
    return np.asarray(model(pixel_values).logits, dtype=np.float32)


def _print_results(results, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps([{"path": p, "predictions": [{"label": lab, "score": round(s, 6)} for lab, s in preds]}
                          for p, preds in results], indent=2))
    elif fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(["path", "rank", "label", "score"])
        for path, preds in results:
            for rank, (label, score) in enumerate(preds, start=1):
                writer.writerow([path, rank, label, f"{score:.6f}"])
    else:
        width = max((len(p) for p, _ in results), default=4)
        for path, preds in results:
            print(f"{path:<{width}}  " + "  ".join(f"{label} {score:.3f}" for label, score in preds))


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="the quick benchmark against HF transformers (about a minute)")
    p.add_argument("--out", help="the folder for the results JSON (default: a new temporary folder; only "
                                 "`make bench` writes the source tree's benchmarks/results)")


def _run_bench(args: argparse.Namespace) -> int:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = os.path.join(root, "benchmarks", "bench.py")
    if not os.path.isfile(script):
        raise ViTError("vit bench runs benchmarks/bench.py from a source checkout; it is not in this installation.")
    import subprocess
    import tempfile

    out = args.out or tempfile.mkdtemp(prefix="vit-bench-")
    return subprocess.call([sys.executable, script, "--quick", "--out", out])


# ---------------------------------------------------------------- attention, features, embed, neighbours
def _add_explain_and_embed(sub: argparse._SubParsersAction) -> None:
    from .explain import METHODS

    p = sub.add_parser("attention", help="draw what the model attends to, over each image (PNG)",
                       description="Write one PNG per image: the attention map over the image at its own size, "
                                   "with a colour bar; --method heads draws one panel per head.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    p.add_argument("--model", help="an HF-format model folder (default: the embedded digits demo model)")
    p.add_argument("--framework", choices=["pt", "tf", "flax"], default="pt")
    p.add_argument("--method", choices=METHODS, default="rollout",
                   help="rollout: attention rollout over all layers; last-layer: the class token's attention in "
                        "the last layer; heads: that, per head (default: rollout)")
    p.add_argument("--out", default="vit-maps", help="the folder to write the PNGs to (default: vit-maps)")
    p = sub.add_parser("features", help="colour the patches by the PCA of their features (DINOv2 style, PNG)",
                       description="Write one PNG per image: the image beside its patches coloured by the first "
                                   "three principal components of the patch features, fitted on all the images.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    p.add_argument("--model", help="an HF-format model folder (default: the embedded digits demo model)")
    p.add_argument("--framework", choices=["pt", "tf", "flax"], default="pt")
    p.add_argument("--background-threshold", type=float, default=None,
                   help="patches whose first component (scaled to [0, 1]) is below this are background (black)")
    p.add_argument("--out", default="vit-maps", help="the folder to write the PNGs to (default: vit-maps)")
    p = sub.add_parser("embed", help="embed a folder or a list of images into Parquet (local or Ray)",
                       description="One row per image (path, embedding, model, revision, width, height), written "
                                   "by shards, each atomically; --resume skips the finished shards. Unreadable "
                                   "images are listed in OUT/_failures.tsv and never stop the run.")
    p.add_argument("source", metavar="SOURCE",
                   help="a folder (walked recursively) or a text file of paths; with --engine ray also anything "
                        "ray.data.read_images reads")
    p.add_argument("--model", help="an HF-format model folder (default: the embedded digits demo model)")
    p.add_argument("--out", required=True, help="the output folder, e.g. embeddings.parquet")
    p.add_argument("--pool", choices=["cls", "mean", "pooler", "image_embeds"], default="cls")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--framework", choices=["pt", "tf", "flax"], default="pt")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="ray: ray.init() joins RAY_ADDRESS when set, else starts a local instance")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run into the same --out")
    p.add_argument("--shard-size", type=int, default=1024, help="images per Parquet shard (default: 1024)")
    p.add_argument("--workers", type=int, help="Ray actors (default: one per CPU, or per GPU share)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="Ray: GPUs for each actor (default: 0)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: when stderr is a terminal)")
    p = sub.add_parser("neighbours", help="find the images of an embedding index nearest to a query image",
                       description="Embed QUERY_IMAGE with the index's model and pooling and print the k most "
                                   "similar images by cosine similarity.")
    p.add_argument("query", metavar="QUERY_IMAGE")
    p.add_argument("--index", required=True, help="a folder written by vit embed")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--model", help="the model folder (default: the one recorded in the index)")
    p.add_argument("--framework", choices=["pt", "tf", "flax"], default="pt")


def _open_for_drawing(processor, path: str):
    from PIL import ImageOps

    image = processor._open(path)
    return ImageOps.exif_transpose(image) if processor.apply_exif_orientation else image


def _png_name(out_dir: str, path: str, suffix: str, used: set[str]) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    name, number = f"{stem}.{suffix}.png", 1
    while name in used:  # two inputs with the same name in different folders
        number += 1
        name = f"{stem}-{number}.{suffix}.png"
    used.add(name)
    return os.path.join(out_dir, name)


def _save_png(image, path: str) -> None:
    from .files import atomic_write

    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def _run_pictures(args: argparse.Namespace) -> int:
    import numpy as np

    from . import explain
    from .embed import load_model, load_processor
    from .errors import ImageError

    model_dir = args.model or demo_model_dir()
    model = load_model(model_dir, args.framework)
    processor = load_processor(model_dir, model.config)
    files, failures, _ = collect_images(args.images)
    opened = []
    for path in files:
        try:
            image = _open_for_drawing(processor, path)
            opened.append((path, image, processor(image, return_tensors="np").pixel_values))
        except ImageError as err:
            failures.append((path, str(err)))
    os.makedirs(args.out, exist_ok=True)
    used: set[str] = set()
    if args.command == "features" and opened:
        features = [explain.patch_features(model, pixels)[0] for _, _, pixels in opened]
        colours = explain.pca_rgb(np.stack(features), args.background_threshold)  # one PCA for all the images
        for (path, image, _), rgb in zip(opened, colours, strict=True):
            target = _png_name(args.out, path, "features", used)
            _save_png(explain.features_panel(image, rgb), target)
            print(target)
    for path, image, pixels in opened if args.command == "attention" else []:
        grid_map = explain.attention_map(model, pixels, args.method)[0]
        picture = (explain.heads_grid(image, grid_map) if args.method == "heads"
                   else explain.overlay_heatmap(image, grid_map))
        target = _png_name(args.out, path, args.method, used)
        _save_png(picture, target)
        print(target)
    for path, reason in failures:
        print(f"vit {args.command}: failed: {path}: {reason}", file=sys.stderr)
    return 1 if failures else 0


def _run_embed(args: argparse.Namespace) -> int:
    from .embed import embed_images

    summary = embed_images(args.source, args.out, args.model or demo_model_dir(), pool=args.pool,
                           batch_size=args.batch_size, framework=args.framework, engine=args.engine,
                           resume=args.resume, shard_size=args.shard_size, workers=args.workers,
                           gpus_per_worker=args.gpus_per_worker, progress=args.progress)
    failures = summary["failures"]
    print(f"wrote {summary['rows']} embeddings to {summary['out']}"
          + (f"; {failures} unreadable images are listed in {os.path.join(summary['out'], '_failures.tsv')}"
             if failures else ""))
    return 0


def _run_neighbours(args: argparse.Namespace) -> int:
    from .embed import neighbours

    for rank, (path, score) in enumerate(neighbours(args.query, args.index, args.k, args.model, args.framework), 1):
        print(f"{rank:>3}  {score:.4f}  {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vit", description="One Vision Transformer in PyTorch, TensorFlow and JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_classify(sub)
    _add_convert(sub)
    _add_export(sub)
    _add_info(sub)
    _add_bench(sub)
    _add_explain_and_embed(sub)
    return parser


COMMANDS = {"classify": _run_classify, "convert": _run_convert, "export": _run_export, "info": _run_info,
            "bench": _run_bench,
            "attention": _run_pictures, "features": _run_pictures, "embed": _run_embed, "neighbours": _run_neighbours}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        # A warning is a message for the user of the command, not a pointer into vit's source.
        warnings.showwarning = lambda message, *_, **__: print(f"vit {args.command}: warning: {message}", file=sys.stderr)
        try:
            code = COMMANDS[args.command](args)
            sys.stdout.flush()  # a full disk behind stdout fails here, inside the handler, not at exit
            return code
        except (ViTError, FileNotFoundError, NotADirectoryError) as err:
            print(f"vit {args.command}: error: {err}", file=sys.stderr)
            return 2
        except ImportError as err:
            print(f"vit {args.command}: error: a package it needs is not installed ({err}); install vit with the "
                  "extra you need: pip install 'vit[torch]', 'vit[tf]' or 'vit[flax]'.", file=sys.stderr)
            return 2
        except OSError as err:  # a read-only target, a full disk, a closed pipe
            where = f"{err.filename}: " if err.filename else "writing the output: "
            print(f"vit {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
            _silence_stdout()
            return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it again at exit (to a full disk) raises nothing more."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
