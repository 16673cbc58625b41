#!/usr/bin/env python
"""Export an HF-format folder back to a timm state dict or to the original code's .npz, or for deployment.

    python conversion/export.py {timm,jax} HF_DIR OUT_FILE [--numbering old|new]
    python conversion/export.py {onnx,tflite,savedmodel,stablehlo} MODEL OUT [options]   # see `vit export --help`
"""

from __future__ import annotations

import sys

from vit.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
