"""The family's image processors (CLIP, SigLIP, BiT/DINOv2, DeiT) and AutoImageProcessor: HF's numbers.

Two kinds of proof: HF 4.57.6's own outputs on real photos (the conformance vectors), and HF's processors
run live on generated images chosen for rounding (odd, thin, tiny, portrait and landscape sizes).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from conftest import FIXTURES
from PIL import Image

from vit import (
    AutoImageProcessor,
    BitImageProcessor,
    CLIPImageProcessor,
    ConfigError,
    DeiTImageProcessor,
    ImageError,
    SiglipImageProcessor,
    ViTImageProcessor,
)

VECTORS = FIXTURES / "family" / "processors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
CLASSES = {cls.__name__: cls for cls in (CLIPImageProcessor, SiglipImageProcessor, BitImageProcessor, DeiTImageProcessor)}
TOLERANCE = 1e-5
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def vector_config(name: str) -> dict:
    return json.loads((VECTORS / f"{name}_config" / "preprocessor_config.json").read_text())


# HF preprocessor_config.json files beyond the vectors' four: the hub's older spellings (int sizes,
# feature_extractor_type) and recipes whose crop is larger than the resized image, so HF zero-pads.
EXTRA_CONFIGS = {
    "clip-openai-legacy": {
        "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "resample": 3, "size": 224,
    },
    "deit-legacy": {
        "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "DeiTFeatureExtractor", "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD,
        "resample": 3, "size": 256,
    },
    "dinov2-crop-beyond-resize": {
        "image_processor_type": "BitImageProcessor", "size": {"shortest_edge": 20}, "crop_size": {"height": 32, "width": 27},
        "do_center_crop": True, "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD, "resample": 3,
    },
    "clip-fixed-size-bilinear": {
        "image_processor_type": "CLIPImageProcessor", "size": {"height": 30, "width": 51}, "crop_size": {"height": 33, "width": 40},
        "resample": 2,
    },
    "siglip-non-square-bilinear": {"image_processor_type": "SiglipImageProcessor", "size": {"height": 37, "width": 53}, "resample": 2},
    "deit-odd": {"image_processor_type": "DeiTImageProcessor", "size": {"height": 41, "width": 39}, "crop_size": {"height": 30, "width": 31}},
}
ALL_CONFIGS = {**{name: vector_config(name) for name in MANIFEST["processors"]}, **EXTRA_CONFIGS}
# (height, width): tiny, odd, thin, square, portrait and landscape; sizes where int(N * long / short) truncates.
# The first is unambiguous: HF infers the channel axis of the whole list from the first image.
IMAGE_SIZES = [(224, 224), (1, 1), (2, 3), (7, 5), (17, 31), (31, 17), (225, 223), (199, 300), (300, 199), (333, 500), (3, 250), (97, 61)]


def write_config(folder, config: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(config))


def hf_processor(folder):
    transformers = pytest.importorskip("transformers")
    from transformers.utils import logging

    logging.set_verbosity_error()  # HF's notice that a slow processor was saved
    return transformers.AutoImageProcessor.from_pretrained(str(folder), use_fast=False)


def noise_images(sizes=IMAGE_SIZES, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def max_difference(ours, theirs) -> float:
    return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(ours, theirs, strict=True))


# ------------------------------------------------------------------------------------- HF's vectors
@pytest.mark.parametrize("name", list(MANIFEST["processors"]))
def test_reproduces_hf_vectors_on_every_photo(name):
    processor = AutoImageProcessor.from_pretrained(VECTORS / f"{name}_config")
    assert type(processor).__name__ == MANIFEST["processors"][name]
    expected = np.load(VECTORS / f"{name}.npz")
    # HF was given Image.open(f).convert("RGB"); so are we.
    images = [Image.open(VECTORS / "images" / file).convert("RGB") for file in MANIFEST["images"]]
    out = processor(images, return_tensors="np")["pixel_values"]
    assert out.dtype == np.float32 and out.shape == (len(images), *expected[MANIFEST["images"][0]].shape)
    for index, file in enumerate(MANIFEST["images"]):
        assert np.max(np.abs(out[index] - expected[file])) <= TOLERANCE, file


@pytest.mark.parametrize("name", list(MANIFEST["processors"]))
def test_the_named_class_reads_the_same_config(name):
    cls = CLASSES[MANIFEST["processors"][name]]
    processor = cls.from_pretrained(VECTORS / f"{name}_config")
    file = MANIFEST["images"][0]
    out = processor(Image.open(VECTORS / "images" / file).convert("RGB")).pixel_values[0]
    assert np.max(np.abs(out - np.load(VECTORS / f"{name}.npz")[file])) <= TOLERANCE


# ------------------------------------------------------------------------------ HF's processors, live
@pytest.mark.parametrize("name", list(ALL_CONFIGS))
def test_matches_hf_on_generated_sizes(name, tmp_path):
    write_config(tmp_path, ALL_CONFIGS[name])
    theirs_processor = hf_processor(tmp_path)
    ours_processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(ours_processor).__name__ == type(theirs_processor).__name__
    images = noise_images()
    theirs = theirs_processor(images, return_tensors="np")["pixel_values"]
    ours = ours_processor(images, return_tensors="np")["pixel_values"]
    assert ours.shape == theirs.shape
    assert max_difference(ours, theirs) <= TOLERANCE


@pytest.mark.parametrize("name", ["clip", "dinov2"])
def test_shortest_edge_without_crop_matches_hf_per_image(name, tmp_path):
    write_config(tmp_path, {**ALL_CONFIGS[name], "do_center_crop": False, "size": {"shortest_edge": 24}})
    images = noise_images([(17, 31), (31, 17), (24, 24), (5, 70), (61, 97)])
    theirs = hf_processor(tmp_path)(images)["pixel_values"]
    ours = AutoImageProcessor.from_pretrained(tmp_path)(images).pixel_values
    assert [a.shape for a in ours] == [b.shape for b in theirs]
    assert max_difference(ours, theirs) <= TOLERANCE


def test_resize_rounding_is_hfs_for_every_size():
    pytest.importorskip("transformers")
    from transformers.image_transforms import get_resize_output_image_size

    processor = CLIPImageProcessor()
    for edge in (1, 7, 14, 224, 256, 518):
        for height in range(1, 90):
            for width in (1, 2, 3, height, 89, 97, 1000, 1023):
                options = {"size": {"shortest_edge": edge}}
                hf_height, hf_width = get_resize_output_image_size(
                    np.zeros((height, width, 3)), edge, default_to_square=False, input_data_format="channels_last"
                )
                assert processor._resize_target(width, height, options) == (hf_width, hf_height), (edge, height, width)


def test_centre_crop_is_hfs_for_every_offset():
    pytest.importorskip("transformers")
    from transformers.image_transforms import center_crop

    image = np.random.default_rng(0).integers(1, 256, (9, 12, 3), dtype=np.uint8)
    for height in range(1, 15):
        for width in range(1, 17):
            ours = CLIPImageProcessor._centre_crop(image, height, width)
            theirs = center_crop(image, (height, width), input_data_format="channels_last")
            np.testing.assert_array_equal(ours, theirs, err_msg=f"crop {height}x{width}")


@pytest.mark.parametrize("name", ["clip", "dinov2"])
def test_pil_modes_match_hf(name, tmp_path):
    # CLIP's and BiT's HF processors convert every mode to RGB (alpha composited on white), as ours do.
    write_config(tmp_path, ALL_CONFIGS[name])
    rgba = np.random.default_rng(1).integers(0, 256, (50, 70, 4), dtype=np.uint8)
    base = Image.fromarray(rgba, "RGBA")
    palette_with_alpha = base.convert("RGB").convert("P")
    palette_with_alpha.info["transparency"] = 3
    images = [
        base, base.convert("RGB"), base.convert("L"), base.convert("LA"), base.convert("P"), palette_with_alpha,
        base.convert("CMYK"), base.convert("1"), base.convert("RGB").convert("YCbCr"),
    ]
    theirs = hf_processor(tmp_path)(images, return_tensors="np")["pixel_values"]
    ours = AutoImageProcessor.from_pretrained(tmp_path)(images, return_tensors="np").pixel_values
    for mode, a, b in zip([im.mode for im in images], ours, theirs, strict=True):
        assert np.max(np.abs(a - b)) <= TOLERANCE, mode


def test_alpha_follows_do_convert_rgb():
    rgba = Image.fromarray(np.random.default_rng(5).integers(0, 256, (30, 30, 4), dtype=np.uint8), "RGBA")
    dropped = CLIPImageProcessor(size=30, crop_size=30)(rgba.convert("RGB")).pixel_values
    composited = CLIPImageProcessor(size=30, crop_size=30)(Image.alpha_composite(
        Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")).pixel_values
    # do_convert_rgb=True (CLIP's, BiT's default): PIL's convert("RGB"), as HF; otherwise ViT's white background.
    np.testing.assert_array_equal(CLIPImageProcessor(size=30, crop_size=30)(rgba).pixel_values, dropped)
    np.testing.assert_array_equal(CLIPImageProcessor(size=30, crop_size=30, do_convert_rgb=False)(rgba).pixel_values, composited)
    np.testing.assert_array_equal(CLIPImageProcessor(size=30, crop_size=30)(rgba, do_convert_rgb=False).pixel_values, composited)


def test_exif_orientation_is_applied_once_with_alpha(tmp_path):
    rgba = Image.fromarray(np.random.default_rng(6).integers(0, 256, (20, 36, 4), dtype=np.uint8), "RGBA")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    rgba.save(tmp_path / "rotated.png", exif=exif)
    processor = BitImageProcessor(size=20, crop_size=(36, 20), apply_exif_orientation=True)
    upright = Image.fromarray(np.asarray(rgba.convert("RGB")).transpose(1, 0, 2)[:, ::-1].copy())
    out = processor(tmp_path / "rotated.png").pixel_values
    assert out.shape == (1, 3, 36, 20)
    np.testing.assert_array_equal(out, processor(upright).pixel_values)


@pytest.mark.parametrize("name", list(MANIFEST["processors"]))
def test_uint8_arrays_match_hf(name, tmp_path):
    write_config(tmp_path, ALL_CONFIGS[name])
    arrays = [np.asarray(image) for image in noise_images([(40, 57), (57, 40)], seed=2)]
    inputs = [arrays[0], arrays[1].transpose(2, 0, 1)]  # HWC and CHW
    theirs = [hf_processor(tmp_path)(array, return_tensors="np")["pixel_values"][0] for array in inputs]
    ours = AutoImageProcessor.from_pretrained(tmp_path)(inputs, return_tensors="np").pixel_values
    assert max_difference(ours, theirs) <= TOLERANCE


# ------------------------------------------------------------------------------ inputs and outputs
@pytest.mark.parametrize("cls", list(CLASSES.values()), ids=list(CLASSES))
def test_paths_arrays_and_pil_agree(cls):
    processor = cls(size=40, crop_size=32) if cls.has_centre_crop else cls(size=40)
    path = VECTORS / "images" / "motorcycle_left.png"
    pil = Image.open(path).convert("RGB")
    hwc = np.asarray(pil)
    outs = [processor(x, return_tensors="np").pixel_values for x in (str(path), path, pil, hwc, hwc.transpose(2, 0, 1))]
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


@pytest.mark.parametrize("cls", list(CLASSES.values()), ids=list(CLASSES))
def test_framework_tensors_and_return_tensors(cls, framework):
    from frameworks import to_framework

    image = np.random.default_rng(0).integers(0, 255, (40, 51, 3), dtype=np.uint8)
    processor = cls(size=36, crop_size=32) if cls.has_centre_crop else cls(size=32)
    expected = processor(image).pixel_values
    np.testing.assert_array_equal(processor(to_framework(framework, image)).pixel_values, expected)
    out = processor(image, return_tensors=framework if framework != "flax" else "jax")["pixel_values"]
    assert tuple(out.shape) == (1, 3, 32, 32)
    np.testing.assert_array_equal(np.asarray(out), expected)


def test_mixed_sizes_stack_after_the_crop():
    processor = CLIPImageProcessor(size=24, crop_size=20)
    images = [np.zeros((30, 40, 3), np.uint8), np.zeros((50, 20, 3), np.uint8), Image.new("L", (9, 70)), Image.new("RGBA", (3, 3))]
    assert processor(images, return_tensors="np").pixel_values.shape == (4, 3, 20, 20)
    # Without the crop each image keeps its aspect ratio: a list, or a clear error when a tensor is asked for.
    uncropped = processor(images[:2], do_center_crop=False)
    assert [a.shape for a in uncropped.pixel_values] == [(3, 24, 32), (3, 60, 24)]
    with pytest.raises(ImageError, match="do_center_crop"):
        processor(images[:2], do_center_crop=False, return_tensors="np")


def test_options_override_per_call():
    image = np.random.default_rng(3).integers(0, 256, (45, 61, 3), dtype=np.uint8)
    processor = BitImageProcessor()
    overridden = processor(image, size={"shortest_edge": 30}, crop_size={"height": 20, "width": 26}, resample="bilinear").pixel_values
    built = BitImageProcessor(size=30, crop_size=(20, 26), resample=2)(image).pixel_values
    np.testing.assert_array_equal(overridden, built)
    assert overridden.shape == (1, 3, 20, 26)
    assert processor(image, do_center_crop=False, size=30).pixel_values.shape == (1, 3, 30, 40)


def test_crop_of_a_small_image_pads_with_zeros_before_normalising():
    processor = DeiTImageProcessor(do_resize=False, crop_size=6, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    out = processor(np.full((2, 3, 3), 255, np.uint8)).pixel_values[0]
    # The 2x3 image sits at rows 2-3 and columns 2-4 (HF's ceil((6 - n) / 2) offsets); padding is 0 -> -1.
    inside = np.zeros((6, 6), bool)
    inside[2:4, 2:5] = True
    np.testing.assert_allclose(out[:, inside], 1.0)
    np.testing.assert_allclose(out[:, ~inside], -1.0)


def test_float_images_are_resized_in_float():
    # A uint8 pipeline would round 100.4 to 100; the float one keeps it through the resize and the crop.
    image = np.full((40, 52, 3), 100.4, np.float32)
    out = CLIPImageProcessor(size=32, crop_size=28)(image).pixel_values
    assert out.shape == (1, 3, 28, 28)
    expected = (100.4 / 255 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    np.testing.assert_allclose(out[0], np.broadcast_to(expected[:, None, None], out[0].shape), atol=TOLERANCE)


# ------------------------------------------------------------------------------ save and load
@pytest.mark.parametrize("name", list(ALL_CONFIGS))
def test_save_pretrained_round_trips_through_hf(name, tmp_path):
    write_config(tmp_path / "source", ALL_CONFIGS[name])
    processor = AutoImageProcessor.from_pretrained(tmp_path / "source")
    processor.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == type(processor).__name__
    again = AutoImageProcessor.from_pretrained(tmp_path / "saved")
    assert type(again) is type(processor) and again.to_dict() == processor.to_dict()
    # HF reads what we wrote as the same class, with the same numbers.
    theirs = hf_processor(tmp_path / "saved")
    assert type(theirs).__name__ == type(processor).__name__
    images = noise_images([(45, 61), (61, 45)], seed=4)
    assert max_difference(again(images).pixel_values, theirs(images, return_tensors="np")["pixel_values"]) <= TOLERANCE


def test_saved_keys_are_those_of_hfs_class(tmp_path):
    SiglipImageProcessor().save_pretrained(tmp_path / "siglip")
    DeiTImageProcessor().save_pretrained(tmp_path / "deit")
    siglip = json.loads((tmp_path / "siglip" / "preprocessor_config.json").read_text())
    deit = json.loads((tmp_path / "deit" / "preprocessor_config.json").read_text())
    assert "crop_size" not in siglip and "do_center_crop" not in siglip
    assert "do_convert_rgb" not in deit and deit["crop_size"] == {"height": 224, "width": 224}


def test_defaults_are_hfs():
    transformers = pytest.importorskip("transformers")
    for name, cls in CLASSES.items():
        theirs, ours = getattr(transformers, name)(), cls()
        for key in ("size", "crop_size", "do_center_crop", "image_mean", "image_std", "resample", "rescale_factor"):
            if hasattr(theirs, key):
                value = getattr(theirs, key)
                assert getattr(ours, key) == (int(value) if key == "resample" else value), (name, key)


# ------------------------------------------------------------------------------ AutoImageProcessor
@pytest.mark.parametrize(
    ("model_type", "expected"),
    [("clip", "CLIPImageProcessor"), ("clip_vision_model", "CLIPImageProcessor"), ("siglip", "SiglipImageProcessor"),
     ("dinov2", "BitImageProcessor"), ("dinov2_with_registers", "BitImageProcessor"), ("deit", "DeiTImageProcessor"),
     ("vit", "ViTImageProcessor")],
)
def test_auto_falls_back_to_the_model_type(model_type, expected, tmp_path):
    config = {key: value for key, value in vector_config("clip").items() if key != "image_processor_type"}
    if expected in ("SiglipImageProcessor", "ViTImageProcessor", "DeiTImageProcessor"):
        config = {"size": {"height": 32, "width": 32}, "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD}
    write_config(tmp_path, config)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    assert type(AutoImageProcessor.from_pretrained(tmp_path)).__name__ == expected


def test_auto_reads_the_file_itself_and_old_feature_extractor_names(tmp_path):
    write_config(tmp_path, EXTRA_CONFIGS["clip-openai-legacy"])
    processor = AutoImageProcessor.from_pretrained(tmp_path / "preprocessor_config.json")
    assert isinstance(processor, CLIPImageProcessor)
    assert processor.size == {"shortest_edge": 224} and processor.crop_size == {"height": 224, "width": 224}


def test_auto_maps_fast_names_to_the_pil_processor_with_a_warning(tmp_path):
    write_config(tmp_path, {**vector_config("dinov2"), "image_processor_type": "BitImageProcessorFast"})
    with pytest.warns(UserWarning, match="PIL"):
        processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(processor) is BitImageProcessor


def test_auto_errors_name_the_problem(tmp_path):
    write_config(tmp_path / "unknown", {"image_processor_type": "Siglip2ImageProcessor"})
    with pytest.raises(ConfigError, match="Siglip2ImageProcessor.*not supported"):
        AutoImageProcessor.from_pretrained(tmp_path / "unknown")
    write_config(tmp_path / "untyped", {"size": {"height": 32, "width": 32}})
    with pytest.raises(ConfigError, match="image_processor_type"):
        AutoImageProcessor.from_pretrained(tmp_path / "untyped")
    (tmp_path / "untyped" / "config.json").write_text(json.dumps({"model_type": "resnet"}))
    with pytest.raises(ConfigError, match="'resnet'"):
        AutoImageProcessor.from_pretrained(tmp_path / "untyped")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="No preprocessor_config.json"):
        AutoImageProcessor.from_pretrained(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        AutoImageProcessor.from_pretrained(tmp_path / "bad")
    with pytest.raises(TypeError, match="from_pretrained"):
        AutoImageProcessor()


# ------------------------------------------------------------------------------ bad configurations
def test_vit_processor_refuses_a_config_that_centre_crops():
    # ViTImageProcessor has no crop: it used to warn and resize a DeiT config to 256 x 256, a wrong answer.
    with pytest.raises(ConfigError, match="centre-crop.*AutoImageProcessor"):
        ViTImageProcessor.from_pretrained(VECTORS / "deit_config")


def test_bad_sizes_and_options_are_refused():
    with pytest.raises(ConfigError, match="SiglipImageProcessor resizes to a fixed"):
        SiglipImageProcessor(size={"shortest_edge": 224})
    with pytest.raises(ConfigError, match="DeiTImageProcessor resizes to a fixed"):
        DeiTImageProcessor(size={"shortest_edge": 224})
    with pytest.raises(ConfigError, match="mixes 'shortest_edge'"):
        CLIPImageProcessor(size={"shortest_edge": 224, "longest_edge": 500})
    with pytest.raises(ConfigError, match="shortest_edge'] must be a positive int"):
        CLIPImageProcessor(size={"shortest_edge": 0})
    with pytest.raises(ConfigError, match="crop_size"):
        CLIPImageProcessor(crop_size={"height": 224})
    with pytest.raises(ConfigError, match="no centre crop"):
        SiglipImageProcessor(do_center_crop=True)
    with pytest.raises(TypeError, match="crop_size"):
        SiglipImageProcessor()(np.zeros((8, 8, 3), np.uint8), crop_size=4)
    with pytest.raises(TypeError, match="unexpected options"):
        CLIPImageProcessor()(np.zeros((8, 8, 3), np.uint8), crop=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CLIPImageProcessor(use_square_size=True, image_processor_type="CLIPImageProcessor")


def test_clip_use_square_size_reads_the_edge_as_a_square():
    assert CLIPImageProcessor(size={"shortest_edge": 32}, use_square_size=True).size == {"height": 32, "width": 32}


def test_processors_import_no_framework():
    import subprocess
    import sys

    frameworks = ("torch", "tensorflow", "jax", "flax", "keras", "transformers")
    code = (
        "import sys, numpy as np, vit\n"
        f"processor = vit.AutoImageProcessor.from_pretrained({str(VECTORS / 'clip_config')!r})\n"
        "processor([np.zeros((30, 40, 3), np.uint8)] * 2, return_tensors='np')\n"
        "vit.SiglipImageProcessor(); vit.BitImageProcessor(); vit.DeiTImageProcessor()\n"
        f"print(sorted(m for m in {frameworks!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
