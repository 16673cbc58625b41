"""ViTImageProcessor: HF's numbers on real photos, every input kind, options, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FIXTURES, HF_TOLERANCE
from PIL import Image

from vit import ViTFeatureExtractor, ViTImageProcessor

IMAGES = FIXTURES / "image_processor"
MANIFEST = json.loads((IMAGES / "manifest.json").read_text())


@pytest.mark.parametrize("variant", list(MANIFEST["variants"]))
def test_reproduces_hf_processor(variant):
    processor = ViTImageProcessor.from_pretrained(IMAGES / f"{variant}_config")
    # HF was given Image.open(f).convert("RGB"); so are we, for a like-for-like comparison.
    images = [Image.open(IMAGES / "images" / name).convert("RGB") for name in MANIFEST["images_per_variant"][variant]]
    out = processor(images, return_tensors="np")["pixel_values"]
    reference = np.load(IMAGES / f"{variant}.npy")
    assert out.shape == reference.shape and out.dtype == np.float32
    assert np.max(np.abs(out - reference)) <= HF_TOLERANCE


def test_paths_arrays_and_pil_agree():
    processor = ViTImageProcessor(size=64)
    path = IMAGES / "images" / "rocket.jpg"
    pil = Image.open(path).convert("RGB")
    hwc = np.asarray(pil)
    chw = hwc.transpose(2, 0, 1)
    outs = [processor(x, return_tensors="np").pixel_values for x in (str(path), path, pil, hwc, chw)]
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


def test_framework_tensors_are_accepted(framework):
    from frameworks import to_framework

    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    processor = ViTImageProcessor(size=32)
    expected = processor(image).pixel_values
    np.testing.assert_array_equal(processor(to_framework(framework, image)).pixel_values, expected)


def test_return_tensors(framework):
    processor = ViTImageProcessor(size=32)
    out = processor(np.zeros((40, 40, 3), np.uint8), return_tensors=framework if framework != "flax" else "jax")
    assert tuple(out["pixel_values"].shape) == (1, 3, 32, 32)


def test_grayscale_array_and_channels_last_output():
    processor = ViTImageProcessor(size={"height": 20, "width": 30})
    out = processor(np.full((10, 12), 255, np.uint8), data_format="channels_last").pixel_values
    assert out.shape == (1, 20, 30, 3)
    np.testing.assert_allclose(out, 1.0)


def test_lists_of_different_sizes_are_batched():
    processor = ViTImageProcessor(size=24)
    images = [np.zeros((30, 40, 3), np.uint8), np.zeros((50, 20, 3), np.uint8), Image.new("L", (9, 70))]
    assert processor(images, return_tensors="np").pixel_values.shape == (3, 3, 24, 24)
    unresized = processor(images[:2], do_resize=False)
    assert isinstance(unresized.pixel_values, list)


def test_float_input_is_resized_without_quantising():
    image = np.random.default_rng(0).random((40, 40, 3)).astype(np.float32) * 255
    out = ViTImageProcessor(size=40)(image).pixel_values
    np.testing.assert_allclose(out[0], (image.transpose(2, 0, 1) / 255 - 0.5) / 0.5, atol=1e-5)
    with pytest.warns(UserWarning, match="already rescaled"):
        ViTImageProcessor(size=40)(image / 255)


def test_options_override_per_call_and_save_load(tmp_path):
    processor = ViTImageProcessor(size=32, resample="bicubic", image_mean=[0.1, 0.2, 0.3], image_std=[0.3, 0.2, 0.1])
    processor.save_pretrained(tmp_path)
    again = ViTImageProcessor.from_pretrained(tmp_path)
    assert again.to_dict() == processor.to_dict() and again.resample == 3
    image = np.full((8, 8, 3), 255, np.uint8)
    out = again(image, do_normalize=False, size=8).pixel_values
    np.testing.assert_allclose(out, 1.0)


def test_feature_extractor_is_a_deprecated_alias():
    with pytest.warns(FutureWarning, match="ViTImageProcessor"):
        extractor = ViTFeatureExtractor(size=16)
    assert isinstance(extractor, ViTImageProcessor)


@pytest.mark.parametrize("scalar", [0.5, 1, np.float32(0.5)])
def test_a_scalar_mean_and_std_broadcast_over_rgb_as_in_hf(scalar):
    image = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    processor = ViTImageProcessor(size=16, image_mean=scalar, image_std=scalar)
    listed = ViTImageProcessor(size=16, image_mean=[float(scalar)] * 3, image_std=[float(scalar)] * 3)
    out = processor(image).pixel_values
    assert out.shape == (1, 3, 16, 16)
    np.testing.assert_array_equal(out, listed(image).pixel_values)
    # Per call, too; and a one-element list still asks for one channel on purpose.
    assert ViTImageProcessor(size=16)(image, image_mean=scalar, image_std=scalar).pixel_values.shape == (1, 3, 16, 16)
    assert ViTImageProcessor(size=16, image_mean=[0.5], image_std=[0.5])(image).pixel_values.shape == (1, 1, 16, 16)


def test_a_scalar_mean_matches_hf():
    transformers = pytest.importorskip("transformers")
    image = np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    ours = ViTImageProcessor(size=16, image_mean=0.4, image_std=0.2)(image, return_tensors="np").pixel_values
    theirs = transformers.ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=0.4, image_std=0.2)(
        image, return_tensors="np").pixel_values
    assert ours.shape == theirs.shape and np.max(np.abs(ours - theirs)) <= HF_TOLERANCE


FORKED_LOADER = """
import multiprocessing, sys
import numpy as np
from torch.utils.data import DataLoader, Dataset
from vit import ViTImageProcessor

processor = ViTImageProcessor(size=16, num_workers=2)
images = [np.full((20, 20, 3), i, np.uint8) for i in range(4)]
parent = processor(images).pixel_values  # the parent's batched call starts its thread pool


class Batches(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return processor(images).pixel_values[index]  # a batched call inside the forked worker


loader = DataLoader(Batches(), batch_size=2, num_workers=2, multiprocessing_context=multiprocessing.get_context("fork"))
rows = np.concatenate([batch.numpy() for batch in loader])
assert np.array_equal(rows, parent), "the workers computed other numbers than the parent"
print("ok")
"""


def test_the_thread_pool_survives_a_fork_into_dataloader_workers():
    """Before the fix, the workers inherited a pool without threads and waited forever."""
    import subprocess
    import sys

    pytest.importorskip("torch")
    result = subprocess.run([sys.executable, "-c", FORKED_LOADER], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_a_used_processor_pickles_and_deep_copies_for_spawned_workers():
    import copy
    import pickle

    processor = ViTImageProcessor(size=8)
    images = [np.zeros((9, 9, 3), np.uint8)] * 2
    expected = processor(images).pixel_values  # starts the pool
    for clone in (pickle.loads(pickle.dumps(processor)), copy.deepcopy(processor)):
        np.testing.assert_array_equal(clone(images).pixel_values, expected)
