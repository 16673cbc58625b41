"""Checkpoint I/O: every HF file format in and out, strict loading, resizing, sharding, safety, atomicity."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import HF

from vit import CheckpointError, ViTConfig
from vit.checkpoint import (
    _read_flax_msgpack,
    _read_tf_h5,
    read_canonical,
    save_checkpoint,
)
from vit.params import layout_name, parameter_specs

CLS = HF / "classification"


def canonical(path=CLS / "safetensors"):
    return read_canonical(str(path), ViTConfig.from_pretrained(path))


@pytest.mark.parametrize("head", ["classification", "base"])
def test_table_gives_hf_tf_and_flax_names_exactly(head):
    config = ViTConfig.from_pretrained(HF / head / "safetensors")
    specs = parameter_specs(config, head)
    tf_names = set(_read_tf_h5(str(HF / head / "tf_h5" / "tf_model.h5")))
    prefix = "vit/" if head == "base" else ""
    assert {prefix + layout_name(s, "tf") for s in specs.values()} == tf_names
    assert {layout_name(s, "flax") for s in specs.values()} == set(_read_flax_msgpack(str(HF / head / "flax_msgpack" / "flax_model.msgpack")))


@pytest.mark.parametrize("fmt", ["pytorch_bin", "tf_h5", "flax_msgpack"])
def test_every_hf_format_reads_to_the_same_canonical_state(fmt):
    reference = canonical()
    state = canonical(CLS / fmt)
    assert set(state) == set(reference)
    for name in reference:
        np.testing.assert_array_equal(state[name], reference[name], err_msg=name)


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "tf", "flax"])
def test_writers_round_trip_bit_exact(tmp_path, fmt):
    config = ViTConfig.from_pretrained(CLS / "safetensors")
    state = canonical()
    save_checkpoint(str(tmp_path), config, state, "classification", (fmt,))
    name = {"safetensors": "model.safetensors", "pt": "pytorch_model.bin", "tf": "tf_model.h5", "flax": "flax_model.msgpack"}[fmt]
    back = read_canonical(str(tmp_path / name), config)
    assert set(back) == set(state)
    for key in state:
        np.testing.assert_array_equal(back[key], state[key], err_msg=key)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


@pytest.mark.parametrize("fmt", ["tf", "flax"])
def test_hf_transformers_reads_our_legacy_files(tmp_path, fmt):
    """Optional: only where HF transformers 4.57 (and, for TF, tf_keras) is installed."""
    transformers = pytest.importorskip("transformers")
    if fmt == "tf":
        pytest.importorskip("tf_keras")
    config = ViTConfig.from_pretrained(CLS / "safetensors")
    save_checkpoint(str(tmp_path), config, canonical(), "classification", (fmt,), "ViTForImageClassification")
    expected = np.load(CLS / "expected.npz")
    cls = transformers.TFViTForImageClassification if fmt == "tf" else transformers.FlaxViTForImageClassification
    logits = np.asarray(cls.from_pretrained(tmp_path)(expected["pixel_values"]).logits)
    assert np.max(np.abs(logits - expected["logits"])) < 1e-5


def test_new_head_with_ignore_mismatched_sizes(framework):
    from frameworks import load

    with pytest.raises(CheckpointError, match="classifier.weight"):
        load(framework, "classification", CLS / "safetensors", num_labels=3)
    with pytest.warns(UserWarning, match="classifier.weight"):
        model = load(framework, "classification", CLS / "safetensors", num_labels=3, ignore_mismatched_sizes=True)
    assert model.config.num_labels == 3
    assert model.canonical_state_dict()["classifier.weight"].shape == (3, 32)


def test_resizing_position_embeddings_on_load_matches_interpolation(framework):
    """from_pretrained(image_size=48) gives what interpolate_pos_encoding=True gives at 48."""
    from frameworks import load, run

    pixels = np.random.default_rng(0).normal(size=(2, 3, 48, 48)).astype(np.float32)
    native = load(framework, "classification", CLS / "safetensors")
    resized = load(framework, "classification", CLS / "safetensors", image_size=48)
    assert resized.config.image_size == 48
    a = run(framework, native, pixels, interpolate_pos_encoding=True)["logits"]
    b = run(framework, resized, pixels)["logits"]
    assert np.max(np.abs(a - b)) <= 1e-5


def test_sharded_safetensors_and_missing_shard(tmp_path):
    from safetensors.numpy import save_file

    state = canonical()
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[:20], "model-00002-of-00002.safetensors": names[20:]}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(tmp_path / shard))
    index = {"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text((CLS / "safetensors" / "config.json").read_text())
    back = read_canonical(str(tmp_path), ViTConfig.from_pretrained(tmp_path))
    assert all(np.array_equal(back[k], state[k]) for k in state)
    os.remove(tmp_path / "model-00002-of-00002.safetensors")
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors"):
        read_canonical(str(tmp_path), ViTConfig.from_pretrained(tmp_path))


def test_hub_id_is_looked_up_in_the_hub_cache(tmp_path):
    """A hub id goes to huggingface_hub (tests/test_hub.py); offline and uncached, the error says so."""
    from vit import HubError, ViTConfig

    with pytest.raises(HubError, match="'google/vit-base-patch16-224'.*not in the cache.*local_files_only=True"):
        ViTConfig.from_pretrained("google/vit-base-patch16-224", local_files_only=True, cache_dir=tmp_path)


def test_bin_reads_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from vit.torch_pickle import load_torch_state_dict\n"
        "from safetensors.numpy import load_file\n"
        f"a = load_torch_state_dict({str(CLS / 'pytorch_bin' / 'pytorch_model.bin')!r})\n"
        f"b = load_file({str(CLS / 'safetensors' / 'model.safetensors')!r})\n"
        "assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)\n"
        "print('ok')\n"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "ok"
