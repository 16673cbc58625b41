"""The `vit` command: classify images, convert and export checkpoints, describe a model folder, benchmark."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence

from .errors import ViTError


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert an HF, timm or original-JAX checkpoint into an HF folder",
                       description="Convert a checkpoint into an HF folder (config.json, model.safetensors, "
                                   "preprocessor_config.json) that vit loads in PyTorch, TensorFlow and Flax.")
    p.add_argument("--from", dest="source_kind", choices=["auto", "hf", "timm", "jax"], default="auto",
                   help="the source's kind (default: detect it)")
    p.add_argument("source", help="an HF folder, a timm .safetensors/.bin file or folder, or an original .npz")
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
    converted = convert_checkpoint(args.source, args.out_dir, args.source_kind, **options)
    c = converted.config
    print(f"wrote {args.out_dir}: {c.num_hidden_layers} layers, width {c.hidden_size}, {c.num_attention_heads} heads, "
          f"image {c.image_size}, patch {c.patch_size}, pooling {c.pooling}, {c.num_labels} labels")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export an HF folder to a timm state dict or an original-JAX .npz")
    p.add_argument("target", choices=["timm", "jax"])
    p.add_argument("folder", help="an HF-format folder")
    p.add_argument("out_file", help="a .safetensors file (timm) or a .npz file (jax)")
    p.add_argument("--numbering", choices=["old", "new"], default="old",
                   help="JAX module numbering: the released checkpoints' (old) or current Flax's (new)")


def _run_export(args: argparse.Namespace) -> int:
    from .convert import export_jax, export_timm

    if args.target == "timm":
        export_timm(args.folder, args.out_file)
    else:
        export_jax(args.folder, args.out_file, args.numbering)
    print(f"wrote {args.out_file}")
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a model folder: architecture, parameters, files, labels, recipe")
    p.add_argument("folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _run_info(args: argparse.Namespace) -> int:
    import numpy as np

    from .checkpoint import WEIGHT_FILES
    from .config import ViTConfig
    from .params import parameter_specs
    from .processor import PROCESSOR_NAME, ViTImageProcessor

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
        "processor": ViTImageProcessor.from_pretrained(processor_path).to_dict() if os.path.isfile(processor_path) else None,
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
    p.add_argument("--model", help="an HF-format model folder (default: the embedded digits demo model)")
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
    from .processor import PROCESSOR_NAME, ViTImageProcessor

    model_dir = args.model or demo_model_dir()
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
        processor = ViTImageProcessor.from_pretrained(model_dir)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vit", description="One Vision Transformer in PyTorch, TensorFlow and JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_classify(sub)
    _add_convert(sub)
    _add_export(sub)
    _add_info(sub)
    _add_bench(sub)
    return parser


COMMANDS = {"classify": _run_classify, "convert": _run_convert, "export": _run_export, "info": _run_info,
            "bench": _run_bench}


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
