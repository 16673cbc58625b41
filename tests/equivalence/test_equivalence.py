"""The three frameworks agree on the same weights: every output, at native and interpolated resolution,
and the gradient of every parameter, for every pair of frameworks, every head and several configs: plain ViT
options and each family's (CLIP, SigLIP, DINOv2 with registers and SwiGLU, DeiT, DeiT III)."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
from frameworks import FRAMEWORKS, build, loss_and_grads, run, sum_of_squares

from vit import ViTConfig
from vit.checkpoint import init_state
from vit.params import parameter_specs

TOL = 1e-5
GRAD_RTOL = 1e-4
BASE = dict(image_size=32, patch_size=8, encoder_stride=8, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=64, num_labels=5)
CONFIGS = {
    "cls": {},
    "mean_fc_norm": dict(pooling="mean", use_fc_norm=True, layer_norm_eps=1e-6),
    "mean": dict(pooling="mean"),
    "no_qkv_bias": dict(qkv_bias=False),
    "nonsquare": dict(image_size=[32, 48], patch_size=[8, 16], encoder_stride=[8, 16]),
    "one_channel": dict(num_channels=1),
    "pre_logits_tanh_gelu": dict(classifier_input="pooler", pooler_output_size=24, hidden_act="gelu_pytorch_tanh",
                                 layer_norm_eps=1e-6),
}
HEADS = ("base", "classification", "mim")
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
VIT_CASES = [(name, head) for name in CONFIGS for head in HEADS]
FAMILY_CASES = [(name, head) for name, heads in FAMILY_HEADS.items() for head in heads]
# Heads without labels are differentiated through the sum of squares of every output they have.
OUTPUT_FIELDS = ("last_hidden_state", "pooler_output", "image_embeds", "logits", "cls_logits", "distillation_logits")
GRADIENT_CASES = [(name, head) for name in CONFIGS for head in ("classification", "mim")] + FAMILY_CASES
ROUND_TRIP_CASES = [("nonsquare", head) for head in HEADS] + FAMILY_CASES
PAIRS = list(itertools.combinations(FRAMEWORKS, 2))


def make_config(name: str) -> ViTConfig:
    return ViTConfig(**{**BASE, **CONFIGS.get(name, FAMILY_CONFIGS.get(name, {}))})


@functools.cache
def weights(config_name: str, head: str) -> dict[str, np.ndarray]:
    """Random weights where every tensor matters (biases, norms and tokens perturbed away from their init)."""
    config = make_config(config_name)
    state = init_state(config, parameter_specs(config, head), seed=1)
    rng = np.random.default_rng(2)
    return {k: (v + rng.normal(0, 0.05, v.shape)).astype(np.float32) for k, v in state.items()}


def inputs(config: ViTConfig, scale: tuple[int, int] = (0, 0)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    (h, w), (ph, pw) = config.image_hw, config.patch_hw
    h, w = h + scale[0] * ph, w + scale[1] * pw
    grid = (h // ph) * (w // pw)
    return {
        "pixel_values": rng.normal(size=(3, config.num_channels, h, w)).astype(np.float32),
        "bool_masked_pos": rng.random((3, grid)) < 0.5,
        "labels": rng.integers(0, config.num_labels, 3),
    }


@functools.cache
def model(framework: str, config_name: str, head: str):
    config = make_config(config_name)
    m = build(framework, head, config)
    m.load_canonical_state_dict(weights(config_name, head))
    return m


@functools.cache
def outputs(framework: str, config_name: str, head: str, interpolated: bool) -> dict:
    config = make_config(config_name)
    data = inputs(config, (1, 2) if interpolated else (0, 0))
    kwargs = dict(output_hidden_states=True, output_attentions=True, interpolate_pos_encoding=interpolated)
    if head == "classification":
        kwargs["labels"] = data["labels"]
    if head == "mim":
        kwargs["bool_masked_pos"] = data["bool_masked_pos"]
    return run(framework, model(framework, config_name, head), data["pixel_values"], **kwargs)


def assert_close(a, b, what: str) -> None:
    if isinstance(a, tuple):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{what}[{i}]")
        return
    diff = float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0
    assert diff <= TOL, f"{what}: max |diff| = {diff:.2e}"


def ids(cases: list[tuple[str, str]]) -> list[str]:
    return [f"{name}-{head}" for name, head in cases]


@pytest.mark.parametrize("interpolated", [False, True], ids=["native", "interpolated"])
@pytest.mark.parametrize("config_name, head", VIT_CASES + FAMILY_CASES, ids=ids(VIT_CASES + FAMILY_CASES))
@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_outputs_agree(pair, config_name, head, interpolated):
    a, b = (outputs(fw, config_name, head, interpolated) for fw in pair)
    assert set(a) == set(b)
    for field in a:
        assert_close(a[field], b[field], field)


@functools.cache
def gradients(framework: str, config_name: str, head: str) -> tuple[float, dict[str, np.ndarray]]:
    data = inputs(make_config(config_name))
    if head in ("classification", "mim"):
        extra = {"labels": data["labels"]} if head == "classification" else {"bool_masked_pos": data["bool_masked_pos"]}
        return loss_and_grads(framework, model(framework, config_name, head), data["pixel_values"], **extra)
    return loss_and_grads(framework, model(framework, config_name, head), data["pixel_values"], sum_of_squares(OUTPUT_FIELDS))


@pytest.mark.parametrize("config_name, head", GRADIENT_CASES, ids=ids(GRADIENT_CASES))
@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_gradients_agree(pair, config_name, head):
    (loss_a, grads_a), (loss_b, grads_b) = (gradients(fw, config_name, head) for fw in pair)
    assert abs(loss_a - loss_b) <= TOL * max(1.0, abs(loss_a))
    names = set(weights(config_name, head))
    assert set(grads_a) <= names and set(grads_b) <= names
    if head != "mim":  # every parameter reaches the output; under the MIM head fc_norm does not
        assert set(grads_a) == set(grads_b) == names, sorted(names - set(grads_a) & set(grads_b))
    # A parameter that does not reach the loss (fc_norm under the MIM head) has no gradient in PyTorch.
    zero = {n: np.zeros_like(w) for n, w in weights(config_name, head).items()}
    grads_a, grads_b = {**zero, **grads_a}, {**zero, **grads_b}
    # Some gradients are zero in exact arithmetic (a key bias shifts every score alike); their round-off is
    # judged against the model's largest gradient instead of their own.
    floor = 1e-3 * max(float(np.max(np.abs(g))) for g in grads_a.values())
    for name in names:
        a, b = grads_a[name].astype(np.float64), grads_b[name].astype(np.float64)
        scale = max(float(np.max(np.abs(a))), floor)
        assert np.max(np.abs(a - b)) / scale <= GRAD_RTOL, name


@pytest.mark.parametrize("config_name, head", ROUND_TRIP_CASES, ids=ids(ROUND_TRIP_CASES))
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_canonical_round_trip_is_bit_exact(framework, config_name, head):
    state = weights(config_name, head)
    back = model(framework, config_name, head).canonical_state_dict()
    assert set(back) == set(state)
    for name, array in state.items():
        np.testing.assert_array_equal(np.asarray(back[name]), array, err_msg=name)
