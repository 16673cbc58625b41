"""The three frameworks agree on the ViT family's configs too: every output at native and interpolated
resolution, and the gradients of every parameter, for every pair of frameworks and every head the family has."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from frameworks import FRAMEWORKS, PREFIX, run
from test_family import gradients

import vit
from equivalence.test_equivalence import BASE, GRAD_RTOL, PAIRS, assert_close
from vit import ViTConfig
from vit.checkpoint import init_state
from vit.params import parameter_specs

# Tiny configs with each family's options; the generic ViT classes of each head take them.
FAMILY_CONFIGS = {
    "clip": dict(pre_layernorm=True, use_fc_norm=True, pooler_dense=False, patch_embedding_bias=False,
                 projection_dim=24, hidden_act="quick_gelu", layer_norm_eps=1e-5),
    "siglip": dict(class_token=False, pooling="map", pooler_dense=False, hidden_act="gelu_pytorch_tanh",
                   layer_norm_eps=1e-6),
    "dinov2": dict(layer_scale_init_value=0.5, always_interpolate_pos_encoding=True, classifier_input="cls_and_mean",
                   pooler_dense=False, layer_norm_eps=1e-6),
    "dinov2_registers_swiglu": dict(layer_scale_init_value=0.5, num_register_tokens=3, use_swiglu_ffn=True,
                                    position_interpolation="bicubic_antialias", classifier_input="cls_and_mean",
                                    pooler_dense=False, layer_norm_eps=1e-6),
    "deit": dict(distillation_token=True),
    "deit3_no_embed_class": dict(layer_scale_init_value=0.1, no_embed_class=True, layer_norm_eps=1e-6),
}
FAMILY_HEADS = {
    "clip": ("base", "projection"),
    "siglip": ("base", "classification"),
    "dinov2": ("base", "classification"),
    "dinov2_registers_swiglu": ("base", "classification"),
    "deit": ("base", "classification", "distilled"),
    "deit3_no_embed_class": ("base", "classification"),
}
CLASS_NAMES = {"base": "ViTModel", "classification": "ViTForImageClassification",
               "projection": "ViTWithProjection", "distilled": "ViTForImageClassificationWithTeacher"}
CASES = [(name, head) for name, heads in FAMILY_HEADS.items() for head in heads]


def make_config(name: str) -> ViTConfig:
    return ViTConfig(**{**BASE, **FAMILY_CONFIGS[name]})


@functools.cache
def weights(config_name: str, head: str) -> dict[str, np.ndarray]:
    config = make_config(config_name)
    state = init_state(config, parameter_specs(config, head), seed=1)
    rng = np.random.default_rng(2)
    return {k: (v + rng.normal(0, 0.05, v.shape)).astype(np.float32) for k, v in state.items()}


@functools.cache
def model(framework: str, config_name: str, head: str):
    m = getattr(vit, PREFIX[framework] + CLASS_NAMES[head])(make_config(config_name))
    m.load_canonical_state_dict(weights(config_name, head))
    return m.eval() if framework == "pt" else m


def pixels(config: ViTConfig, interpolated: bool) -> np.ndarray:
    (h, w), (ph, pw) = config.image_hw, config.patch_hw
    if interpolated:
        h, w = h + ph, w + 2 * pw
    return np.random.default_rng(3).normal(size=(3, config.num_channels, h, w)).astype(np.float32)


@functools.cache
def outputs(framework: str, config_name: str, head: str, interpolated: bool) -> dict:
    config = make_config(config_name)
    return run(framework, model(framework, config_name, head), pixels(config, interpolated),
               output_hidden_states=True, output_attentions=True, interpolate_pos_encoding=interpolated)


@pytest.mark.parametrize("interpolated", [False, True], ids=["native", "interpolated"])
@pytest.mark.parametrize("config_name, head", CASES)
@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_family_outputs_agree(pair, config_name, head, interpolated):
    a, b = (outputs(fw, config_name, head, interpolated) for fw in pair)
    assert set(a) == set(b)
    for field in a:
        assert_close(a[field], b[field], field)


@functools.cache
def family_gradients(framework: str, config_name: str, head: str) -> dict[str, np.ndarray]:
    return gradients(framework, model(framework, config_name, head), pixels(make_config(config_name), False)[:2])


@pytest.mark.parametrize("config_name, head", CASES)
@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_family_gradients_agree(pair, config_name, head):
    """d(sum of squared outputs)/d(every parameter) is the same in both frameworks, and no parameter is skipped."""
    names = set(weights(config_name, head))
    grads_a, grads_b = (family_gradients(fw, config_name, head) for fw in pair)
    assert set(grads_a) == names and set(grads_b) == names
    floor = 1e-3 * max(float(np.max(np.abs(g))) for g in grads_a.values())
    for name in names:
        a, b = grads_a[name].astype(np.float64), grads_b[name].astype(np.float64)
        scale = max(float(np.max(np.abs(a))), floor)
        assert np.max(np.abs(a - b)) / scale <= GRAD_RTOL, name


@pytest.mark.parametrize("config_name, head", CASES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_family_canonical_round_trip_is_bit_exact(framework, config_name, head):
    state = weights(config_name, head)
    back = model(framework, config_name, head).canonical_state_dict()
    assert set(back) == set(state)
    for name, array in state.items():
        np.testing.assert_array_equal(np.asarray(back[name]), array, err_msg=name)
