"""Checkpoint I/O: every HF file format in and out, strict loading, resizing, sharding, safety, atomicity."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import FIXTURES, HF, HF_TOLERANCE

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
    assert np.max(np.abs(logits - expected["logits"])) < HF_TOLERANCE


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
    assert np.max(np.abs(a - b)) <= HF_TOLERANCE


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


# ------------------------------------------------------------------ stale weight files and sharding (issue 11.3)
def weight_files(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name != "config.json")


def test_a_save_removes_the_weight_files_it_did_not_write(framework, tiny_config, tmp_path):
    from frameworks import build, canonical_state, load

    build(framework, "classification", tiny_config).save_pretrained(tmp_path, formats=("safetensors", "tf", "flax"))
    (tmp_path / "preprocessor_config.json").write_text("{}")  # not weights: kept
    newer = build(framework, "classification", tiny_config)
    newer.init_weights(seed=1)
    newer.save_pretrained(tmp_path, formats=("pt",))
    assert weight_files(tmp_path) == ["preprocessor_config.json", "pytorch_model.bin"]
    loaded = canonical_state(load(framework, "classification", tmp_path))
    for name, array in canonical_state(newer).items():
        np.testing.assert_array_equal(loaded[name], array, err_msg=name)


def test_saving_over_a_sharded_folder_leaves_no_old_shards(tmp_path):
    config = ViTConfig.from_pretrained(CLS / "safetensors")
    state = canonical()
    save_checkpoint(str(tmp_path), config, state, "classification", max_shard_size=20_000)
    first = weight_files(tmp_path)
    assert len(first) > 3 and "model.safetensors.index.json" in first
    save_checkpoint(str(tmp_path), config, state, "classification", max_shard_size=40_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert weight_files(tmp_path) == sorted({*index["weight_map"].values(), "model.safetensors.index.json"})
    assert len(weight_files(tmp_path)) < len(first)
    save_checkpoint(str(tmp_path), config, state, "classification")
    assert weight_files(tmp_path) == ["model.safetensors"]


def test_a_failed_save_removes_nothing(tmp_path, monkeypatch):
    import vit.checkpoint as ckpt

    config = ViTConfig.from_pretrained(CLS / "safetensors")
    state = canonical()
    save_checkpoint(str(tmp_path), config, state, "classification", max_shard_size=20_000)
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}

    def fail(*args):
        raise OSError("No space left on device")

    monkeypatch.setattr(ckpt, "_write_torch_bin", fail)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(str(tmp_path), config, state, "classification", ("pt",))
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before


@pytest.mark.parametrize("safe", [True, False])
def test_sharded_saves_are_hf_shards_that_hf_and_we_read(tmp_path, safe):
    config = ViTConfig.from_pretrained(CLS / "safetensors")
    state = canonical()
    save_checkpoint(str(tmp_path), config, state, "classification", architecture="ViTForImageClassification",
                    max_shard_size="30KB", safe_serialization=safe)
    stem, ext, index_name = ("model", "safetensors", "model.safetensors.index.json") if safe else (
        "pytorch_model", "bin", "pytorch_model.bin.index.json")
    index = json.loads((tmp_path / index_name).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert shards == [f"{stem}-{i:05d}-of-{len(shards):05d}.{ext}" for i in range(1, len(shards) + 1)]
    assert len(shards) > 1 and weight_files(tmp_path) == sorted([*shards, index_name])
    assert set(index["weight_map"]) == set(state)
    assert index["metadata"]["total_size"] == sum(a.nbytes for a in state.values())
    back = read_canonical(str(tmp_path), config)
    assert all(np.array_equal(back[k], state[k]) for k in state)
    transformers = pytest.importorskip("transformers")
    expected = np.load(CLS / "expected.npz")
    import torch

    with torch.no_grad():
        logits = transformers.ViTForImageClassification.from_pretrained(tmp_path)(
            torch.from_numpy(expected["pixel_values"])).logits.numpy()
    assert np.max(np.abs(logits - expected["logits"])) < HF_TOLERANCE


@pytest.mark.parametrize("bad", [0, -5, "5 parsecs", 1.5, True])
def test_a_bad_max_shard_size_is_named(tmp_path, bad):
    config = ViTConfig.from_pretrained(CLS / "safetensors")
    with pytest.raises(ValueError, match="max_shard_size"):
        save_checkpoint(str(tmp_path), config, canonical(), "classification", max_shard_size=bad)
    assert not os.listdir(tmp_path)


def test_a_save_without_formats_is_refused_and_keeps_the_weights(tmp_path):
    config = ViTConfig.from_pretrained(CLS / "safetensors")
    save_checkpoint(str(tmp_path), config, canonical(), "classification")
    with pytest.raises(ValueError, match="formats is empty"):
        save_checkpoint(str(tmp_path), config, canonical(), "classification", ())
    assert weight_files(tmp_path) == ["model.safetensors"]


def test_formats_that_cannot_be_sharded_say_so(tmp_path):
    config = ViTConfig.from_pretrained(CLS / "safetensors")
    with pytest.raises(ValueError, match="'tf' format is written whole"):
        save_checkpoint(str(tmp_path), config, canonical(), "classification", ("tf",), max_shard_size=20_000)
    save_checkpoint(str(tmp_path), config, canonical(), "classification", ("tf",), max_shard_size="1GB")
    assert weight_files(tmp_path) == ["tf_model.h5"]


# ---------------------------------------------------------------------------------------- bfloat16 (issue 11.12)
def write_bf16_folder(folder) -> dict[str, np.ndarray]:
    """A model.safetensors in BF16, as HF writes for a bf16 model; returns its values widened to float32."""
    import ml_dtypes
    from safetensors.numpy import save_file

    state = {k: v.astype(ml_dtypes.bfloat16) for k, v in canonical().items()}
    os.makedirs(folder, exist_ok=True)
    save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text((CLS / "safetensors" / "config.json").read_text())
    return {k: v.astype(np.float32) for k, v in state.items()}


BF16_TWICE = """
import sys
{imports}
import numpy as np
from vit import ViTForImageClassification
for _ in range(2):
    model = ViTForImageClassification.from_pretrained(sys.argv[1])
    assert next(model.parameters()).dtype.is_floating_point
print("ok")
"""


@pytest.mark.parametrize("imports", ["", "import jax", "import tensorflow"])
def test_bf16_safetensors_load_again_and_again_in_pytorch(tmp_path, imports):
    """Before the fix: the second load, or the first after `import jax`, raised TypeError: ml_dtypes.bfloat16."""
    pytest.importorskip("torch")
    write_bf16_folder(tmp_path)
    result = subprocess.run([sys.executable, "-c", BF16_TWICE.format(imports=imports), str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "ok", result.stderr[-2000:]


def test_bf16_safetensors_give_the_same_float32_weights_in_every_framework(framework, tmp_path):
    from frameworks import canonical_state, load

    expected_state = write_bf16_folder(tmp_path)
    import ml_dtypes  # noqa: F401 - as after an earlier load: safetensors then returns bfloat16 arrays

    for _ in range(2):
        loaded = canonical_state(load(framework, "classification", tmp_path))
        for name, array in expected_state.items():
            np.testing.assert_array_equal(loaded[name], array, err_msg=name)


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "flax"])
def test_a_bf16_pytorch_model_saves_bf16_and_round_trips(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    from vit import ViTForImageClassification

    model = ViTForImageClassification.from_pretrained(CLS / "safetensors").to(torch.bfloat16)
    model.save_pretrained(tmp_path, formats=(fmt,))
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    if fmt == "safetensors":
        header_size = int.from_bytes((tmp_path / "model.safetensors").read_bytes()[:8], "little")
        header = json.loads((tmp_path / "model.safetensors").read_bytes()[8:8 + header_size])
        assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"BF16"}
    elif fmt == "pt":
        assert {t.dtype for t in torch.load(tmp_path / "pytorch_model.bin", weights_only=True).values()} == {torch.bfloat16}
    else:
        assert (tmp_path / "flax_model.msgpack").stat().st_size < 0.6 * (CLS / "flax_msgpack" / "flax_model.msgpack").stat().st_size
    again = ViTForImageClassification.from_pretrained(tmp_path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(again.state_dict()[name].to(torch.bfloat16), tensor), name


# ------------------------------------------------------------------------ files HF writes its own way (issue 11.11)
HF_WRITTEN = FIXTURES / "hf-written"


def test_hf_tf_h5_with_the_zero_qkv_biases_hf_writes_loads_in_every_framework(framework):
    """HF's TFViT ignores qkv_bias=False and saves all-zero biases; they are dropped, and HF's logits come out."""
    from frameworks import load, run

    folder = HF_WRITTEN / "qkv-bias-false"
    assert json.loads((folder / "config.json").read_text())["qkv_bias"] is False
    expected = np.load(folder / "expected.npz")
    model = load(framework, "classification", folder)
    assert not model.config.qkv_bias
    assert not [n for n in model.canonical_state_dict() if n.endswith(("query.bias", "key.bias", "value.bias"))]
    logits = run(framework, model, expected["pixel_values"])["logits"]
    assert np.max(np.abs(logits - expected["logits"])) <= HF_TOLERANCE


def test_non_zero_qkv_biases_under_qkv_bias_false_are_refused(framework, tmp_path):
    import h5py
    from frameworks import load

    for name in ("config.json", "tf_model.h5"):
        (tmp_path / name).write_bytes((HF_WRITTEN / "qkv-bias-false" / name).read_bytes())
    with h5py.File(tmp_path / "tf_model.h5", "r+") as f:
        bias = f["vit/tf_vi_t_for_image_classification/vit/encoder/layer_._1/attention/attention/value/bias:0"]
        bias[3] = 0.25
    with pytest.raises(CheckpointError, match=r"qkv_bias=false.*non-zero .*value.bias.*\"qkv_bias\": true"):
        load(framework, "classification", tmp_path)


def resave(tmp_path, rename, fmt="safetensors"):
    """The classification fixture, rewritten with its tensor names changed by `rename`."""
    import torch
    from safetensors.numpy import save_file

    state = {rename(k): v for k, v in canonical().items()}
    (tmp_path / "config.json").write_text((CLS / "safetensors" / "config.json").read_text())
    if fmt == "safetensors":
        save_file(state, str(tmp_path / "model.safetensors"))
    else:
        torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "pytorch_model.bin")
    return state


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_legacy_gamma_beta_layernorm_names_load(framework, tmp_path, fmt):
    from frameworks import canonical_state, load

    if fmt == "bin":
        pytest.importorskip("torch")

    def legacy(name):
        if ("layernorm" in name) and name.endswith((".weight", ".bias")):
            return name.removesuffix(".weight") + ".gamma" if name.endswith(".weight") else name.removesuffix(".bias") + ".beta"
        return name

    resave(tmp_path, legacy, fmt)
    loaded = canonical_state(load(framework, "classification", tmp_path))
    for name, array in canonical().items():
        np.testing.assert_array_equal(loaded[name], array, err_msg=name)


def test_backbone_names_with_and_without_the_vit_prefix_load_into_every_head(framework, tmp_path):
    from frameworks import canonical_state, load

    state = resave(tmp_path, lambda name: name.removeprefix("vit."))  # a ViTModel-style file of a classifier
    model = load(framework, "classification", tmp_path)
    loaded = canonical_state(model)
    for name, array in state.items():
        np.testing.assert_array_equal(loaded[name if name.startswith("classifier") else "vit." + name], array, err_msg=name)


@pytest.mark.parametrize("source", ["classification/tf_h5", "base/tf_h5", "classification/flax_msgpack", "mim/pytorch_bin"])
def test_hf_files_of_another_head_load_into_vitmodel_with_the_same_backbone(framework, source):
    """TFViTModel's h5 has a pooler and a `vit/` layer, TFViTForImageClassification's has neither; both load."""
    from frameworks import canonical_state, load

    fmt = source.split("/")[1]
    reference = canonical(HF / source.split("/")[0] / "safetensors")
    with pytest.warns(UserWarning, match="pooler") if source.startswith(("classification", "mim")) else _no_warning():
        model = load(framework, "base", HF / source)
    loaded = canonical_state(model)
    for name, array in reference.items():
        bare = name.removeprefix("vit.")
        if bare in loaded and not bare.startswith("pooler"):
            np.testing.assert_array_equal(loaded[bare], array, err_msg=f"{fmt}: {name}")


def _no_warning():
    import contextlib

    return contextlib.nullcontext()


def test_an_integer_position_ids_buffer_is_ignored(framework, tmp_path):
    from frameworks import canonical_state, load
    from safetensors.numpy import save_file

    state = canonical()
    save_file({**state, "vit.embeddings.position_ids": np.arange(17, dtype=np.int64)[None]}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((CLS / "safetensors" / "config.json").read_text())
    loaded = canonical_state(load(framework, "classification", tmp_path))
    assert all(np.array_equal(loaded[k], state[k]) for k in state)
