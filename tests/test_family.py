"""The ViT family (CLIP, SigLIP, DINOv2, DINOv2 with registers, DeiT): HF transformers 4.57.6's own numbers from
HF's own files, in every format and every framework; HF reads our saves back; Auto classes; training features."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from conftest import FIXTURES
from frameworks import PREFIX, loss_and_grads, run, sum_of_squares, to_framework, to_numpy

FAMILY = FIXTURES / "family"
CASES = ("clip", "clip-vision-only", "siglip", "dinov2", "dinov2-classification", "dinov2-registers",
         "deit-distilled", "deit-base")
OUTPUTS = ("last_hidden_state", "pooler_output", "image_embeds", "logits", "cls_logits", "distillation_logits")
TOL = 1e-5


def case_info(case: str) -> dict:
    return json.loads((FAMILY / case / "case.json").read_text())


def expected(case: str) -> dict[str, np.ndarray]:
    return dict(np.load(FAMILY / case / "expected.npz"))


def family_class(framework: str, name: str):
    import vit

    return getattr(vit, PREFIX[framework] + name)


def load(framework: str, case: str, fmt: str = "safetensors", **kwargs):
    model = family_class(framework, case_info(case)["class"]).from_pretrained(FAMILY / case / fmt, **kwargs)
    return model.eval() if framework == "pt" else model


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


CASE_FORMATS = [(case, fmt) for case in CASES for fmt in case_info(case)["formats"]]


@pytest.mark.parametrize("case, fmt", CASE_FORMATS, ids=[f"{c}-{f}" for c, f in CASE_FORMATS])
def test_reproduces_hf_outputs_at_both_resolutions(framework, case, fmt):
    info, e = case_info(case), expected(case)
    model = load(framework, case, fmt)
    out = run(framework, model, e["pixel_values"], output_hidden_states=True)
    checked = [name for name in OUTPUTS if name in e]
    assert checked, case
    for name in checked:
        assert out[name].shape == e[name].shape, name
        assert max_diff(out[name], e[name]) <= TOL, name
    assert max_diff(np.stack(out["hidden_states"]), e["hidden_states"]) <= TOL
    interp = run(framework, model, e["pixel_values_interp"], **info["interp_kwargs"])
    for name in checked:
        if f"{name}_interp" in e:
            assert max_diff(interp[name], e[f"{name}_interp"]) <= TOL, f"{name}_interp"


def test_deit_logits_are_the_mean_of_the_two_heads(framework):
    e = expected("deit-distilled")
    out = run(framework, load(framework, "deit-distilled"), e["pixel_values"])
    assert max_diff(out["logits"], (out["cls_logits"] + out["distillation_logits"]) / 2) <= 1e-6


def test_dinov2_always_resizes_and_clip_needs_the_flag(framework):
    """HF's rule: DINOv2 resizes its position embeddings to any input; CLIP refuses another size without the flag."""
    e = expected("dinov2")
    dinov2 = run(framework, load(framework, "dinov2"), e["pixel_values_interp"], interpolate_pos_encoding=False)
    assert max_diff(dinov2["last_hidden_state"], e["last_hidden_state_interp"]) <= TOL
    clip = load(framework, "clip")
    with pytest.raises(ValueError, match="interpolate_pos_encoding"):
        run(framework, clip, expected("clip")["pixel_values_interp"])


def test_two_tower_checkpoint_says_once_that_the_text_tower_is_ignored(caplog):
    from vit.checkpoint import read_canonical
    from vit.config import ViTConfig

    config = ViTConfig.from_pretrained(FAMILY / "clip" / "safetensors")
    with caplog.at_level(logging.INFO, logger="vit"):
        state = read_canonical(str(FAMILY / "clip" / "safetensors"), config)
    messages = [r.getMessage() for r in caplog.records if "text tower" in r.getMessage()]
    assert len(messages) == 1 and all(r.levelno <= logging.INFO for r in caplog.records)
    assert not any(name.startswith("text_") for name in state) and "logit_scale" not in state


@pytest.mark.parametrize("case", ["clip", "siglip", "dinov2", "dinov2-classification", "dinov2-registers",
                                  "deit-distilled", "deit-base"])
def test_save_pretrained_is_read_back_by_transformers(framework, case, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    e = expected(case)
    model = load(framework, case)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    hf_class = case_info(case)["class"]
    assert config["architectures"] == [hf_class]
    hf_model = getattr(transformers, hf_class).from_pretrained(tmp_path, attn_implementation="eager").eval()
    with torch.no_grad():
        hf_out = hf_model(torch.from_numpy(e["pixel_values"]))
    ours = run(framework, model, e["pixel_values"])
    for name in OUTPUTS:
        if name in e:
            assert max_diff(to_numpy(getattr(hf_out, name)), ours[name]) <= TOL, name


@pytest.mark.parametrize("auto, case, expected_class", [
    ("AutoModel", "clip", "CLIPVisionModel"),
    ("AutoModel", "clip-vision-only", "CLIPVisionModel"),
    ("AutoModel", "siglip", "SiglipVisionModel"),
    ("AutoModel", "dinov2", "Dinov2Model"),
    ("AutoModel", "dinov2-registers", "Dinov2WithRegistersModel"),
    ("AutoModel", "deit-base", "DeiTModel"),
    ("AutoModelForImageClassification", "dinov2-classification", "Dinov2ForImageClassification"),
    ("AutoModelForImageClassification", "deit-distilled", "DeiTForImageClassificationWithTeacher"),
])
def test_auto_classes_pick_the_class_as_transformers_does(framework, auto, case, expected_class):
    import vit

    model = getattr(vit, PREFIX[framework] + auto).from_pretrained(FAMILY / case / "safetensors")
    assert type(model).__name__ == PREFIX[framework] + expected_class


def test_auto_class_refuses_what_vit_lacks():
    from vit import AutoModelForImageClassification, ConfigError

    with pytest.raises(ConfigError, match="no class for model_type 'clip"):
        AutoModelForImageClassification.from_pretrained(FAMILY / "clip" / "safetensors")


def test_family_class_refuses_another_familys_config(framework, tiny_config):
    with pytest.raises(ValueError, match="family"):
        family_class(framework, "CLIPVisionModel")(tiny_config)


# ----------------------------------------------------------------------------- training features
TRAINABLE = ("clip", "siglip", "dinov2-classification", "dinov2-registers", "deit-distilled")


def gradients(framework: str, model, pixel_values: np.ndarray, training: bool = False) -> dict[str, np.ndarray]:
    """d(sum of squared outputs)/d(parameter), by canonical name, in canonical layout (`training`: in training
    mode, where gradient checkpointing applies; the configs have no dropout, so the numbers are the same)."""
    return loss_and_grads(framework, model, pixel_values, sum_of_squares(OUTPUTS), training)[1]


@pytest.mark.parametrize("case", TRAINABLE)
def test_every_parameter_gets_a_gradient_and_checkpointing_keeps_it(framework, case):
    e = expected(case)
    model = load(framework, case)
    pixels = e["pixel_values"][:2]
    grads = gradients(framework, model, pixels)
    expected_names = set(model.parameter_specs())
    if case_info(case)["class"].endswith("WithTeacher") or "mask_token" in " ".join(expected_names):
        expected_names = {n for n in expected_names if not n.endswith("mask_token")}  # unused without a mask
    assert expected_names <= set(grads), sorted(expected_names - set(grads))
    assert all(np.isfinite(g).all() for g in grads.values())
    model.gradient_checkpointing_enable()
    if framework == "pt":
        model.train()
    again = gradients(framework, model, pixels, training=True)
    for name in expected_names:
        assert max_diff(grads[name], again[name]) <= 1e-4 * (1 + np.abs(grads[name]).max()), name


@pytest.mark.parametrize("case", TRAINABLE)
def test_head_mask_and_attention_maps(framework, case):
    e = expected(case)
    model = load(framework, case)
    config = model.config
    pixels = e["pixel_values"][:2]
    out = run(framework, model, pixels, output_attentions=True, output_hidden_states=True)
    tokens = config.num_patches + config.num_prefix_tokens
    assert len(out["attentions"]) == config.num_hidden_layers
    assert all(a.shape == (2, config.num_attention_heads, tokens, tokens) for a in out["attentions"])
    assert max_diff(np.stack(out["attentions"]).sum(-1), 1.0) <= 1e-5
    assert len(out["hidden_states"]) == config.num_hidden_layers + 1
    ones = np.ones((config.num_hidden_layers, config.num_attention_heads), np.float32)
    same = run(framework, model, pixels, head_mask=ones)
    name = next(n for n in OUTPUTS if n in out and out[n] is not None)
    assert max_diff(same[name], out[name]) <= 1e-6
    masked = ones.copy()
    masked[0, 0] = 0.0
    differs = run(framework, model, pixels, head_mask=masked)
    assert max_diff(differs[name], out[name]) > 1e-4


def test_family_config_options_default_to_vit():
    from vit import ViTConfig

    c = ViTConfig()
    assert (c.family, c.pre_layernorm, c.layer_scale_init_value, c.num_register_tokens, c.distillation_token) == (
        "vit", False, None, 0, False)
    assert (c.use_swiglu_ffn, c.pooler_dense, c.projection_dim, c.patch_embedding_bias, c.no_embed_class) == (
        False, True, None, True, False)
    assert (c.position_interpolation, c.always_interpolate_pos_encoding) == ("bicubic", False)
    assert c.to_dict() == ViTConfig.from_dict(c.to_dict()).to_dict()


@pytest.mark.parametrize("case, family, numbers", [
    ("clip", "clip", dict(layer_norm_eps=1e-5, hidden_act="quick_gelu", pre_layernorm=True, use_fc_norm=True,
                          patch_embedding_bias=False, projection_dim=24, class_token=True)),
    ("siglip", "siglip", dict(layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh", pooling="map", class_token=False)),
    ("dinov2", "dinov2", dict(layer_norm_eps=1e-6, layer_scale_init_value=1.0, always_interpolate_pos_encoding=True,
                              classifier_input="cls_and_mean", intermediate_size=64)),
    ("dinov2-registers", "dinov2_with_registers", dict(num_register_tokens=4, position_interpolation="bicubic_antialias")),
    ("deit-base", "deit", dict(distillation_token=True, layer_norm_eps=1e-12)),
])
def test_family_configs_read_from_hf(case, family, numbers, tmp_path):
    from vit import ViTConfig

    config = ViTConfig.from_pretrained(FAMILY / case / "safetensors")
    assert config.family == family
    for key, value in numbers.items():
        assert getattr(config, key) == value, key
    config.save_pretrained(tmp_path)
    assert ViTConfig.from_pretrained(tmp_path) == config


def test_swiglu_and_layer_scale_configs_round_trip(tmp_path):
    from vit import ViTConfig

    config = ViTConfig.from_dict({"model_type": "dinov2", "hidden_size": 48, "num_attention_heads": 4,
                                  "num_hidden_layers": 1, "use_swiglu_ffn": True, "mlp_ratio": 4,
                                  "image_size": 28, "patch_size": 14, "layerscale_value": 1e-5})
    assert config.use_swiglu_ffn and config.intermediate_size == 128  # HF's (int(192 * 2 / 3) + 7) // 8 * 8
    config.save_pretrained(tmp_path)
    assert ViTConfig.from_pretrained(tmp_path) == config


def test_pixel_values_move_between_frameworks(framework):
    """A smoke check of the helper the README uses: any framework's tensor goes in."""
    e = expected("siglip")
    model = load(framework, "siglip")
    out = model(to_framework(framework, e["pixel_values"]))
    assert max_diff(to_numpy(out.pooler_output), e["pooler_output"]) <= TOL


def test_auto_classes_import_no_framework_until_used():
    import subprocess
    import sys

    code = ("import sys, vit; vit.AutoModel, vit.TFAutoModelForImageClassification, vit.FlaxAutoModel; "
            "print(sorted(m for m in ('torch', 'tensorflow', 'jax', 'flax', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
