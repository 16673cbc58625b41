"""Round trips through every foreign layout are bit-exact, for several configs."""

from __future__ import annotations

import numpy as np
import pytest

from vit.checkpoint import fit_state_dict, read_canonical, save_checkpoint
from vit.convert import from_jax, from_timm, to_jax, to_timm

from .test_equivalence import CONFIGS, make_config, weights

TIMM_CONFIGS = [c for c in CONFIGS if c not in ("mean", "pre_logits_tanh_gelu")]  # timm has no mean-without-fc_norm marker


def assert_same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("config_name", TIMM_CONFIGS)
def test_timm(config_name):
    config, state = make_config(config_name), weights(config_name, "classification")
    back = from_timm(to_timm(state, config), num_attention_heads=config.num_attention_heads,
                     image_size=config.image_size if config.grid_hw[0] != config.grid_hw[1] else None,
                     layer_norm_eps=config.layer_norm_eps, hidden_act=config.hidden_act, pooling=config.pooling)
    assert_same(back.state, state)


@pytest.mark.parametrize("numbering", ["old", "new"])
@pytest.mark.parametrize("config_name", [c for c in CONFIGS if c != "mean_fc_norm"])  # the original has no fc_norm
def test_npz(config_name, numbering, tmp_path):
    config, state = make_config(config_name), weights(config_name, "classification")
    np.savez(tmp_path / "model.npz", **to_jax(state, config, numbering))
    back = from_jax(dict(np.load(tmp_path / "model.npz")),
                    image_size=config.image_size if config.grid_hw[0] != config.grid_hw[1] else None)
    assert_same(back.state, state)


@pytest.mark.parametrize("fmt, filename", [("tf", "tf_model.h5"), ("flax", "flax_model.msgpack")])
@pytest.mark.parametrize("head", ["base", "classification", "mim"])
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_hf_legacy_files(config_name, head, fmt, filename, tmp_path):
    config, state = make_config(config_name), weights(config_name, head)
    save_checkpoint(str(tmp_path), config, state, head, (fmt,))
    # HF's TFViTModel keeps its backbone under "vit/"; fitting to the head maps the names, as loading does.
    fitted, report = fit_state_dict(read_canonical(str(tmp_path / filename), config), config, head)
    assert not report.initialised and not report.dropped
    assert_same(fitted, state)
