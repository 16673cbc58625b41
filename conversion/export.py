#!/usr/bin/env python
"""Export an HF-format folder back to a timm state dict or to the original code's .npz.

    python conversion/export.py {timm,jax} HF_DIR OUT_FILE [--numbering old|new]
"""

from __future__ import annotations

import sys

from vit.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
