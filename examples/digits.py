"""The handwritten-digits data behind the embedded demo model: scikit-learn's bundled 8x8 scans.

Shared by `train_digits.py` (which trains and ships the model) and `demo.py` (`make demo`), so both use
the same seeded split.
"""

from __future__ import annotations

import numpy as np


def digits_split(seed: int = 0, held_out: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels); images are uint8 8x8 grayscale, 0-255."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(images))
    cut = int(len(images) * (1 - held_out))
    train, test = order[:cut], order[cut:]
    return images[train], data.target[train], images[test], data.target[test]
