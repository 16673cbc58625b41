"""Hostile checkpoints and configs: code in pickles, truncated and corrupt files in every format, missing
shards, missing / unexpected / mis-shaped / non-finite tensors, invalid config.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import FIXTURES, HF

from vit import CheckpointError, ConfigError, ViTConfig, ViTForImageClassification
from vit.checkpoint import fit_state_dict, read_canonical, save_checkpoint
from vit.convert import convert_checkpoint

CLS = HF / "classification"
FILES = {"safetensors": "model.safetensors", "pytorch_bin": "pytorch_model.bin", "tf_h5": "tf_model.h5",
         "flax_msgpack": "flax_model.msgpack"}


def canonical(path=CLS / "safetensors"):
    return read_canonical(str(path), ViTConfig.from_pretrained(path))


def copy_folder(fmt, tmp_path):
    (tmp_path / "config.json").write_bytes((CLS / fmt / "config.json").read_bytes())
    return tmp_path / FILES[fmt], (CLS / fmt / FILES[fmt]).read_bytes()


@pytest.mark.parametrize("fmt", list(FILES))
@pytest.mark.parametrize("damage", ["truncated", "corrupt", "empty"])
def test_damaged_weight_files_give_a_clear_error(fmt, damage, tmp_path):
    path, data = copy_folder(fmt, tmp_path)
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "corrupt":
        data = data[:64] + bytes(b ^ 0x5A for b in data[64:4096]) + data[4096:]
    else:
        data = b""
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        ViTForImageClassification.from_pretrained(tmp_path)
    assert FILES[fmt] in str(info.value) or "tensors" in str(info.value)


@pytest.mark.parametrize("damage", ["truncated", "not-a-zip"])
def test_damaged_npz_gives_a_clear_error(damage, tmp_path):
    data = (FIXTURES / "official-vit-tiny-p8-32" / "checkpoint.npz").read_bytes()
    (tmp_path / "model.npz").write_bytes(data[: len(data) // 2] if damage == "truncated" else b"nonsense" * 100)
    with pytest.raises(CheckpointError, match="model.npz"):
        convert_checkpoint(str(tmp_path / "model.npz"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_sharded_index_naming_a_missing_shard_says_which(tmp_path):
    index = {"metadata": {}, "weight_map": {"vit.embeddings.cls_token": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_bytes((CLS / "safetensors" / "config.json").read_bytes())
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors"):
        ViTForImageClassification.from_pretrained(tmp_path)


def test_non_finite_weights_warn():
    state = canonical()
    state["classifier.bias"] = state["classifier.bias"].copy()
    state["classifier.bias"][3] = np.nan
    with pytest.warns(UserWarning, match="classifier.bias holds NaN"):
        fit_state_dict(state, ViTConfig.from_pretrained(CLS / "safetensors"), "classification")


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2, 3]", "JSON object"),
    (json.dumps({"hidden_size": "32"}), "hidden_size"),
    (json.dumps({"hidden_size": 30, "num_attention_heads": 4}), "divisible"),
    (json.dumps({"image_size": -32}), "image_size"),
    (json.dumps({"patch_size": [8, 8, 8]}), "patch_size"),
    (json.dumps({"image_size": 30, "patch_size": 8}), "not divisible by patch_size"),
    (json.dumps({"id2label": {"cat": "0"}}), "id2label"),
])
def test_invalid_config_json_names_the_field(content, message, tmp_path):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(ConfigError, match=message):
        ViTForImageClassification.from_pretrained(tmp_path)


def test_strict_loading_lists_missing_unexpected_and_misshaped():
    config = ViTConfig.from_pretrained(CLS / "safetensors")
    state = canonical()
    broken = dict(state)
    del broken["vit.encoder.layer.1.output.dense.bias"]
    broken["vit.encoder.layer.0.attention.attention.query.weight"] = np.zeros((32, 31), np.float32)
    broken["vit.encoder.layer.0.extra_scale"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointError) as info:
        fit_state_dict(broken, config, "classification")
    message = str(info.value)
    assert "vit.encoder.layer.1.output.dense.bias (32,)" in message
    assert "vit.encoder.layer.0.extra_scale (3,)" in message
    assert "query.weight: checkpoint (32, 31), model (32, 32)" in message
    assert "ignore_mismatched_sizes" in message


def test_pickle_with_code_is_refused_with_and_without_torch(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "pytorch_model.bin"
    torch.save({"vit.embeddings.cls_token": torch.zeros(1, 1, 32), "x": Evil()}, path)
    from vit.torch_pickle import load_torch_state_dict

    with pytest.raises(CheckpointError, match="weights_only"):
        load_torch_state_dict(str(path))
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from vit.torch_pickle import load_torch_state_dict\n"
        "from vit.errors import CheckpointError\n"
        f"try:\n    load_torch_state_dict({str(path)!r})\nexcept CheckpointError as e:\n    print('refused', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "refused" in out and "os.system" in out or "posix.system" in out
    assert not marker.exists()


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    import vit.checkpoint as ckpt

    config = ViTConfig.from_pretrained(CLS / "safetensors")
    state = canonical()
    save_checkpoint(str(tmp_path), config, state, "classification")
    before = {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path) if not f.startswith(".")}

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "_write_safetensors", explode)
    changed = {k: v * 2 for k, v in state.items()}
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(str(tmp_path), config.copy(num_labels=10), changed, "classification")
    after = {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path) if not f.startswith(".")}
    assert after == before
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


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
        (dict(use_fc_norm=True), "use_fc_norm"),
        (dict(num_labels=-1), "num_labels"),
    ],
)
def test_invalid_values_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        ViTConfig(**kwargs)


def test_invalid_config_json_names_the_file_and_field(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ViTConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": "big"}))
    with pytest.raises(ConfigError, match="hidden_size"):
        ViTConfig.from_pretrained(tmp_path)
