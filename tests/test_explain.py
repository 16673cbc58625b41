"""vit.explain: attention rollout, class-token and per-head maps, PCA features; `vit attention` / `vit features`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import MAP_ATOL, PHOTOS
from frameworks import build, run
from PIL import Image

from vit import explain
from vit.cli import demo_model_dir
from vit.embed import load_model, load_processor

METHOD_FUNCTIONS = {"rollout": explain.attention_rollout, "last-layer": explain.last_layer_attention,
                    "heads": explain.head_attention}


def vit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vit.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def photo_pixels():
    """The four photos, processed for the demo model (8x8 grey, 4x4 patches)."""
    processor = load_processor(demo_model_dir(), None)
    return processor(sorted(str(p) for p in PHOTOS.iterdir()), return_tensors="np").pixel_values


@pytest.fixture(scope="module")
def pt_maps(photo_pixels):
    model = load_model(demo_model_dir(), "pt")
    maps = {name: fn(model, photo_pixels) for name, fn in METHOD_FUNCTIONS.items()}
    maps["features"] = explain.patch_features(model, photo_pixels)
    return maps


@pytest.mark.parametrize("method", [*METHOD_FUNCTIONS, "features"])
def test_the_same_maps_in_every_framework(framework, method, photo_pixels, pt_maps):
    model = load_model(demo_model_dir(), framework)
    fn = METHOD_FUNCTIONS.get(method, explain.patch_features)
    maps = fn(model, photo_pixels)
    reference = pt_maps[method]
    assert maps.shape == reference.shape
    assert maps.shape[0] == 4 and maps.shape[-2:] == (4, 4) or method == "features"
    np.testing.assert_allclose(maps, reference, atol=MAP_ATOL, rtol=0)
    if method == "features":
        np.testing.assert_allclose(explain.pca_rgb(maps), explain.pca_rgb(reference), atol=1e-4, rtol=0)


def test_rollout_is_the_product_of_residual_averaged_attention(framework, tiny_config, photo_pixels):
    """Recompute rollout from the raw attentions by the paper's recipe, independently of the implementation."""
    model = build(framework, "base", tiny_config)
    pixels = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    attentions = run(framework, model, pixels, output_attentions=True)["attentions"]
    tokens = attentions[0].shape[-1]
    expected = np.stack([np.eye(tokens)] * 2)
    for layer in attentions:
        a = 0.5 * layer.astype(np.float64).mean(axis=1) + 0.5 * np.eye(tokens)
        expected = (a / a.sum(-1, keepdims=True)) @ expected
    rollout = explain.attention_rollout(model, pixels)
    assert rollout.shape == (2, 4, 4)
    np.testing.assert_allclose(rollout, expected[:, 0, 1:].reshape(2, 4, 4), atol=1e-6)
    # The class token's row sums to 1 over all tokens; the map holds the patch share of it.
    assert np.all(rollout.sum(axis=(1, 2)) < 1.0)
    heads = explain.head_attention(model, pixels, layer=0)
    np.testing.assert_allclose(heads, attentions[0][:, :, 0, 1:].reshape(2, 4, 4, 4), atol=1e-7)


def test_register_tokens_are_dropped_from_the_maps():
    """Registers paper: the class token attends to registers too, but maps cover the patches only."""
    config = SimpleNamespace(patch_hw=(8, 8), num_prefix_tokens=1, class_token=True, num_register_tokens=4)
    layout = explain.token_layout(config, (1, 3, 16, 16), 1 + 4 + 4)
    assert (layout.class_index, layout.num_prefix, layout.grid) == (0, 5, (2, 2))
    rows = np.arange(9.0)  # class, 4 registers, 4 patches
    np.testing.assert_array_equal(explain._to_grid(rows, layout), [[5, 6], [7, 8]])
    # A config whose num_prefix_tokens already counts the registers gives the same layout.
    config.num_prefix_tokens = 5
    assert explain.token_layout(config, (1, 3, 16, 16), 9).num_prefix == 5
    with pytest.raises(explain.ViTError, match="prefix tokens"):
        explain.token_layout(config, (1, 3, 16, 16), 7)


def test_a_model_without_class_token_is_explained_through_its_mean_pooled_output(framework, tiny_config):
    config = tiny_config.copy(class_token=False, pooling="mean")
    model = build(framework, "base", config)
    pixels = np.random.default_rng(1).normal(size=(1, 3, 32, 32)).astype(np.float32)
    attentions = run(framework, model, pixels, output_attentions=True)["attentions"]
    expected = attentions[-1][0].mean(axis=0).mean(axis=0).reshape(4, 4)  # heads, then the 16 query rows
    np.testing.assert_allclose(explain.last_layer_attention(model, pixels)[0], expected, atol=1e-6)


def test_pca_colours_are_in_range_sign_stable_and_mask_the_background():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 4, 4, 16))
    features[:, :2] += 5.0 * rng.normal(size=16)  # a strong first component: "foreground" in the top half
    rgb = explain.pca_rgb(features)
    assert rgb.shape == (2, 4, 4, 3) and rgb.min() >= 0.0 and rgb.max() <= 1.0
    # The sign of each component follows the data, never the SVD's arbitrary choice: negated features give
    # exactly the mirrored colours.
    np.testing.assert_allclose(explain.pca_rgb(-features), 1.0 - rgb, atol=1e-6)
    masked = explain.pca_rgb(features, background_threshold=0.5)
    first = explain._scale01(explain._components(features.reshape(-1, 16), 1)[:, 0]).reshape(2, 4, 4)
    assert np.all(masked[first < 0.5] == 0.0) and np.any(masked[first >= 0.5] > 0.0)
    with pytest.raises(explain.ViTError, match="background"):
        explain.pca_rgb(features, background_threshold=1.5)


def test_overlay_keeps_the_image_size_and_adds_a_colour_bar():
    image = Image.new("RGB", (120, 50), "white")
    grid_map = np.arange(8.0).reshape(2, 4)
    picture = explain.overlay_heatmap(image, grid_map)
    assert picture.height == 50 and picture.width > 120
    pixels = np.asarray(picture)
    # The map's low corner (top left) is dark violet, its high corner (bottom right) bright yellow.
    assert pixels[2, 2, 2] > pixels[2, 2, 1] and pixels[47, 117, 1] > pixels[2, 2, 1]
    grid = explain.heads_grid(Image.new("RGB", (800, 400)), np.random.default_rng(0).random((12, 2, 4)))
    assert grid.width > 4 * 320 and grid.height >= 3 * 160  # 4 x 3 panels of at most 320 px, aspect kept


def test_wrong_inputs_are_named(tiny_config):
    model = build("pt", "base", tiny_config)
    with pytest.raises(explain.ViTError, match="batch, channels, height, width"):
        explain.attention_rollout(model, np.zeros((3, 32, 32), np.float32))
    with pytest.raises(explain.ViTError, match="head_fusion"):
        explain.attention_rollout(model, np.zeros((1, 3, 32, 32), np.float32), head_fusion="median")
    with pytest.raises(explain.ViTError, match="framework"):
        explain.framework_of(object())


@pytest.mark.parametrize("method", ["rollout", "last-layer", "heads"])
def test_vit_attention_writes_a_png_per_image_at_its_own_size(tmp_path, method):
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    result = vit("attention", str(PHOTOS / "rocket.jpg"), str(tmp_path / "broken.jpg"), "--method", method,
                 "--framework", "flax", "--out", str(tmp_path / "maps"))
    assert result.returncode == 1 and "broken.jpg" in result.stderr  # the bad file is named, the good one drawn
    written = Path(result.stdout.strip())
    assert written == tmp_path / "maps" / f"rocket.{method}.png"
    original, picture = Image.open(PHOTOS / "rocket.jpg"), Image.open(written)
    if method == "heads":
        assert picture.height >= 2 * 320 * original.height / original.width  # 4 heads: 2 rows of panels
    else:
        assert picture.height == original.height and picture.width > original.width
    assert not [p for p in (tmp_path / "maps").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_vit_features_fits_one_pca_over_all_images(tmp_path):
    result = vit("features", str(PHOTOS), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    names = sorted(Path(line).name for line in result.stdout.split())
    assert names == ["astronaut.features.png", "camera.features.png", "logo.features.png", "rocket.features.png"]
    original, picture = Image.open(PHOTOS / "camera.png"), Image.open(tmp_path / "camera.features.png")
    assert picture.size == (2 * original.width + 4, original.height)
