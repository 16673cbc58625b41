"""An image-folder dataset (one subfolder per class) for the fine-tuning and SimMIM examples, framework-free.

Batches are a pure function of (seed, epoch, batch index): the same order and the same augmentation every
time, so a run that is interrupted and resumed sees exactly the data that an uninterrupted run sees.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np
from PIL import Image

from vit import ViTImageProcessor
from vit.cli import IMAGE_SUFFIXES


class ImageFolder:
    """`root/<class name>/<image>`; a seeded split into training and evaluation images."""

    def __init__(self, root: str, processor: ViTImageProcessor, eval_fraction: float = 0.2, seed: int = 0,
                 min_classes: int = 1) -> None:
        if not os.path.isdir(root):
            raise SystemExit(f"--data {root}: no such folder; expected DATA/<class name>/<image files>.")
        self.classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
        if not self.classes:
            raise SystemExit(f"{root} has no class subfolders; expected root/<class>/<image files>.")
        if len(self.classes) < min_classes:
            # One label would make HF's problem_type inference train a regression on the label index.
            raise SystemExit(f"{root} has {len(self.classes)} class subfolder ({self.classes[0]}); a classifier needs "
                             f"at least {min_classes}. Add a folder per class, or use --task simmim.")
        items = [(os.path.join(root, c, f), label) for label, c in enumerate(self.classes)
                 for f in sorted(os.listdir(os.path.join(root, c))) if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES]
        if len(items) < 2:
            raise SystemExit(f"{root} holds {len(items)} images; training needs at least two (one to evaluate).")
        order = np.random.default_rng(seed).permutation(len(items))
        cut = max(1, int(round(len(items) * eval_fraction)))
        self.eval_items = [items[i] for i in order[:cut]]
        self.train_items = [items[i] for i in order[cut:]]
        self.processor, self.seed = processor, seed

    def steps_per_epoch(self, batch_size: int) -> int:
        return math.ceil(len(self.train_items) / batch_size)

    def train_batch(self, epoch: int, index: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch `index` of `epoch`: shuffled and augmented (random crop and flip) from (seed, epoch, index)."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.train_items))
        chosen = [self.train_items[i] for i in order[index * batch_size:(index + 1) * batch_size]]
        rng = np.random.default_rng([self.seed, epoch, index, 1])
        images = [augment(Image.open(path).convert("RGB"), rng) for path, _ in chosen]
        return self.processor(images, return_tensors="np").pixel_values, np.array([label for _, label in chosen])

    def eval_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(self.eval_items), batch_size):
            chosen = self.eval_items[start:start + batch_size]
            pixels = self.processor([path for path, _ in chosen], return_tensors="np").pixel_values
            yield pixels, np.array([label for _, label in chosen])


def augment(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random crop of 70-100% of each side, and a horizontal flip half of the time."""
    w, h = image.size
    cw, ch = max(1, int(w * rng.uniform(0.7, 1.0))), max(1, int(h * rng.uniform(0.7, 1.0)))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    image = image.crop((x, y, x + cw, y + ch))
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image


def random_masks(rng: np.random.Generator, batch: int, num_patches: int, ratio: float = 0.6) -> np.ndarray:
    """SimMIM's random patch masks: `ratio` of the patches of each image, chosen at random."""
    masks = np.zeros((batch, num_patches), dtype=bool)
    count = max(1, int(round(num_patches * ratio)))
    for row in masks:
        row[rng.choice(num_patches, count, replace=False)] = True
    return masks


def warmup_cosine(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup to `peak`, then cosine decay to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_tiny_folder(root: str, classes: int = 3, per_class: int = 12, size: int = 24, seed: int = 0) -> str:
    """A generated image folder (coloured shapes per class), for tests and trying the scripts out."""
    rng = np.random.default_rng(seed)
    colours = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (200, 200, 40)]
    for c in range(classes):
        os.makedirs(os.path.join(root, f"class_{c}"), exist_ok=True)
        for i in range(per_class):
            array = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            lo, hi = sorted(rng.integers(2, size - 2, 2))
            array[lo:hi + 2, :, :] = colours[c % len(colours)] if c % 2 == 0 else array[lo:hi + 2, :, :]
            array[:, lo:hi + 2, :] = colours[c % len(colours)]
            Image.fromarray(array).save(os.path.join(root, f"class_{c}", f"{i}.png"))
    return root


def training_arguments(description: str):
    """The command line shared by the three frameworks' training scripts."""
    import argparse

    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="an image folder: DATA/<class name>/<images>")
    p.add_argument("--out", required=True, help="where the model and the checkpoints go")
    p.add_argument("--task", choices=["classify", "simmim"], default="classify",
                   help="fine-tune a classifier, or SimMIM masked-image-modelling pretraining")
    p.add_argument("--model", help="an HF-format folder to start from (default: a small ViT from scratch)")
    p.add_argument("--image-size", type=int,
                   help="train at this size (default: the --model folder's own, or 32 for a model from scratch)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=5)
    p.add_argument("--save-every", type=int, default=10, help="checkpoint every N steps")
    p.add_argument("--max-steps", type=int, help="stop after this many steps in all (as if interrupted)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUT")
    p.add_argument("--mixed-precision", choices=["no", "bf16"], default="no")
    p.add_argument("--seed", type=int, default=0)
    return p


DEFAULT_IMAGE_SIZE = 32  # the size of the small ViT trained from scratch


def prepare(args) -> ViTImageProcessor:
    """The processor for the run, and `args.image_size` as the (height, width) the model is trained at.

    With --model the folder's own recipe (its preprocessor_config.json, else its config's image size) is used, so
    a 224-pixel checkpoint is fed 224-pixel images normalised as it was trained; --image-size overrides the size
    (and the position embeddings are resized when the model loads).
    """
    from vit import ViTConfig

    if not args.model:
        size = args.image_size or DEFAULT_IMAGE_SIZE
        args.image_size = (size, size)
        return ViTImageProcessor(size=size)
    config = ViTConfig.from_pretrained(args.model)
    args.resize_to = args.image_size  # an --image-size given with --model resizes the position embeddings
    if args.image_size:
        config = config.copy(image_size=args.image_size)
    args.image_size = tuple(config.image_hw)
    size = dict(zip(("height", "width"), args.image_size, strict=True))
    if os.path.isfile(os.path.join(args.model, "preprocessor_config.json")):
        return ViTImageProcessor.from_pretrained(args.model, size=size)
    return ViTImageProcessor(size=size)


def label_arguments(classes: list[str]) -> dict:
    """HF's fine-tuning keywords for these classes: integer id2label keys and the matching label2id."""
    return {"num_labels": len(classes), "id2label": dict(enumerate(classes)),
            "label2id": {name: i for i, name in enumerate(classes)}}


def pretrained_arguments(args, classes: list[str]) -> dict:
    """from_pretrained's keywords for --model: the labels (a new head), and the size to resize positions to."""
    resize = {"image_size": args.resize_to} if args.resize_to else {}
    return {**label_arguments(classes), "ignore_mismatched_sizes": True, **resize}


def min_classes(args) -> int:
    """A classifier needs two classes (one label is HF's regression); SimMIM ignores the labels."""
    return 2 if args.task == "classify" else 1


def parse_and_open(parser) -> tuple:
    """(args, processor, data): the command line, the run's processor (`prepare`) and its image folder, whose
    checks end the script with a message (a missing --data, a one-class folder for a classifier)."""
    args = parser.parse_args()
    processor = prepare(args)
    return args, processor, ImageFolder(args.data, processor, seed=args.seed, min_classes=min_classes(args))


def small_config(num_labels: int, image_size, class_names: list[str]):
    """The ViT the examples train when no --model is given; `image_size` is an int or (height, width)."""
    from vit import ViTConfig

    if not isinstance(image_size, int) and image_size[0] == image_size[1]:
        image_size = image_size[0]
    return ViTConfig(image_size=image_size if isinstance(image_size, int) else list(image_size), patch_size=8,
                     encoder_stride=8, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                     **label_arguments(class_names))


def accuracy(predict, data: ImageFolder, batch_size: int) -> float:
    """Top-1 accuracy on the evaluation images; `predict` maps a pixel batch to logits."""
    correct = seen = 0
    for pixels, labels in data.eval_batches(batch_size):
        correct += int((np.asarray(predict(pixels)).argmax(-1) == labels).sum())
        seen += len(labels)
    return correct / max(1, seen)
