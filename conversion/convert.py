#!/usr/bin/env python
"""Convert an HF, timm or original-JAX ViT checkpoint into an HF folder that vit loads in every framework.

    python conversion/convert.py --from {auto,hf,timm,jax} SRC OUT_DIR [options]

OUT_DIR gets config.json, model.safetensors and the source recipe's preprocessor_config.json. The work is
done by `vit.convert`; this script only parses arguments (the same ones as `vit convert`).
"""

from __future__ import annotations

import sys

from vit.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
