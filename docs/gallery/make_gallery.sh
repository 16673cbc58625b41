#!/bin/sh
# Rebuilds the README's gallery from the repository root: sh docs/gallery/make_gallery.sh
set -e
out=docs/gallery
mkdir -p $out/inputs
# Three held-out digit scans (8x8), saved 12x larger so the pictures are legible; the processor shrinks them back.
python -c "
import sys; sys.path.insert(0, 'examples')
from digits import digits_split
from PIL import Image
_, _, images, labels = digits_split()
for i in (0, 3, 5):
    Image.fromarray(images[i]).resize((96, 96), Image.Resampling.NEAREST).save(f'$out/inputs/digit-{labels[i]}.png')
"
python -c "
from PIL import Image
Image.open('tests/fixtures/image_processor/images/rocket.jpg').resize((320, 214)).save('$out/inputs/rocket.jpg', quality=85)
"
vit attention $out/inputs/digit-*.png --method rollout --out $out
vit attention $out/inputs/digit-3.png --method heads --out $out
vit features $out/inputs/digit-*.png --out $out
vit attention $out/inputs/rocket.jpg --method last-layer --framework flax --out $out
vit features $out/inputs/rocket.jpg --out $out
