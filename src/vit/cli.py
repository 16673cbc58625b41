"""The `vit` command: classify images, convert and export checkpoints, describe a model folder, benchmark."""

from __future__ import annotations

import argparse
import json
import os
import sys
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
    p.add_argument("--pooling", choices=["cls", "mean"], help="override the inferred pooling")
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
        "parameters": int(sum(int(__import__("numpy").prod(s.shape)) for s in specs.values())),
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vit", description="One Vision Transformer in PyTorch, TensorFlow and JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_convert(sub)
    _add_export(sub)
    _add_info(sub)
    return parser


COMMANDS = {"convert": _run_convert, "export": _run_export, "info": _run_info}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ViTError, FileNotFoundError, NotADirectoryError) as err:
        print(f"vit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
