"""Every framework reproduces HF transformers 4.57.6's numbers from HF's files in every HF format."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import HF, expected
from frameworks import load, run

FORMATS = ("safetensors", "pytorch_bin", "tf_h5", "flax_msgpack")
TOL = 1e-5


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


@pytest.mark.parametrize("fmt", FORMATS)
def test_classification(framework, fmt):
    e = expected("classification")
    model = load(framework, "classification", HF / "classification" / fmt)
    out = run(framework, model, e["pixel_values"], labels=e["labels"], output_hidden_states=True, output_attentions=True)
    assert max_diff(out["logits"], e["logits"]) <= TOL
    assert max_diff(out["loss"], e["loss"]) <= TOL
    assert len(out["hidden_states"]) == 3 and len(out["attentions"]) == 2
    assert max_diff(np.stack(out["hidden_states"]), e["hidden_states"]) <= TOL
    assert max_diff(np.stack(out["attentions"]), e["attentions"]) <= TOL
    interp = run(framework, model, e["pixel_values_interp"], interpolate_pos_encoding=True)
    assert max_diff(interp["logits"], e["logits_interp"]) <= TOL


@pytest.mark.parametrize("fmt", FORMATS)
def test_base_model(framework, fmt):
    e = expected("base")
    model = load(framework, "base", HF / "base" / fmt)
    out = run(framework, model, e["pixel_values"])
    assert max_diff(out["last_hidden_state"], e["last_hidden_state"]) <= TOL
    assert max_diff(out["pooler_output"], e["pooler_output"]) <= TOL


@pytest.mark.parametrize("fmt", ("safetensors", "pytorch_bin"))
def test_masked_image_modeling(framework, fmt):
    e = expected("mim")
    model = load(framework, "mim", HF / "mim" / fmt)
    out = run(framework, model, e["pixel_values"], bool_masked_pos=e["bool_masked_pos"])
    assert max_diff(out["reconstruction"], e["reconstruction"]) <= TOL
    assert max_diff(out["loss"], e["loss"]) <= TOL


def test_return_dict_false_gives_the_same_tuple(framework):
    e = expected("classification")
    model = load(framework, "classification", HF / "classification" / "safetensors")
    out = run(framework, model, e["pixel_values"], labels=e["labels"], output_hidden_states=True,
              output_attentions=True, return_dict=False)["tuple"]
    loss, logits, hidden_states, attentions = out
    assert max_diff(logits, e["logits"]) <= TOL and max_diff(loss, e["loss"]) <= TOL
    assert max_diff(np.stack(hidden_states), e["hidden_states"]) <= TOL
    assert max_diff(np.stack(attentions), e["attentions"]) <= TOL


def test_head_checkpoint_loads_into_base_model_and_back(framework):
    """HF's rule: a `vit.`-prefixed head checkpoint loads into ViTModel, and a base one into a head."""
    e = expected("classification")
    base = load(framework, "base", HF / "classification" / "safetensors", add_pooling_layer=False)
    hidden = run(framework, base, e["pixel_values"], output_hidden_states=True)["hidden_states"]
    assert max_diff(np.stack(hidden), e["hidden_states"]) <= TOL
    with pytest.warns(UserWarning, match="classifier"):
        head = load(framework, "classification", HF / "base" / "safetensors")
    base_e = expected("base")
    hidden = run(framework, head, base_e["pixel_values"], output_hidden_states=True)["hidden_states"]
    assert max_diff(hidden[-1][:, 0], run(framework, load(framework, "base", HF / "base" / "safetensors"),
                                          base_e["pixel_values"], output_hidden_states=True)["hidden_states"][-1][:, 0]) <= TOL
