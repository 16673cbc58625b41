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
from vit.checkpoint import fit_state_dict, read_canonical
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
    assert FILES[fmt] in str(info.value), str(info.value)


@pytest.mark.parametrize("damage", ["truncated", "not-a-zip"])
def test_damaged_npz_gives_a_clear_error(damage, tmp_path):
    data = (FIXTURES / "official-vit-tiny-p8-32" / "checkpoint.npz").read_bytes()
    (tmp_path / "model.npz").write_bytes(data[: len(data) // 2] if damage == "truncated" else b"nonsense" * 100)
    with pytest.raises(CheckpointError, match="model.npz"):
        convert_checkpoint(str(tmp_path / "model.npz"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


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
def test_invalid_config_json_names_the_file_and_the_field(content, message, tmp_path):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        ViTForImageClassification.from_pretrained(tmp_path)
    assert str(tmp_path / "config.json") in str(info.value)


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
    assert out.startswith("refused") and ("os.system" in out or "posix.system" in out), out
    assert not marker.exists()


# ------------------------------------------------------------------ wrong files, said in one line (issue 11.16)
HF_WRITTEN = FIXTURES / "hf-written"


def timm_weights_in_an_hf_folder(tmp_path):
    (tmp_path / "config.json").write_bytes((CLS / "safetensors" / "config.json").read_bytes())
    (tmp_path / "model.safetensors").write_bytes((FIXTURES / "timm-vit-tiny-p8-32" / "model.safetensors").read_bytes())
    return tmp_path


@pytest.mark.parametrize("folder, what", [
    (lambda tmp: HF_WRITTEN / "bert", "a text model"),
    (lambda tmp: HF_WRITTEN / "resnet", "a convolutional network"),
    (timm_weights_in_an_hf_folder, r"a timm Vision Transformer .*`vit convert --from timm .*model.safetensors"),
], ids=["bert", "resnet", "timm-in-hf-folder"])
def test_another_architecture_is_named_in_one_line(framework, tmp_path, folder, what):
    """Before: a 55-354-line list of missing and unexpected tensors, and no word on what the file is."""
    from frameworks import load

    path = folder(tmp_path)
    with pytest.warns() if path.name != tmp_path.name else _no_warnings(), pytest.raises(CheckpointError, match=what) as info:
        load(framework, "classification", path)  # the BERT and ResNet configs warn about their keys
    message = str(info.value)
    assert len(message.splitlines()) == 1 and "model.safetensors" in message


def _no_warnings():
    import contextlib

    return contextlib.nullcontext()


def test_long_tensor_lists_are_cut_with_a_count():
    config = ViTConfig.from_pretrained(CLS / "safetensors")
    state = canonical()
    state.update({f"vit.encoder.layer.0.adapter_{i:02d}": np.zeros(2, np.float32) for i in range(30)})
    with pytest.raises(CheckpointError, match="adapter_00") as info:
        fit_state_dict(state, config, "classification")
    assert "... and 10 more" in str(info.value) and "adapter_29" not in str(info.value)


@pytest.mark.parametrize("fmt", ["safetensors", "pytorch_bin", "sharded"])
def test_a_git_lfs_pointer_says_git_lfs_pull(tmp_path, fmt):
    pointer = ("version https://git-lfs.github.com/spec/v1\n"
               "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 346293852\n")
    (tmp_path / "config.json").write_bytes((CLS / "safetensors" / "config.json").read_bytes())
    name = {"safetensors": "model.safetensors", "pytorch_bin": "pytorch_model.bin", "sharded": "model.safetensors.index.json"}[fmt]
    (tmp_path / name).write_text(pointer)
    with pytest.raises(CheckpointError, match=r"Git LFS pointer.*git lfs pull") as info:
        ViTForImageClassification.from_pretrained(tmp_path)
    assert name in str(info.value) and "truncated" not in str(info.value)


def test_a_config_whose_image_size_disagrees_with_the_weights_is_refused(framework, tmp_path):
    """Before: the position embeddings were resized silently to the wrong config's size."""
    from frameworks import load

    config = json.loads((CLS / "safetensors" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "image_size": 48}))
    (tmp_path / "model.safetensors").write_bytes((CLS / "safetensors" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=r"hold 16 patch positions \(4x4 patches: image_size 32 .*config.json's image_size 48"):
        load(framework, "classification", tmp_path)
    resized = load(framework, "classification", CLS / "safetensors", image_size=48)  # asked for: resized
    assert resized.config.image_size == 48
