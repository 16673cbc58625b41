"""Train the small ViT that ships inside the package (`vit/demo_model/`) on scikit-learn's digits.

    python examples/train_digits.py [--out src/vit/demo_model] [--epochs 150]

Seeded, about a minute on a 2-core CPU; the saved model is under 1 MB and reaches about 96% held-out accuracy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from digits import digits_split  # noqa: E402

from vit import ViTConfig, ViTForImageClassification, ViTImageProcessor  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shift(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Augmentation: move each digit by up to one pixel (a scan is never perfectly centred)."""
    padded = torch.nn.functional.pad(batch, (1, 1, 1, 1), value=-1.0)
    out = torch.empty_like(batch)
    offsets = torch.randint(0, 3, (len(batch), 2), generator=generator)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy:dy + 8, dx:dx + 8]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(ROOT, "src", "vit", "demo_model"))
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    train_x, train_y, test_x, test_y = digits_split(args.seed)
    processor = ViTImageProcessor(size=8, image_mean=[0.5], image_std=[0.5])
    pixels = torch.from_numpy(processor(list(train_x), return_tensors="np").pixel_values)
    labels = torch.from_numpy(train_y)
    test_pixels = torch.from_numpy(processor(list(test_x), return_tensors="np").pixel_values)

    config = ViTConfig(image_size=8, patch_size=2, encoder_stride=2, num_channels=1, hidden_size=64,
                       num_hidden_layers=4, num_attention_heads=4, intermediate_size=128, layer_norm_eps=1e-6,
                       hidden_dropout_prob=0.1, id2label={i: str(i) for i in range(10)})
    model = ViTForImageClassification(config)
    steps_per_epoch = int(np.ceil(len(pixels) / 64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=args.epochs * steps_per_epoch,
                                                   pct_start=0.1)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(pixels), generator=generator)
        for i in range(steps_per_epoch):
            idx = order[i * 64:(i + 1) * 64]
            loss = model(shift(pixels[idx], generator), labels=labels[idx]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        if epoch % 10 == 9 or epoch == args.epochs - 1:
            model.eval()
            with torch.inference_mode():
                accuracy = (model(test_pixels).logits.argmax(-1).numpy() == test_y).mean()
            print(f"epoch {epoch + 1}: loss {loss.item():.3f}, held-out accuracy {accuracy:.3f}")
    model.config = config.copy(hidden_dropout_prob=0.0)
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out) if not f.startswith("."))
    print(f"saved {args.out} ({size / 1024:.0f} KiB) in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
