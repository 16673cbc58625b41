"""Hostile images: corrupt, truncated, empty and odd files, decompression bombs, every PIL mode, animation, EXIF.

Each case gets an error that names the file and the problem, or is processed correctly.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES
from PIL import Image

from vit import ImageError, ViTImageProcessor

IMAGES = FIXTURES / "image_processor"
ROCKET = IMAGES / "images" / "rocket.jpg"


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), "Cannot read"),
    (lambda p: p.write_bytes(ROCKET.read_bytes()[:2000]), "Cannot read"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50), "Cannot read"),
    (lambda p: p.write_text("this is a text file, not an image"), "Cannot read"),
], ids=["zero-byte", "truncated-jpeg", "corrupt-png", "not-an-image"])
def test_unreadable_files_name_the_file(tmp_path, make, message):
    path = tmp_path / "photo.png"
    make(path)
    with pytest.raises(ImageError, match=message) as info:
        ViTImageProcessor(size=8)(str(path))
    assert "photo.png" in str(info.value)


def test_a_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageError, match="is a directory"):
        ViTImageProcessor(size=8)(str(tmp_path))


def test_decompression_bomb_limit_is_respected_and_configurable(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("L", (3000, 3000)).save(path)  # 9 Mpx that compress to a few kB
    with pytest.raises(ImageError, match="decompression bomb"):
        ViTImageProcessor(size=8, max_image_pixels=1_000_000)(str(path))
    out = ViTImageProcessor(size=8, max_image_pixels=10_000_000)(str(path)).pixel_values
    assert out.shape == (1, 3, 8, 8)


def test_animated_gif_and_webp_take_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    for suffix in ("gif", "webp"):
        path = tmp_path / f"anim.{suffix}"
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
        out = ViTImageProcessor(size=16, do_normalize=False)(str(path)).pixel_values[0]
        assert out[0].mean() > 0.9 and out[2].mean() < 0.1, suffix


def test_exif_orientation_is_opt_in(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 20))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)
    default = ViTImageProcessor(do_resize=False, do_normalize=False)(str(path)).pixel_values
    rotated = ViTImageProcessor(do_resize=False, do_normalize=False, apply_exif_orientation=True)(str(path)).pixel_values
    assert default.shape == (1, 3, 20, 40)  # HF parity: EXIF ignored by default
    assert rotated.shape == (1, 3, 40, 20)
    assert rotated[0, 0, :20].mean() > 0.9 and rotated[0, 0, 20:].mean() < 0.1  # white on top after rotation


def test_images_smaller_than_the_target_are_upscaled():
    out = ViTImageProcessor(size=32)(np.full((2, 3, 3), 128, np.uint8)).pixel_values
    assert out.shape == (1, 3, 32, 32) and np.isfinite(out).all()


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F"])
def test_every_pil_mode_is_processed(mode):
    rgb = Image.open(IMAGES / "images" / "astronaut.png").convert("RGB").resize((40, 30))
    image = rgb.convert(mode) if mode not in ("I;16", "PA") else (
        Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257) if mode == "I;16" else rgb.convert("P").convert("PA")
    )
    out = ViTImageProcessor(size=32)(image).pixel_values
    assert out.shape == (1, 3, 32, 32) and np.isfinite(out).all()


def test_alpha_is_composited_on_white():
    transparent = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    out = ViTImageProcessor(size=16)(transparent).pixel_values
    np.testing.assert_allclose(out, 1.0)  # white, normalised with mean = std = 0.5
    grey_alpha = np.zeros((16, 16, 4), np.uint8)
    np.testing.assert_allclose(ViTImageProcessor(size=16)(grey_alpha).pixel_values, 1.0)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 2, 2, 2, 3), np.uint8), "shape"),
    (np.zeros((10, 10, 5), np.uint8), "no axis of 1, 3 or 4"),
    (np.zeros((3, 10, 3), np.uint8), "input_data_format"),
    (np.full((10, 10, 3), np.nan, np.float32), "NaN"),
    (np.zeros((10, 10, 3), complex), "dtype"),
    ("no-such-image.png", "not found"),
    (12, "not an image"),
])
def test_bad_input_is_named(bad, message):
    with pytest.raises(ImageError, match=message):
        ViTImageProcessor(size=8)(bad)


def test_empty_batch_gives_an_empty_array():
    assert ViTImageProcessor(size=8)([], return_tensors="np").pixel_values.shape == (0, 3, 8, 8)
