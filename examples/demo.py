"""`make demo`: classify held-out handwritten digits with the shipped model in PyTorch, TensorFlow and Flax.

Prints each framework's accuracy and predictions, and the largest logit difference between frameworks.
"""

from __future__ import annotations

import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
from digits import digits_split  # noqa: E402

import vit  # noqa: E402
from vit.cli import demo_model_dir  # noqa: E402


def logits_in(framework: str, pixels: np.ndarray) -> np.ndarray:
    folder = demo_model_dir()
    if framework == "PyTorch":
        import torch

        model = vit.ViTForImageClassification.from_pretrained(folder).eval()
        with torch.inference_mode():
            return model(torch.from_numpy(pixels)).logits.numpy()
    if framework == "TensorFlow":
        return vit.TFViTForImageClassification.from_pretrained(folder)(pixels).logits.numpy()
    return np.asarray(vit.FlaxViTForImageClassification.from_pretrained(folder)(pixels).logits)


def main() -> int:
    _, _, images, labels = digits_split()
    processor = vit.ViTImageProcessor.from_pretrained(demo_model_dir())
    pixels = processor(list(images), return_tensors="np").pixel_values
    print(f"{len(images)} held-out scans of handwritten digits (scikit-learn), model: {demo_model_dir()}\n")
    results = {fw: logits_in(fw, pixels) for fw in ("PyTorch", "TensorFlow", "Flax")}
    for framework, logits in results.items():
        predictions = logits.argmax(-1)
        accuracy = float((predictions == labels).mean())
        shown = " ".join(str(p) for p in predictions[:30])
        print(f"{framework:>10}: accuracy {accuracy:.1%}  predictions {shown} ...")
    print(f"{'truth':>10}:                 {' '.join(str(t) for t in labels[:30])} ...\n")
    names = list(results)
    same = all(np.array_equal(results[a].argmax(-1), results[names[0]].argmax(-1)) for a in names)
    worst = max(float(np.max(np.abs(results[a] - results[b]))) for a in names for b in names)
    print(f"identical predictions in all three frameworks: {same}")
    print(f"largest logit difference between frameworks: {worst:.2e}")
    accuracy = float((results["PyTorch"].argmax(-1) == labels).mean())
    return 0 if same and accuracy >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
