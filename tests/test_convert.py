"""Conversion: timm and original-JAX checkpoints load exactly in every framework, and export back bit-exact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES
from frameworks import load, run
from safetensors.numpy import load_file

from vit import CheckpointError, ViTConfig
from vit.checkpoint import init_state, read_canonical, save_checkpoint
from vit.convert import convert_checkpoint, from_jax, from_timm, to_jax, to_timm
from vit.params import parameter_specs

ROOT = Path(__file__).parent.parent
TIMM = FIXTURES / "timm-vit-tiny-p8-32"
OFFICIAL = FIXTURES / "official-vit-tiny-p8-32"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "conversion" / "convert.py"), *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def timm_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("timm")
    result = cli(str(TIMM / "model.safetensors"), str(out), "--num-attention-heads", "4", "--pooling", "cls")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def official_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("official")
    result = cli("--from", "jax", str(OFFICIAL / "checkpoint.npz"), str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_timm_logits_and_features_reproduce(framework, timm_dir):
    e = np.load(TIMM / "expected.npz")
    model = load(framework, "classification", timm_dir)
    out = run(framework, model, e["pixel_values"], output_hidden_states=True)
    assert np.max(np.abs(out["logits"] - e["logits"])) <= 1e-5
    base = load(framework, "base", timm_dir, add_pooling_layer=False)
    features = run(framework, base, e["pixel_values"])["last_hidden_state"]
    assert np.max(np.abs(features - e["forward_features"])) <= 1e-5


def test_original_jax_logits_reproduce_exactly(framework, official_dir):
    e = np.load(OFFICIAL / "expected.npz")
    out = run(framework, load(framework, "classification", official_dir), e["pixel_values"])
    assert np.max(np.abs(out["logits"] - e["logits"])) <= 1e-5
    assert np.max(np.abs(out["logits"] - e["logits"])) <= 2e-6  # exact GELU and eps: round-off only


def test_converted_folders_carry_the_recipe(timm_dir, official_dir):
    from vit import ViTImageProcessor

    assert ViTImageProcessor.from_pretrained(timm_dir).resample == 3
    jax_recipe = ViTImageProcessor.from_pretrained(official_dir)
    assert jax_recipe.resample == 2 and jax_recipe.image_mean == [0.5, 0.5, 0.5]
    config = ViTConfig.from_pretrained(official_dir)
    assert config.hidden_act == "gelu_pytorch_tanh" and config.layer_norm_eps == 1e-6
    assert ViTConfig.from_pretrained(timm_dir).layer_norm_eps == 1e-6


def test_timm_round_trip_is_bit_exact():
    state = load_file(str(TIMM / "model.safetensors"))
    converted = from_timm(state, num_attention_heads=4, pooling="cls")
    back = to_timm(converted.state, converted.config)
    assert set(back) == set(state)
    for name in state:
        np.testing.assert_array_equal(back[name], state[name], err_msg=name)


@pytest.mark.parametrize("numbering", ["old", "new"])
def test_jax_round_trip_is_bit_exact(numbering):
    arrays = dict(np.load(OFFICIAL / "checkpoint.npz"))
    converted = from_jax(arrays)
    back = to_jax(converted.state, converted.config, numbering)
    again = from_jax(back)
    for name in converted.state:
        np.testing.assert_array_equal(again.state[name], converted.state[name], err_msg=name)
    if numbering == "old":
        assert set(back) == set(arrays) and all(np.array_equal(back[k], arrays[k]) for k in arrays)
    else:
        assert any("MultiHeadDotProductAttention_0" in k for k in back)


def test_big_vision_layout_scanned_prefixed_and_without_class_row():
    """big_vision: params/ prefix, scanned layers and no class row in the position embedding."""
    arrays = dict(np.load(OFFICIAL / "checkpoint.npz"))
    reference = from_jax(arrays)
    new = to_jax(reference.state, reference.config, "new")
    blocks = sorted({k.split("/")[1] for k in new if k.startswith("Transformer/encoderblock_")})
    scanned = {}
    for name, array in new.items():
        if name.startswith("Transformer/encoderblock_0/"):
            rest = name[len("Transformer/encoderblock_0/"):]
            scanned[f"params/Transformer/encoderblock/{rest}"] = np.stack([new[f"Transformer/{b}/{rest}"] for b in blocks])
        elif not name.startswith("Transformer/encoderblock_"):
            scanned["params/" + name] = array
    pos = scanned.pop("params/Transformer/posembed_input/pos_embedding")
    scanned["params/pos_embedding"] = pos[:, 1:]
    converted = from_jax(scanned)
    for name, array in reference.state.items():
        if name.endswith("position_embeddings"):
            np.testing.assert_array_equal(converted.state[name][:, 1:], array[:, 1:])
            assert not converted.state[name][:, 0].any()
        else:
            np.testing.assert_array_equal(converted.state[name], array, err_msg=name)


def test_gap_and_pre_logits_variants(framework, tmp_path):
    """'gap' pooling and a representation (pre-logits) layer, made from a random canonical model."""
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, num_labels=5, pooling="mean", class_token=False,
                       classifier_input="pooler", pooler_output_size=24, hidden_act="gelu_pytorch_tanh",
                       layer_norm_eps=1e-6)
    state = init_state(config, parameter_specs(config, "classification"), seed=0)
    arrays = to_jax(state, config)
    assert "cls" not in arrays and arrays["pre_logits/kernel"].shape == (32, 24)
    np.savez(tmp_path / "gap.npz", **arrays)
    out_dir = tmp_path / "out"
    convert_checkpoint(str(tmp_path / "gap.npz"), str(out_dir))
    converted = ViTConfig.from_pretrained(out_dir)
    assert converted.pooling == "mean" and not converted.class_token and converted.classifier_input == "pooler"
    back = read_canonical(str(out_dir), converted)
    assert all(np.array_equal(back[k], state[k]) for k in state)
    model = load(framework, "classification", out_dir)
    assert run(framework, model, np.zeros((1, 3, 32, 32), np.float32))["logits"].shape == (1, 5)


def test_timm_mean_pooling_with_fc_norm_and_no_qkv_bias(framework, tmp_path):
    config = ViTConfig(image_size=[32, 48], patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                       intermediate_size=64, num_labels=3, pooling="mean", use_fc_norm=True, qkv_bias=False,
                       layer_norm_eps=1e-6)
    state = init_state(config, parameter_specs(config, "classification"), seed=0)
    timm_state = to_timm(state, config)
    assert "fc_norm.weight" in timm_state and "norm.weight" not in timm_state and "blocks.0.attn.qkv.bias" not in timm_state
    with pytest.raises(CheckpointError, match="--image-size"):
        from_timm(timm_state, num_attention_heads=4)
    converted = from_timm(timm_state, num_attention_heads=4, image_size=[32, 48])
    assert converted.config.pooling == "mean" and converted.config.use_fc_norm and not converted.config.qkv_bias
    assert all(np.array_equal(converted.state[k], state[k]) for k in state)


@pytest.mark.parametrize("extra, message", [
    ({"dist_token": np.zeros((1, 1, 32), np.float32)}, "dist_token"),
    ({"head_dist.weight": np.zeros((10, 32), np.float32)}, "head_dist"),
    ({"reg_token": np.zeros((1, 4, 32), np.float32)}, "reg_token"),
    ({"blocks.0.ls1.gamma": np.zeros(32, np.float32)}, "layer scale"),
    ({"blocks.0.attn.q_norm.weight": np.zeros(8, np.float32)}, "qk-norm"),
    ({"attn_pool.latent": np.zeros((1, 1, 32), np.float32)}, "attention-pool"),
    ({"blocks.0.mystery": np.zeros(3, np.float32)}, "blocks.0.mystery"),
])
def test_unsupported_timm_tensors_are_named(extra, message):
    state = {**load_file(str(TIMM / "model.safetensors")), **extra}
    with pytest.raises(CheckpointError, match=message):
        from_timm(state, num_attention_heads=4, pooling="cls")


def test_timm_no_embed_class_is_refused():
    state = load_file(str(TIMM / "model.safetensors"))
    state["pos_embed"] = state["pos_embed"][:, 1:]
    with pytest.raises(CheckpointError, match="no_embed_class"):
        from_timm(state, num_attention_heads=4)


def test_missing_head_count_names_the_flag(tmp_path):
    result = cli(str(TIMM / "model.safetensors"), str(tmp_path / "out"))
    assert result.returncode != 0 and "--num-attention-heads" in result.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_conflicting_label_count_names_the_flag(tmp_path):
    result = cli("--from", "jax", str(OFFICIAL / "checkpoint.npz"), str(tmp_path), "--num-labels", "7")
    assert result.returncode != 0 and "--num-labels" in result.stderr


@pytest.mark.parametrize("method", ["bicubic", "bicubic_antialias", "linear"])
def test_resize_methods_agree_across_frameworks(official_dir, method):
    """from_pretrained(image_size=48) with each resize method gives the same numbers in every framework."""
    pixels = np.random.default_rng(0).normal(size=(1, 3, 48, 48)).astype(np.float32)
    logits = [run(fw, load(fw, "classification", official_dir, image_size=48, pos_embed_resize=method), pixels)["logits"]
              for fw in ("pt", "tf", "flax")]
    assert all(np.max(np.abs(x - logits[0])) <= 1e-5 for x in logits)


def test_image_size_at_conversion_equals_image_size_at_load(official_dir, tmp_path):
    result = cli("--from", "jax", str(OFFICIAL / "checkpoint.npz"), str(tmp_path), "--image-size", "48")
    assert result.returncode == 0, result.stderr
    at_conversion = read_canonical(str(tmp_path), ViTConfig.from_pretrained(tmp_path))
    at_load = load("pt", "classification", official_dir, image_size=48, pos_embed_resize="linear").canonical_state_dict()
    name = "vit.embeddings.position_embeddings"
    np.testing.assert_allclose(at_conversion[name], at_load[name], atol=1e-6)


def test_export_cli_round_trip(timm_dir, tmp_path):
    subprocess.run([sys.executable, str(ROOT / "conversion" / "export.py"), "timm", str(timm_dir),
                    str(tmp_path / "timm.safetensors")], check=True, capture_output=True)
    exported, original = load_file(str(tmp_path / "timm.safetensors")), load_file(str(TIMM / "model.safetensors"))
    assert set(exported) == set(original) and all(np.array_equal(exported[k], original[k]) for k in original)


def test_hf_source_is_reencoded(tmp_path):
    hf = FIXTURES / "vit-tiny-p8-32" / "classification" / "tf_h5"
    result = cli(str(hf), str(tmp_path))
    assert result.returncode == 0, result.stderr
    a = read_canonical(str(tmp_path), ViTConfig.from_pretrained(tmp_path))
    b = read_canonical(str(hf), ViTConfig.from_pretrained(hf))
    assert all(np.array_equal(a[k], b[k]) for k in b)


# ---- issue 11 item 4: timm global_pool='avg' without fc_norm must not become class-token pooling silently
def _timm_avg_without_fc_norm() -> tuple[ViTConfig, dict, dict]:
    """(config, canonical state, timm state dict) of a timm model with a class token, global_pool='avg', no fc_norm."""
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, num_labels=5, pooling="mean", use_fc_norm=False, class_token=True,
                       layer_norm_eps=1e-6)
    state = init_state(config, parameter_specs(config, "classification"), seed=3)
    return config, state, to_timm(state, config)


def test_timm_state_dict_that_hides_its_pooling_is_refused_naming_the_flag(tmp_path):
    _, _, timm_state = _timm_avg_without_fc_norm()
    with pytest.raises(CheckpointError, match="--pooling"):
        from_timm(timm_state, num_attention_heads=4)
    from safetensors.numpy import save_file

    save_file(timm_state, str(tmp_path / "avg.safetensors"))
    result = cli(str(tmp_path / "avg.safetensors"), str(tmp_path / "out"), "--num-attention-heads", "4")
    assert result.returncode != 0 and "--pooling" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_timm_avg_pooling_converts_to_mean_pooling(framework, tmp_path):
    """With --pooling mean, or from a timm folder whose config.json says global_pool='avg', the logits are the
    mean-pooled model's; the class-token reading of the same tensors gives other logits."""
    from safetensors.numpy import save_file

    config, state, timm_state = _timm_avg_without_fc_norm()
    timm_folder = tmp_path / "timm-hub"
    timm_folder.mkdir()
    save_file(timm_state, str(timm_folder / "model.safetensors"))
    (timm_folder / "config.json").write_text('{"architecture": "vit_tiny_patch8_32", "num_classes": 5, '
                                             '"global_pool": "avg", "pretrained_cfg": {}}')
    from_flag = from_timm(timm_state, num_attention_heads=4, pooling="mean")
    convert_checkpoint(str(timm_folder), str(tmp_path / "out"), num_attention_heads=4)
    from_folder = ViTConfig.from_pretrained(tmp_path / "out")
    assert from_flag.config.pooling == from_folder.pooling == "mean" and not from_folder.use_fc_norm
    pixels = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    logits = run(framework, load(framework, "classification", tmp_path / "out"), pixels)["logits"]
    save_checkpoint(str(tmp_path / "reference"), config, state, "classification")
    expected_logits = run(framework, load(framework, "classification", tmp_path / "reference"), pixels)["logits"]
    assert np.max(np.abs(logits - expected_logits)) <= 1e-5
    save_checkpoint(str(tmp_path / "as-cls"), config.copy(pooling="cls"), state, "classification")
    cls_logits = run(framework, load(framework, "classification", tmp_path / "as-cls"), pixels)["logits"]
    assert np.max(np.abs(cls_logits - expected_logits)) > 1e-2  # the silent misreading this guards against


def test_timm_folder_global_pool_token_and_conflicts(tmp_path):
    from safetensors.numpy import save_file

    folder = tmp_path / "timm-hub"
    folder.mkdir()
    save_file(load_file(str(TIMM / "model.safetensors")), str(folder / "model.safetensors"))
    (folder / "config.json").write_text('{"architecture": "vit_tiny", "model_args": {"global_pool": "token"}}')
    assert convert_checkpoint(str(folder), str(tmp_path / "a"), num_attention_heads=4).config.pooling == "cls"
    with pytest.raises(CheckpointError, match="conflicts with --pooling mean"):
        convert_checkpoint(str(folder), str(tmp_path / "b"), num_attention_heads=4, pooling="mean")
    (folder / "config.json").write_text('{"architecture": "vit_tiny", "global_pool": "avgmax"}')
    with pytest.raises(CheckpointError, match="avgmax"):
        convert_checkpoint(str(folder), str(tmp_path / "c"), num_attention_heads=4)


# ---- issue 11 item 14: HF sources honour the flags and keep their head; export takes every head
HF_TINY = FIXTURES / "vit-tiny-p8-32"


def test_hf_mim_folder_keeps_its_decoder_and_gains_no_pooler(tmp_path):
    source = HF_TINY / "mim" / "safetensors"
    result = cli(str(source), str(tmp_path))
    assert result.returncode == 0, result.stderr
    config = ViTConfig.from_pretrained(tmp_path)
    assert config.extra["architectures"] == ["ViTForMaskedImageModeling"]
    a, b = read_canonical(str(tmp_path), config), read_canonical(str(source), config)
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in b)


def test_hf_base_folder_without_pooler_gains_no_random_pooler(tmp_path):
    config = ViTConfig.from_pretrained(HF_TINY / "base" / "safetensors")
    state = read_canonical(str(HF_TINY / "base" / "safetensors"), config)
    without_pooler = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    save_checkpoint(str(tmp_path / "src"), config, without_pooler, "base", architecture="ViTModel")
    result = cli(str(tmp_path / "src"), str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    out = read_canonical(str(tmp_path / "out"), config)
    assert set(out) == set(without_pooler) and all(np.array_equal(out[k], without_pooler[k]) for k in out)


@pytest.mark.parametrize("flag, value, ok", [("--num-labels", "7", False), ("--num-labels", "10", True),
                                             ("--num-attention-heads", "8", False), ("--num-attention-heads", "4", True)])
def test_hf_source_checks_labels_and_heads(tmp_path, flag, value, ok):
    result = cli(str(HF_TINY / "classification" / "safetensors"), str(tmp_path / "out"), flag, value)
    assert (result.returncode == 0) == ok, result.stderr
    if not ok:
        assert flag in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.parametrize("target", ["timm", "jax"])
@pytest.mark.parametrize("head", ["base", "classification", "mim"])
def test_export_takes_every_head_and_round_trips(tmp_path, head, target):
    """ViTModel (every in21k and DINO backbone), classification and MIM folders export; what the target has no
    place for (the SimMIM decoder) is named on stderr, and the GELU/eps the file cannot record is warned about."""
    folder = HF_TINY / head / "safetensors"
    out_file = tmp_path / ("model.safetensors" if target == "timm" else "model.npz")
    result = subprocess.run([sys.executable, str(ROOT / "conversion" / "export.py"), target, str(folder), str(out_file)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert ("decoder.0.weight" in result.stderr) == (head == "mim")
    assert "hidden_act='gelu'" in result.stderr and "1e-12" in result.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    flags = dict(layer_norm_eps=1e-12, hidden_act="gelu")
    if target == "timm":
        back = from_timm(load_file(str(out_file)), num_attention_heads=4, pooling="cls", **flags)
    else:
        back = from_jax(dict(np.load(out_file)), **flags)
    config = ViTConfig.from_pretrained(folder)
    source = {k.removeprefix("vit."): v for k, v in read_canonical(str(folder), config).items()}
    back_state = {k.removeprefix("vit."): v for k, v in back.state.items()}
    assert set(back_state) == set(source) - {"decoder.0.weight", "decoder.0.bias", "embeddings.mask_token"}
    assert all(np.array_equal(back_state[k], source[k]) for k in back_state)


def test_export_of_a_model_with_the_originals_gelu_and_eps_warns_nothing(official_dir, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "conversion" / "export.py"), "jax", str(official_dir),
                             str(tmp_path / "model.npz")], capture_output=True, text=True)
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
