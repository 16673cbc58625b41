"""ViTConfig: HF's fields and defaults, config.json round trips, extensions, validation, presets."""

from __future__ import annotations

import json

import pytest
from conftest import HF

from vit import ConfigError, ViTConfig


def test_hf_defaults():
    c = ViTConfig()
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (768, 12, 12, 3072)
    assert (c.hidden_act, c.hidden_dropout_prob, c.attention_probs_dropout_prob) == ("gelu", 0.0, 0.0)
    assert (c.initializer_range, c.layer_norm_eps, c.image_size, c.patch_size) == (0.02, 1e-12, 224, 16)
    assert (c.num_channels, c.qkv_bias, c.encoder_stride, c.pooler_output_size, c.pooler_act) == (3, True, 16, 768, "tanh")
    assert c.num_labels == 2 and c.id2label == {0: "LABEL_0", 1: "LABEL_1"} and c.problem_type is None
    assert (c.pooling, c.use_fc_norm, c.class_token) == ("cls", False, True)


def test_reads_hf_config_json_and_keeps_hf_keys(tmp_path):
    c = ViTConfig.from_pretrained(HF / "classification" / "safetensors")
    assert c.num_labels == 10 and c.hidden_size == 32 and c.extra["architectures"] == ["ViTForImageClassification"]
    c.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    original = json.loads((HF / "classification" / "safetensors" / "config.json").read_text())
    assert written == original  # nothing lost, nothing added for an HF-only config
    assert ViTConfig.from_pretrained(tmp_path) == c


def test_unknown_key_warns_with_its_name():
    with pytest.warns(UserWarning, match="hiden_size"):
        ViTConfig(hiden_size=3)


def test_extensions_round_trip_and_non_square_geometry(tmp_path):
    c = ViTConfig(image_size=[32, 48], patch_size=[8, 16], pooling="gap", use_fc_norm=True, hidden_act="quick_gelu")
    assert c.pooling == "mean" and c.grid_hw == (4, 3) and c.num_patches == 12
    c.save_pretrained(tmp_path)
    again = ViTConfig.from_pretrained(tmp_path)
    assert again == c and again.image_hw == (32, 48)
    assert ViTConfig(pooling="avg").pooling == "mean" and ViTConfig(pooling="token").pooling == "cls"


def test_labels():
    c = ViTConfig(id2label={"0": "cat", "1": "dog", "2": "bird"})
    assert c.num_labels == 3 and c.label2id == {"cat": 0, "dog": 1, "bird": 2}
    c.num_labels = 4
    assert c.id2label[3] == "LABEL_3"


@pytest.mark.parametrize("name, hidden, layers, patch, size", [
    ("vit-tiny-patch16-224", 192, 12, 16, 224), ("vit-base-patch16-384", 768, 12, 16, 384),
    ("vit-large-patch14-224", 1024, 24, 14, 224), ("vit-huge-patch32-384", 1280, 32, 32, 384),
    ("vit-small-patch8-224", 384, 12, 8, 224),
])
def test_presets(name, hidden, layers, patch, size):
    c = ViTConfig.from_preset(name)
    assert (c.hidden_size, c.num_hidden_layers, c.patch_size, c.image_size) == (hidden, layers, patch, size)
    with pytest.raises(ConfigError, match="Known presets"):
        ViTConfig.from_preset("vit-gigantic-patch16-224")


def test_copy_validates():
    c = ViTConfig()
    assert c.copy(image_size=384).image_size == 384 and c.image_size == 224
    with pytest.raises(ConfigError):
        c.copy(image_size=385)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(hidden_size=30, num_attention_heads=4), "divisible by num_attention_heads"),
        (dict(image_size=30, patch_size=8), "not divisible by patch_size"),
        (dict(hidden_size=-8), "hidden_size"),
        (dict(num_channels="3"), "num_channels"),
        (dict(hidden_act="gleu"), "hidden_act"),
        (dict(pooling="max"), "pooling"),
        (dict(layer_norm_eps=0), "layer_norm_eps"),
        (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
        (dict(image_size=[32, 32, 3]), "image_size"),
        (dict(problem_type="ranking"), "problem_type"),
        (dict(use_fc_norm=True, pooling="map", class_token=False), "use_fc_norm"),
        (dict(num_labels=-1), "num_labels"),
    ],
)
def test_invalid_values_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        ViTConfig(**kwargs)
