"""`make equivalence`: the matrix of max |differences| between frameworks, as a Markdown table.

Every cell is the largest absolute difference over all output fields (hidden states, attentions, pooler,
logits, loss, reconstruction) of one head and config, at the native and an interpolated resolution,
between the two frameworks of its column. The suite asserts each is <= 1e-5.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from equivalence.test_equivalence import FAMILY_CASES, PAIRS, VIT_CASES, outputs  # noqa: E402


def max_diff(a, b) -> float:
    if isinstance(a, tuple):
        return max((max_diff(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0


def table(cases, outputs_of) -> float:
    """Print one Markdown table over (config, head) cases; return its largest difference."""
    header = "| config | head | " + " | ".join(f"{a}/{b}" for a, b in PAIRS) + " |"
    print(header)
    print("|" + "---|" * (2 + len(PAIRS)))
    worst = 0.0
    for config_name, head in cases:
        cells = []
        for pair in PAIRS:
            diff = 0.0
            for interpolated in (False, True):
                a, b = (outputs_of(fw, config_name, head, interpolated) for fw in pair)
                diff = max(diff, max(max_diff(a[k], b[k]) for k in a))
            worst = max(worst, diff)
            cells.append(f"{diff:.1e}")
        print(f"| {config_name} | {head} | " + " | ".join(cells) + " |")
    return worst


def main() -> None:
    worst = table(VIT_CASES, outputs)
    print("\nThe ViT family (CLIP, SigLIP, DINOv2 with registers and SwiGLU, DeiT, DeiT III):\n")
    worst = max(worst, table(FAMILY_CASES, outputs))
    print(f"\nLargest difference: {worst:.1e} (tolerance 1e-5)")


if __name__ == "__main__":
    main()
