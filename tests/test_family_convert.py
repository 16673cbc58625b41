"""The ViT family from timm, big_vision and OpenCLIP: `conversion/convert.py` infers the architecture from the
tensors, the converted folder reproduces the source library's own numbers in PyTorch, TensorFlow and Flax, and
the export back to timm is bit-exact.

The timm vectors are timm 1.0.31's (`tests/fixtures/family/timm-*`, README there and `timm-extras-make.py`), the
big_vision vectors are big_vision's own `vit.Model`'s. No OpenCLIP vectors exist here, so the OpenCLIP test
renames HF CLIP's fixture weights to OpenCLIP's names (the correspondence of transformers'
`convert_clip_original_pytorch_to_hf.py`) and checks that the converted model gives HF CLIP's outputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES
from frameworks import PREFIX, run
from safetensors.numpy import load_file, save_file

from vit import CheckpointError
from vit.convert import from_jax, from_openclip, from_timm, to_timm

ROOT = Path(__file__).parent.parent
FAMILY = FIXTURES / "family"
BIG_VISION = FAMILY / "official-bigvision-siglip-map-p8-32"
TIMM_CASES = ("timm-dinov2-reg-p14-56", "timm-siglip-map-p8-32", "timm-clip-prenorm-p8-32", "timm-deit3-p8-32",
              "timm-dinov2-swiglu-p14-28", "timm-swiglu-split-p8-32", "timm-deit-distilled-p8-32")
TOL = 1e-5


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def timm_args(case: str) -> dict:
    return json.loads((FAMILY / case / "timm_args.json").read_text())


def timm_state(case: str) -> dict[str, np.ndarray]:
    return load_file(str(FAMILY / case / "model.safetensors"))


def timm_flags(case: str) -> list[str]:
    """What a timm state dict cannot reveal: convert_flags (activation, eps), the head count of the fused qkv, and
    timm's global_pool='token' (its default) for a class-token model, which a timm hub folder's config.json holds."""
    args = timm_args(case)
    kwargs = args["VisionTransformer_kwargs"]
    flags = ["--num-attention-heads", str(kwargs["num_heads"])]
    for name, value in args["convert_flags"].items():
        flags += [f"--{name.replace('_', '-')}", str(value)]
    if kwargs.get("global_pool", "token") == "token" and kwargs.get("class_token", True):
        flags += ["--pooling", "cls"]
    return flags


def cli(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "conversion" / script), *args], capture_output=True, text=True)


def family_class(framework: str, name: str):
    import vit

    return getattr(vit, PREFIX[framework] + name)


def load(framework: str, name: str, folder: Path, **kwargs):
    model = family_class(framework, name).from_pretrained(folder, **kwargs)
    return model.eval() if framework == "pt" else model


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Each timm case and the big_vision case through conversion/convert.py, once per module."""
    folders = {}
    for case in TIMM_CASES:
        out = tmp_path_factory.mktemp(case)
        result = cli("convert.py", "--from", "timm", str(FAMILY / case / "model.safetensors"), str(out),
                     *timm_flags(case))
        assert result.returncode == 0, result.stderr
        folders[case] = out
    out = tmp_path_factory.mktemp("big_vision")
    result = cli("convert.py", "--from", "jax", str(BIG_VISION / "checkpoint.npz"), str(out))
    assert result.returncode == 0, result.stderr
    folders["big_vision"] = out
    return folders


# ------------------------------------------------------------------------------------------ what is inferred
@pytest.mark.parametrize("case, expected", [
    ("timm-dinov2-reg-p14-56", dict(layer_scale=True, num_register_tokens=4, no_embed_class=True, pooling="cls")),
    ("timm-siglip-map-p8-32", dict(class_token=False, pooling="map", layer_scale=False, pre_layernorm=False)),
    ("timm-clip-prenorm-p8-32", dict(pre_layernorm=True, patch_embedding_bias=False, layer_scale=False)),
    ("timm-deit3-p8-32", dict(layer_scale=True, no_embed_class=True, num_register_tokens=0)),
    ("timm-dinov2-swiglu-p14-28", dict(use_swiglu_ffn=True, intermediate_size=64, layer_scale=True)),
    ("timm-swiglu-split-p8-32", dict(use_swiglu_ffn=True, intermediate_size=64, layer_scale=False)),
    ("timm-deit-distilled-p8-32", dict(distillation_token=True, family="deit", no_embed_class=False)),
])
def test_timm_architecture_is_read_from_the_tensors(case, expected):
    converted = from_timm(timm_state(case), num_attention_heads=4, pooling=None if "map" in case else "cls")
    config = converted.config
    for name, value in expected.items():
        actual = config.layer_scale_init_value is not None if name == "layer_scale" else getattr(config, name)
        assert actual == value, name
    assert converted.head == ("distilled" if "distilled" in case else "classification")


# ------------------------------------------------------------------------------------- the source's numbers
@pytest.mark.parametrize("case", TIMM_CASES)
def test_timm_logits_and_features_reproduce(framework, case, converted):
    e = np.load(FAMILY / case / "expected.npz")
    folder = converted[case]
    head_class = "DeiTForImageClassificationWithTeacher" if "distilled" in case else "ViTForImageClassification"
    out = run(framework, load(framework, head_class, folder), e["pixel_values"])
    assert max_diff(out["logits"], e["logits"]) <= TOL
    for name in ("cls_logits", "distillation_logits"):
        if name in e:
            assert max_diff(out[name], e[name]) <= TOL, name
    features = run(framework, load(framework, "ViTModel", folder, add_pooling_layer=False), e["pixel_values"])
    assert features["last_hidden_state"].shape == e["forward_features"].shape
    assert max_diff(features["last_hidden_state"], e["forward_features"]) <= TOL
    if "map" in case:  # the attention pool's output is the pooler output, with no dense layer made up
        pooled = run(framework, load(framework, "ViTModel", folder), e["pixel_values"])["pooler_output"]
        classifier = load_file(str(folder / "model.safetensors"))
        logits = pooled @ classifier["classifier.weight"].T + classifier["classifier.bias"]
        assert max_diff(logits, e["logits"]) <= TOL


def test_big_vision_siglip_reproduces(framework, converted):
    e = np.load(BIG_VISION / "expected.npz")
    folder = converted["big_vision"]
    out = run(framework, load(framework, "ViTForImageClassification", folder), e["pixel_values"])
    assert max_diff(out["logits"], e["logits"]) <= 2e-6  # exact: Flax's tanh GELU and eps 1e-6, round-off only
    base = run(framework, load(framework, "ViTModel", folder), e["pixel_values"])
    assert max_diff(base["last_hidden_state"], e["encoded"]) <= TOL
    assert max_diff(base["pooler_output"], e["pre_logits"]) <= TOL  # the MAP head's output


# ------------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("case", [c for c in TIMM_CASES if "split" not in c])
def test_timm_export_is_bit_exact(case, converted, tmp_path):
    out_file = tmp_path / "timm.safetensors"
    result = cli("export.py", "timm", str(converted[case]), str(out_file))
    assert result.returncode == 0, result.stderr
    original, exported = timm_state(case), load_file(str(out_file))
    assert sorted(exported) == sorted(original)
    for name, array in original.items():
        assert exported[name].dtype == array.dtype and np.array_equal(exported[name], array), name


@pytest.mark.parametrize("case, global_pool", [("timm-deit3-p8-32", "token"), ("timm-siglip-map-p8-32", "map")])
def test_timm_hub_folder_says_its_pooling(case, global_pool, converted, tmp_path):
    """A timm hub folder's config.json names global_pool ('map' too), so no --pooling is needed."""
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "model.safetensors").write_bytes((FAMILY / case / "model.safetensors").read_bytes())
    (hub / "config.json").write_text(json.dumps({"architecture": "vit_test", "num_classes": 5,
                                                 "global_pool": global_pool, "pretrained_cfg": {}}))
    out = tmp_path / "out"
    result = cli("convert.py", str(hub), str(out), "--num-attention-heads", "4")
    assert result.returncode == 0, result.stderr
    ours, flagged = load_file(str(out / "model.safetensors")), load_file(str(converted[case] / "model.safetensors"))
    assert sorted(ours) == sorted(flagged) and all(np.array_equal(ours[k], flagged[k]) for k in ours)
    assert json.loads((out / "config.json").read_text()) == json.loads((converted[case] / "config.json").read_text())


def test_timm_split_swiglu_round_trips_in_either_layout():
    """timm's SwiGLU (fc1_g, fc1_x) and SwiGLUPacked (one fc1) are the same numbers: both export bit-exact."""
    original = timm_state("timm-swiglu-split-p8-32")
    converted = from_timm(original, num_attention_heads=4, pooling="cls")
    split = to_timm(converted.state, converted.config, swiglu="split")
    assert sorted(split) == sorted(original)
    assert all(np.array_equal(split[name], original[name]) for name in original)
    packed = to_timm(converted.state, converted.config)
    assert "blocks.0.mlp.fc1.weight" in packed and "blocks.0.mlp.fc1_g.weight" not in packed
    repacked = from_timm(packed, num_attention_heads=4, pooling="cls")
    assert all(np.array_equal(repacked.state[name], converted.state[name]) for name in converted.state)


# ---------------------------------------------------------------------------------------------------- OpenCLIP
def hf_clip_as_openclip() -> dict[str, np.ndarray]:
    """HF CLIP's fixture weights under OpenCLIP's names (transformers' convert_clip_original_pytorch_to_hf.py,
    read backwards), with the text tower's names beside them as a full OpenCLIP state dict has them."""
    hf = load_file(str(FAMILY / "clip" / "safetensors" / "model.safetensors"))
    v = "vision_model."
    out = {
        "visual.conv1.weight": hf[v + "embeddings.patch_embedding.weight"],
        "visual.class_embedding": hf[v + "embeddings.class_embedding"],
        "visual.positional_embedding": hf[v + "embeddings.position_embedding.weight"],
        "visual.ln_pre.weight": hf[v + "pre_layrnorm.weight"], "visual.ln_pre.bias": hf[v + "pre_layrnorm.bias"],
        "visual.ln_post.weight": hf[v + "post_layernorm.weight"], "visual.ln_post.bias": hf[v + "post_layernorm.bias"],
        "visual.proj": np.ascontiguousarray(hf["visual_projection.weight"].T),  # applied as x @ proj
    }
    layers = {int(k.split(".")[3]) for k in hf if k.startswith(v + "encoder.layers.")}
    for i in sorted(layers):
        hf_layer, oc = f"{v}encoder.layers.{i}.", f"visual.transformer.resblocks.{i}."
        for leaf in ("weight", "bias"):
            out[f"{oc}ln_1.{leaf}"] = hf[f"{hf_layer}layer_norm1.{leaf}"]
            out[f"{oc}ln_2.{leaf}"] = hf[f"{hf_layer}layer_norm2.{leaf}"]
            out[f"{oc}attn.in_proj_{leaf}"] = np.concatenate(
                [hf[f"{hf_layer}self_attn.{p}_proj.{leaf}"] for p in ("q", "k", "v")], axis=0)
            out[f"{oc}attn.out_proj.{leaf}"] = hf[f"{hf_layer}self_attn.out_proj.{leaf}"]
            out[f"{oc}mlp.c_fc.{leaf}"] = hf[f"{hf_layer}mlp.fc1.{leaf}"]
            out[f"{oc}mlp.c_proj.{leaf}"] = hf[f"{hf_layer}mlp.fc2.{leaf}"]
    out["token_embedding.weight"] = hf["text_model.embeddings.token_embedding.weight"]
    out["positional_embedding"] = hf["text_model.embeddings.position_embedding.weight"]
    out["ln_final.weight"] = hf["text_model.final_layer_norm.weight"]
    out["text_projection"] = np.ascontiguousarray(hf["text_projection.weight"].T)
    out["logit_scale"] = hf["logit_scale"]
    return out


@pytest.fixture(scope="module")
def openclip_dir(tmp_path_factory):
    source = tmp_path_factory.mktemp("openclip") / "open_clip_model.safetensors"
    save_file(hf_clip_as_openclip(), str(source))
    out = tmp_path_factory.mktemp("openclip-converted")
    # --from auto: the visual.* names say OpenCLIP.
    result = cli("convert.py", str(source), str(out), "--hidden-act", "quick_gelu", "--num-attention-heads", "4")
    assert result.returncode == 0, result.stderr
    return out


def test_openclip_reproduces_hf_clip(framework, openclip_dir):
    e = np.load(FAMILY / "clip" / "expected.npz")
    config = json.loads((openclip_dir / "config.json").read_text())
    assert config["architectures"] == ["CLIPVisionModelWithProjection"] and config["layer_norm_eps"] == 1e-5
    model = load(framework, "CLIPVisionModelWithProjection", openclip_dir)
    out = run(framework, model, e["pixel_values"], output_hidden_states=True)
    for name in ("image_embeds", "last_hidden_state"):
        assert max_diff(out[name], e[name]) <= TOL, name
    assert max_diff(np.stack(out["hidden_states"]), e["hidden_states"]) <= TOL


def test_openclip_hub_folder_needs_no_flags(openclip_dir, tmp_path):
    """open_clip_config.json states the activation (quick_gelu) and the head width; a flag against it is an error."""
    hub = tmp_path / "hub"
    hub.mkdir()
    save_file(hf_clip_as_openclip(), str(hub / "open_clip_model.safetensors"))
    mean = [0.5, 0.4, 0.3]
    (hub / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": {"embed_dim": 24, "quick_gelu": True,
                      "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 8, "patch_size": 8}},
        "preprocess_cfg": {"mean": mean, "std": [0.2, 0.2, 0.2]}}))
    out = tmp_path / "out"
    result = cli("convert.py", str(hub), str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "config.json").read_text()) == json.loads((openclip_dir / "config.json").read_text())
    ours, flagged = load_file(str(out / "model.safetensors")), load_file(str(openclip_dir / "model.safetensors"))
    assert sorted(ours) == sorted(flagged) and all(np.array_equal(ours[k], flagged[k]) for k in ours)
    assert json.loads((out / "preprocessor_config.json").read_text())["image_mean"] == mean
    result = cli("convert.py", str(hub), str(tmp_path / "other"), "--hidden-act", "gelu")
    assert result.returncode != 0 and "hidden_act='quick_gelu'" in result.stderr and "--hidden-act" in result.stderr
    assert not (tmp_path / "other").exists()


def test_openclip_needs_the_activation_and_refuses_what_it_cannot_hold():
    state = hf_clip_as_openclip()
    with pytest.raises(CheckpointError, match="--hidden-act quick_gelu"):
        from_openclip(state, num_attention_heads=4)
    with pytest.raises(CheckpointError, match="attentional pooler"):
        from_openclip({**state, "visual.attn_pool.query": np.zeros((1, 32), np.float32)}, "gelu", num_attention_heads=4)
    with pytest.raises(CheckpointError, match="no place for.*visual.extra"):
        from_openclip({**state, "visual.extra": np.zeros(3, np.float32)}, "gelu", num_attention_heads=4)
    converted = from_openclip(state, "quick_gelu", num_attention_heads=4)
    assert converted.head == "projection" and converted.config.projection_dim == 24


# ------------------------------------------------------------------------------------------ refusals by name
def test_timm_refusals_name_the_problem():
    state = timm_state("timm-siglip-map-p8-32")
    with pytest.raises(CheckpointError, match="drop --pooling cls"):
        from_timm(state, num_attention_heads=4, pooling="cls")
    two_latents = {**state, "attn_pool.latent": np.concatenate([state["attn_pool.latent"]] * 2, axis=1)}
    with pytest.raises(CheckpointError, match="2 latents"):
        from_timm(two_latents, num_attention_heads=4)
    registers = timm_state("timm-dinov2-reg-p14-56")
    # timm's reg_tokens without no_embed_class: position rows for the class token and the 4 registers.
    with_rows = {**registers, "pos_embed": np.zeros((1, 16 + 5, 32), np.float32)}
    with pytest.raises(CheckpointError, match="rows for the register tokens"):
        from_timm(with_rows, num_attention_heads=4, pooling="cls")
    stray = dict(timm_state("timm-swiglu-split-p8-32"))
    del stray["blocks.0.mlp.fc1_g.weight"]
    with pytest.raises(CheckpointError, match="no fc1_g gate half"):
        from_timm(stray, num_attention_heads=4, pooling="cls")
    qk_norm = {**registers, "blocks.0.attn.q_norm.weight": np.ones(8, np.float32)}
    with pytest.raises(CheckpointError, match="qk-norm"):
        from_timm(qk_norm, num_attention_heads=4, pooling="cls")


def test_big_vision_map_head_with_other_heads_is_refused():
    arrays = dict(np.load(BIG_VISION / "checkpoint.npz"))
    name = "params/img/MAPHead_0/MultiHeadDotProductAttention_0/query/kernel"
    arrays[name] = arrays[name].reshape(32, 2, 16)
    with pytest.raises(CheckpointError, match="MAPHead_0"):
        from_jax(arrays)
    with pytest.raises(CheckpointError, match="drop --pooling"):
        from_jax(dict(np.load(BIG_VISION / "checkpoint.npz")), pooling="mean")


def test_big_vision_two_tower_checkpoint_converts_its_image_tower():
    arrays = dict(np.load(BIG_VISION / "checkpoint.npz"))
    text = {"params/txt/Encoder_0/encoder_norm/scale": np.ones(8, np.float32), "params/t": np.ones(1, np.float32)}
    alone, both = from_jax(arrays), from_jax({**arrays, **text})
    assert sorted(alone.state) == sorted(both.state)
    assert all(np.array_equal(alone.state[k], both.state[k]) for k in alone.state)
