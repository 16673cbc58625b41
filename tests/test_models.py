"""Behaviour that every framework shares, written once and run for pt, tf and flax."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import HF, expected
from frameworks import build, canonical_state, load, run

from vit import ViTConfig

PIXELS = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)


def reference_logits(config, state, pixels, **kwargs):
    from frameworks import build as build_model

    torch_model = build_model("pt", "classification", config)
    torch_model.load_canonical_state_dict(state)
    return run("pt", torch_model, pixels, **kwargs)


@pytest.mark.parametrize("head", ["base", "classification", "mim"])
def test_save_and_reload(framework, head, tiny_config, tmp_path):
    model = build(framework, head, tiny_config)
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["config.json", "model.safetensors"]
    again = load(framework, head, tmp_path)
    a, b = canonical_state(model), canonical_state(again)
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_same_seed_same_init_in_every_framework(framework, tiny_config):
    from vit.checkpoint import init_state

    model = build(framework, "classification", tiny_config)
    model.init_weights(seed=7)
    reference = init_state(tiny_config, model.parameter_specs(), seed=7)
    state = canonical_state(model)
    assert all(np.array_equal(state[k], reference[k]) for k in reference)
    assert model.num_parameters() == sum(v.size for v in reference.values())


def test_head_mask_matches_pytorch(framework):
    e = expected("classification")
    head_mask = np.array([[1, 0, 1, 1], [0.5, 1, 1, 0]], np.float32)
    model = load(framework, "classification", HF / "classification" / "safetensors")
    out = run(framework, model, e["pixel_values"], head_mask=head_mask, output_attentions=True)
    ref = run("pt", load("pt", "classification", HF / "classification" / "safetensors"), e["pixel_values"],
              head_mask=head_mask, output_attentions=True)
    assert np.max(np.abs(out["logits"] - ref["logits"])) <= 1e-5
    assert np.max(np.abs(out["logits"] - e["logits"])) > 1e-3  # the mask really changed something
    one_row = run(framework, model, e["pixel_values"], head_mask=np.array([1, 0, 1, 1], np.float32))["logits"]
    assert one_row.shape == (3, 10)


@pytest.mark.parametrize("problem, labels", [
    ("regression", np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]], np.float32)),
    ("multi_label_classification", np.array([[1, 0, 1], [0, 1, 1]], np.float32)),
    ("single_label_classification", np.array([2, 0])),
])
def test_losses_follow_problem_type(framework, tiny_config, problem, labels):
    config = tiny_config.copy(num_labels=3, problem_type=problem)
    model = build(framework, "classification", config)
    out = run(framework, model, PIXELS, labels=labels)
    logits = out["logits"].astype(np.float64)
    if problem == "regression":
        ref = np.mean((logits - labels) ** 2)
    elif problem == "multi_label_classification":
        ref = np.mean(np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits))))
    else:
        shifted = logits - logits.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        ref = -np.mean(log_probs[np.arange(2), labels])
    assert abs(float(out["loss"]) - ref) <= 1e-5


def test_single_label_regression(framework, tiny_config):
    model = build(framework, "classification", tiny_config.copy(num_labels=1))
    labels = np.array([0.3, -0.2], np.float32)
    out = run(framework, model, PIXELS, labels=labels)
    assert abs(float(out["loss"]) - np.mean((out["logits"][:, 0] - labels) ** 2)) <= 1e-6


def test_mim_on_a_non_square_grid_and_patch(framework):
    config = ViTConfig(image_size=[24, 40], patch_size=[8, 4], encoder_stride=[8, 4], hidden_size=16,
                       num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    model = build(framework, "mim", config)
    mask = np.zeros((2, 30), bool)
    mask[:, ::3] = True
    out = run(framework, model, np.ones((2, 3, 24, 40), np.float32), bool_masked_pos=mask)
    assert out["reconstruction"].shape == (2, 3, 24, 40) and np.isfinite(out["loss"])


@pytest.mark.parametrize("fmt, filename", [("tf", "tf_model.h5"), ("flax", "flax_model.msgpack"), ("pt", "pytorch_model.bin")])
def test_legacy_formats_on_request(framework, fmt, filename, tmp_path):
    if fmt == "pt":
        pytest.importorskip("torch")
    model = load(framework, "classification", HF / "classification" / "safetensors")
    model.save_pretrained(tmp_path, formats=("safetensors", fmt))
    assert (tmp_path / filename).is_file() and (tmp_path / "model.safetensors").is_file()
    e = expected("classification")
    (tmp_path / "model.safetensors").unlink()
    again = load(framework, "classification", tmp_path)
    assert np.max(np.abs(run(framework, again, e["pixel_values"])["logits"] - e["logits"])) <= 1e-5


def test_forward_features_and_pool(framework, tiny_config):
    from frameworks import to_framework, to_numpy

    config = tiny_config.copy(pooling="mean", use_fc_norm=True)
    model = build(framework, "base", config)
    features = model.forward_features(to_framework(framework, PIXELS))
    pooled = to_numpy(model.pool(features))
    assert to_numpy(features).shape == (2, 17, 32) and pooled.shape == (2, 32)
    out = run(framework, model, PIXELS)
    assert np.max(np.abs(to_numpy(features) - out["last_hidden_state"])) <= 1e-6


def _training_loss_grads_and_attentions(framework: str, model, pixels, labels):
    """One training-mode forward and backward; returns the loss gradients and the attention maps."""
    if framework == "pt":
        import torch

        model.train().zero_grad()
        out = model(torch.from_numpy(pixels), labels=torch.from_numpy(labels), output_attentions=True)
        out.loss.backward()
        return [p.grad.numpy().copy() for p in model.parameters()], [a.detach().numpy() for a in out.attentions]
    if framework == "tf":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            out = model(pixels, labels=labels, output_attentions=True, training=True)
        return [g.numpy() for g in tape.gradient(out.loss, model.trainable_variables)], [a.numpy() for a in out.attentions]
    import jax

    def loss(params):
        out = model(pixels, labels=labels, output_attentions=True, params=params, train=True)
        return out.loss, out.attentions

    grads, attentions = jax.grad(loss, has_aux=True)(model.params)
    return [np.asarray(g) for g in jax.tree_util.tree_leaves(grads)], [np.asarray(a) for a in attentions]


def test_gradient_checkpointing_follows_one_rule(framework, tiny_config):
    """Enabled and training, every framework recomputes the blocks, and still returns the attention maps."""
    labels = np.array([1, 2])
    model = build(framework, "classification", tiny_config)
    plain_grads, plain_maps = _training_loss_grads_and_attentions(framework, model, PIXELS, labels)
    model.gradient_checkpointing_enable()
    grads, maps = _training_loss_grads_and_attentions(framework, model, PIXELS, labels)
    assert len(maps) == tiny_config.num_hidden_layers
    for a, b in zip(plain_maps + plain_grads, maps + grads, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_hf_label_recipe_gives_integer_keys_and_a_matching_label2id(framework):
    """The HF docs' fine-tuning recipe: new labels on a checkpoint, the head re-initialised."""
    id2label = {"0": "cat", "1": "dog", "2": "bird"}
    label2id = {v: k for k, v in id2label.items()}
    model = load(framework, "classification", HF / "classification" / "safetensors", num_labels=3,
                 id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True)
    assert model.config.id2label == {0: "cat", 1: "dog", 2: "bird"}
    assert model.config.label2id == {"cat": 0, "dog": 1, "bird": 2}
    logits = run(framework, model, expected("classification")["pixel_values"])["logits"]
    assert logits.shape == (3, 3) and model.config.id2label[int(logits[0].argmax())] in id2label.values()


def test_num_labels_alone_replaces_stale_labels(tiny_config):
    config = tiny_config.copy(id2label={0: "a", 1: "b"}).copy(num_labels=3)
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert config.label2id == {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}


def test_config_output_flags_are_the_forward_defaults(framework, tiny_config):
    config = tiny_config.copy(output_attentions=True, output_hidden_states=True)
    model = build(framework, "classification", config)
    out = run(framework, model, PIXELS)
    assert len(out["attentions"]) == 2 and len(out["hidden_states"]) == 3
    assert "attentions" not in run(framework, model, PIXELS, output_attentions=False)
    assert "tuple" in run(framework, build(framework, "classification", tiny_config.copy(return_dict=False)), PIXELS)
    assert ViTConfig.from_dict(config.to_dict()).output_attentions is True


def test_save_pretrained_refuses_keywords_it_does_not_honour(framework, tiny_config, tmp_path):
    model = build(framework, "classification", tiny_config)
    with pytest.raises(TypeError, match="variant"):
        model.save_pretrained(tmp_path / "out", variant="fp16")
    with pytest.raises(NotImplementedError, match="upload_folder"):
        model.save_pretrained(tmp_path / "out", push_to_hub=True)
    assert not (tmp_path / "out").exists()
    model.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["config.json", "pytorch_model.bin"]
    model.save_pretrained(tmp_path / "none", is_main_process=False)
    assert not (tmp_path / "none").exists()


def test_save_pretrained_max_shard_size_writes_hf_shards_that_reload(framework, tiny_config, tmp_path):
    model = build(framework, "classification", tiny_config)
    model.save_pretrained(tmp_path, max_shard_size=20_000)
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").is_file()
    again = load(framework, "classification", tmp_path)
    a, b = canonical_state(model), canonical_state(again)
    assert all(np.array_equal(a[k], b[k]) for k in a)
