"""Family models (CLIP, SigLIP, DINOv2, DINOv2 with registers, DeiT) save in every HF format: tf_model.h5 and
flax_model.msgpack hold the family's HF TF and Flax names, which HF's own TF and Flax classes read back where
transformers 4.57.6 has them, and which our loader reads back exactly in every framework where it has not."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import HF_TOLERANCE
from frameworks import run
from test_family import FAMILY, family_class, max_diff

from vit import ViTConfig
from vit.checkpoint import FLAX_WEIGHTS_NAME, TF_WEIGHTS_NAME, _read_file, init_state

WEIGHT_FILE = {"tf": TF_WEIGHTS_NAME, "flax": FLAX_WEIGHTS_NAME}
HEAD_OUTPUTS = ("last_hidden_state", "pooler_output", "image_embeds", "logits", "cls_logits", "distillation_logits")
NUM_LABELS = 3  # for heads that a fixture lacks

# (name, fixture case whose config.json is the start, config overrides, our class). Every family option is in one
# of them: CLIP's pre-norm and bias-free projection, SigLIP's MAP head without class token, DINOv2's LayerScale
# and mask token, SwiGLU, register tokens, DeiT's distillation token and pooler.
SAVE_CASES = {
    "clip": ("clip", {}, "CLIPVisionModel"),
    "clip-projection": ("clip", {}, "CLIPVisionModelWithProjection"),
    "siglip": ("siglip", {}, "SiglipVisionModel"),
    "dinov2": ("dinov2", {}, "Dinov2Model"),
    "dinov2-classification": ("dinov2-classification", {}, "Dinov2ForImageClassification"),
    "dinov2-swiglu": ("dinov2", {"use_swiglu_ffn": True}, "Dinov2Model"),
    "dinov2-registers": ("dinov2-registers", {}, "Dinov2WithRegistersModel"),
    "dinov2-registers-classification": ("dinov2-registers", {"num_labels": NUM_LABELS},
                                        "Dinov2WithRegistersForImageClassification"),
    "deit": ("deit-base", {}, "DeiTModel"),
    "deit-classification": ("deit-base", {"num_labels": NUM_LABELS}, "DeiTForImageClassification"),
    "deit-distilled": ("deit-distilled", {}, "DeiTForImageClassificationWithTeacher"),
}
# A tensor that only the family's distinctive option has, under its name in each layout: its presence shows the
# option is written, not dropped (the exact round trip below shows it is written right).
DISTINCTIVE = {
    "clip-projection": {"tf": "clip/visual_projection/kernel", "flax": "visual_projection/kernel"},
    "siglip": {"tf": "siglip/vision_model/head/attention/in_proj_weight", "flax": "vision_model/head/probe"},
    "dinov2": {"tf": "dinov2/encoder/layer_._1/layer_scale2/lambda1", "flax": "encoder/layer/1/layer_scale2/lambda1"},
    "dinov2-swiglu": {"tf": "dinov2/encoder/layer_._0/mlp/weights_in/kernel", "flax": "encoder/layer/0/mlp/weights_in/kernel"},
    "dinov2-registers": {"tf": "dinov2_with_registers/embeddings/register_tokens", "flax": "embeddings/register_tokens"},
    "dinov2-registers-classification": {"tf": "dinov2_with_registers/embeddings/register_tokens",
                                        "flax": "dinov2_with_registers/embeddings/register_tokens"},
    "deit-distilled": {"tf": "deit/embeddings/distillation_token", "flax": "deit/embeddings/distillation_token"},
}


def save_config(name: str) -> ViTConfig:
    """The case's HF config.json with the overrides (HF's keys: `use_swiglu_ffn` sizes the MLP from `mlp_ratio`)."""
    case, overrides, _ = SAVE_CASES[name]
    hf_config = json.loads((FAMILY / case / "safetensors" / "config.json").read_text())
    config = ViTConfig.from_dict({**hf_config, **{k: v for k, v in overrides.items() if k != "num_labels"}})
    return config.copy(num_labels=overrides["num_labels"]) if "num_labels" in overrides else config


def with_random_weights(model):
    """Every parameter random, biases, norms, tokens and LayerScale too, so a dropped or mis-mapped tensor shows."""
    state = init_state(model.config, model.parameter_specs(), seed=1)
    rng = np.random.default_rng(2)
    state = {k: (v + rng.normal(0, 0.5, v.shape)).astype(np.float32) for k, v in state.items()}
    model.load_canonical_state_dict(state)
    return model, state


def weight_names(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name != "config.json")


@pytest.mark.parametrize("fmt", ["tf", "flax"])
@pytest.mark.parametrize("name", SAVE_CASES)
def test_family_saves_in_tf_and_flax_and_reads_back_exactly(framework, name, fmt, tmp_path):
    cls = family_class(framework, SAVE_CASES[name][2])
    model, state = with_random_weights(cls(save_config(name)))
    model.save_pretrained(tmp_path, formats=(fmt,))
    assert weight_names(tmp_path) == [WEIGHT_FILE[fmt]]
    stored = _read_file(str(tmp_path / WEIGHT_FILE[fmt]))
    assert not [n for n in stored if "text" in n or "logit_scale" in n]  # a vision tower only
    if name in DISTINCTIVE:
        assert DISTINCTIVE[name][fmt] in stored, sorted(stored)
    back = cls.from_pretrained(tmp_path)
    assert back.load_report.initialised == [] and back.load_report.dropped == []
    loaded = back.canonical_state_dict()
    assert set(loaded) == set(state)
    for key, array in state.items():
        np.testing.assert_array_equal(np.asarray(loaded[key]), array, err_msg=key)


# (HF's file in the fixtures, our class that saves, format, names HF wrote that ours lacks). HF's TF and Flax classes
# wrote these files from the same weights, so ours must hold the same names and arrays.
HF_WRITTEN = [
    ("clip", "CLIPVisionModelWithProjection", "tf", "two-tower"),  # HF's TFCLIPModel: ours is its vision part
    ("clip", "CLIPVisionModelWithProjection", "flax", "two-tower"),
    ("dinov2", "Dinov2Model", "flax", set()),
    # HF's classifier keeps the backbone's mask token, which it never uses (no bool_masked_pos); ours has none
    ("dinov2-classification", "Dinov2ForImageClassification", "flax", {"dinov2/embeddings/mask_token"}),
    ("deit-base", "DeiTModel", "tf", set()),
    ("deit-distilled", "DeiTForImageClassificationWithTeacher", "tf", set()),
]


@pytest.mark.parametrize("case, class_name, fmt, hf_only", HF_WRITTEN, ids=[f"{c}-{f}" for c, _, f, _ in HF_WRITTEN])
def test_saved_tf_and_flax_files_hold_what_hf_itself_wrote(case, class_name, fmt, hf_only, tmp_path):
    folder = FAMILY / case / {"tf": "tf_h5", "flax": "flax_msgpack"}[fmt]
    family_class("pt", class_name).from_pretrained(FAMILY / case / "safetensors").save_pretrained(tmp_path, formats=(fmt,))
    ours, hf = _read_file(str(tmp_path / WEIGHT_FILE[fmt])), _read_file(str(folder / WEIGHT_FILE[fmt]))
    two_tower = hf_only == "two-tower"
    if two_tower:  # the first path component of HF's TF names is the main layer, `clip/`
        hf_only = {n for n in hf if n.split("/")[1 if fmt == "tf" else 0] in ("text_model", "text_projection", "logit_scale")}
    assert set(ours) == set(hf) - hf_only
    for name, array in ours.items():
        assert array.dtype == hf[name].dtype and array.shape == hf[name].shape, name
        np.testing.assert_array_equal(array, hf[name], err_msg=name)
    if fmt == "tf" and not two_tower:  # the h5 structure too: HF's layer groups and `<keras model name>/<weight path>:0` entries
        import h5py

        with h5py.File(tmp_path / TF_WEIGHTS_NAME) as mine, h5py.File(folder / TF_WEIGHTS_NAME) as theirs:
            assert list(mine.attrs["layer_names"]) == [n.encode() if isinstance(n, str) else n
                                                        for n in theirs.attrs["layer_names"]]
            for layer in mine.attrs["layer_names"]:
                group = layer.decode()
                assert sorted(n.decode() for n in mine[group].attrs["weight_names"]) == sorted(
                    n.decode() if isinstance(n, bytes) else n for n in theirs[group].attrs["weight_names"])


# (fixture case, our class, HF's class in that framework, HF parameters that our file may lack): every TF and Flax
# vision class that HF 4.57.6 has.
HF_READS = [
    ("clip", "CLIPVisionModel", "TFCLIPVisionModel", ()),
    ("clip", "CLIPVisionModel", "FlaxCLIPVisionModel", ()),
    ("dinov2", "Dinov2Model", "FlaxDinov2Model", ()),
    # HF's classifier keeps the backbone's mask token, which it never uses (no bool_masked_pos); ours has none.
    ("dinov2-classification", "Dinov2ForImageClassification", "FlaxDinov2ForImageClassification",
     (("dinov2", "embeddings", "mask_token"),)),
    ("deit-base", "DeiTModel", "TFDeiTModel", ()),
    ("deit-base", "DeiTForImageClassification", "TFDeiTForImageClassification", ()),
    ("deit-distilled", "DeiTForImageClassificationWithTeacher", "TFDeiTForImageClassificationWithTeacher", ()),
]


def hf_outputs(transformers, hf_class: str, folder, pixels: np.ndarray, unused: tuple) -> object:
    """HF's TF or Flax class loads `folder` strictly (no parameter left at its random init but `unused`) and runs."""
    if hf_class.startswith("TF"):
        hf_model, info = getattr(transformers, hf_class).from_pretrained(folder, output_loading_info=True)
        assert not any(info.values()), info  # nothing missing, unexpected or mis-shaped
        return hf_model(pixels)
    import jax
    import jax.numpy as jnp
    from flax.traverse_util import flatten_dict, unflatten_dict

    # Without HF's random init (slow, and it would hide a missing parameter): the file's parameters only.
    hf_model, params = getattr(transformers, hf_class).from_pretrained(folder, _do_init=False)
    wanted, given = flatten_dict(hf_model.params_shape_tree), flatten_dict(params)
    assert set(given) == set(wanted) - set(unused), set(wanted) ^ set(given)
    given.update({key: jnp.zeros(wanted[key].shape, wanted[key].dtype) for key in unused})
    return jax.jit(lambda p, x: hf_model(x, params=p))(unflatten_dict(given), pixels)


@pytest.mark.filterwarnings("ignore:Some weights were not in the checkpoint")  # DeiTForImageClassification's new head
@pytest.mark.parametrize("case, class_name, hf_class, unused", HF_READS, ids=[h for _, _, h, _ in HF_READS])
def test_hf_tf_and_flax_classes_read_our_saves_back(case, class_name, hf_class, unused, tmp_path):
    """Our TF model's tf_model.h5 is read by HF's TF class, our Flax model's msgpack by HF's Flax class."""
    transformers = pytest.importorskip("transformers")
    framework = "tf" if hf_class.startswith("TF") else "flax"
    model = family_class(framework, class_name).from_pretrained(FAMILY / case / "safetensors")
    model.save_pretrained(tmp_path, formats=(framework,))
    pixels = np.load(FAMILY / case / "expected.npz")["pixel_values"]
    ours, theirs = run(framework, model, pixels), hf_outputs(transformers, hf_class, tmp_path, pixels, unused)
    checked = [name for name in HEAD_OUTPUTS if ours.get(name) is not None and getattr(theirs, name, None) is not None]
    assert checked
    for name in checked:
        assert max_diff(np.asarray(getattr(theirs, name)), ours[name]) <= HF_TOLERANCE, name


# --------------------------------------------------- DINOv2 with registers keeps its heads' backbone under its name
@pytest.mark.filterwarnings("ignore:Some weights were not in the checkpoint")  # the new classifier
def test_dinov2_with_registers_classifier_save_is_read_by_transformers(tmp_path):
    """HF's Dinov2WithRegistersForImageClassification keeps its backbone as `dinov2_with_registers.*` (not
    `dinov2.*`): a save under the other name would leave HF's backbone randomly initialised."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ours = family_class("pt", "Dinov2WithRegistersForImageClassification").from_pretrained(
        FAMILY / "dinov2-registers" / "safetensors", num_labels=NUM_LABELS).eval()
    ours.save_pretrained(tmp_path)
    hf_model = transformers.Dinov2WithRegistersForImageClassification.from_pretrained(tmp_path).eval()
    pixels = np.load(FAMILY / "dinov2-registers" / "expected.npz")["pixel_values"]
    with torch.no_grad():
        assert max_diff(hf_model(torch.from_numpy(pixels)).logits, ours(torch.from_numpy(pixels)).logits) <= HF_TOLERANCE


def test_dinov2_with_registers_classifier_saved_by_transformers_loads(framework, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_model = transformers.Dinov2WithRegistersForImageClassification.from_pretrained(
        FAMILY / "dinov2-registers" / "safetensors", num_labels=NUM_LABELS).eval()
    hf_model.save_pretrained(tmp_path)
    pixels = np.load(FAMILY / "dinov2-registers" / "expected.npz")["pixel_values"]
    with torch.no_grad():
        expected = hf_model(torch.from_numpy(pixels)).logits.numpy()
    model = family_class(framework, "Dinov2WithRegistersForImageClassification").from_pretrained(tmp_path)
    assert model.load_report.initialised == []
    assert max_diff(run(framework, model.eval() if framework == "pt" else model, pixels)["logits"], expected) <= HF_TOLERANCE


# ---------------------------------------------------------------------------------- atomic saves, no stale files
def test_a_family_save_leaves_only_its_own_weight_files(framework, tmp_path):
    cls = family_class(framework, "SiglipVisionModel")
    model, _ = with_random_weights(cls(save_config("siglip")))
    model.save_pretrained(tmp_path, formats=("safetensors", "tf", "flax"))
    assert weight_names(tmp_path) == sorted(["model.safetensors", TF_WEIGHTS_NAME, FLAX_WEIGHTS_NAME])
    newer = cls(save_config("siglip"))  # other weights: a stale file would load other numbers
    newer.init_weights(seed=5)
    for fmt in ("flax", "tf", "safetensors"):
        newer.save_pretrained(tmp_path, formats=(fmt,))
        assert weight_names(tmp_path) == [{"tf": TF_WEIGHTS_NAME, "flax": FLAX_WEIGHTS_NAME}.get(fmt, "model.safetensors")]
        loaded = cls.from_pretrained(tmp_path).canonical_state_dict()
        for key, array in newer.canonical_state_dict().items():
            np.testing.assert_array_equal(np.asarray(loaded[key]), np.asarray(array), err_msg=f"{fmt}: {key}")


@pytest.mark.parametrize("failing", ["_write_tf_h5", "_write_flax_msgpack"])
def test_a_family_save_that_fails_halfway_changes_nothing(failing, tmp_path, monkeypatch):
    import vit.checkpoint as ckpt

    cls = family_class("pt", "Dinov2WithRegistersModel")
    cls(save_config("dinov2-registers")).save_pretrained(tmp_path, formats=("safetensors",))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real = getattr(ckpt, failing)

    def write_then_fail(*args):
        real(*args)  # the temporary file is written completely ...
        raise OSError("No space left on device")  # ... and then the save fails

    monkeypatch.setattr(ckpt, failing, write_then_fail)
    model, _ = with_random_weights(cls(save_config("dinov2-registers")))
    with pytest.raises(OSError, match="No space left"):
        model.save_pretrained(tmp_path, formats=("tf", "flax"))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
