"""PyTorch specifics: SDPA and eager attention, gradient checkpointing, dtypes, HF module names."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import HF, expected

torch = pytest.importorskip("torch")

from vit import ViTConfig, ViTForImageClassification, ViTForMaskedImageModeling, ViTModel  # noqa: E402


def classifier(**kwargs) -> ViTForImageClassification:
    return ViTForImageClassification.from_pretrained(HF / "classification" / "safetensors", **kwargs).eval()


def test_sdpa_is_default_and_eager_gives_the_same_numbers():
    e = expected("classification")
    pixels = torch.from_numpy(e["pixel_values"])
    sdpa, eager = classifier(), classifier(attn_implementation="eager")
    assert sdpa.config.attn_implementation == "sdpa" and eager.config.attn_implementation == "eager"
    with torch.inference_mode():
        assert torch.allclose(sdpa(pixels).logits, eager(pixels).logits, atol=1e-6)
        # Attention maps are returned under SDPA too (HF returns None there).
        maps = sdpa(pixels, output_attentions=True).attentions
    assert len(maps) == 2 and np.max(np.abs(torch.stack(maps).numpy() - e["attentions"])) <= 1e-5


def test_gradient_checkpointing_gives_the_same_gradients():
    e = expected("classification")
    pixels, labels = torch.from_numpy(e["pixel_values"]), torch.from_numpy(e["labels"])
    grads = []
    for checkpointing in (False, True):
        model = classifier().train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        model(pixels, labels=labels).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-7), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, "bfloat16"])
def test_torch_dtype(dtype):
    model = classifier(torch_dtype=dtype)
    want = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    assert model.dtype == want
    e = expected("classification")
    with torch.inference_mode():
        logits = model(torch.from_numpy(e["pixel_values"])).logits.float().numpy()
    assert np.max(np.abs(logits - e["logits"])) < 0.1


def test_module_names_are_hfs():
    model = classifier()
    names = dict(model.named_modules())
    for name in ("vit.encoder.layer.0.attention.attention.query", "vit.encoder.layer.1.attention.attention.value",
                 "vit.encoder.layer.0.attention.output.dense", "vit.encoder.layer.0.intermediate.dense", "classifier"):
        assert isinstance(names[name], torch.nn.Linear), name
    assert set(model.state_dict()) == set(model.canonical_state_dict())
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())


def test_matches_hf_transformers_when_installed():
    transformers = pytest.importorskip("transformers")
    e = expected("classification")
    theirs = transformers.ViTForImageClassification.from_pretrained(HF / "classification" / "safetensors").eval()
    ours = classifier()
    pixels = torch.from_numpy(e["pixel_values_interp"])
    with torch.inference_mode():
        a = theirs(pixels, interpolate_pos_encoding=True).logits
        b = ours(pixels, interpolate_pos_encoding=True).logits
    assert torch.allclose(a, b, atol=1e-6)


def test_hf_mim_crash_case_works():
    """HF's MIM head assumes a square grid; ours reconstructs a 2x3 grid with patch 8x16."""
    config = ViTConfig(image_size=[16, 48], patch_size=[8, 16], encoder_stride=[8, 16], hidden_size=16,
                       num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    model = ViTForMaskedImageModeling(config).eval()
    mask = torch.tensor([[True, False, True, False, True, False]])
    out = model(torch.randn(1, 3, 16, 48), bool_masked_pos=mask)
    assert out.reconstruction.shape == (1, 3, 16, 48) and out.logits is out.reconstruction


def test_manual_seed_makes_init_repeatable():
    config = ViTConfig(image_size=16, patch_size=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=16)
    torch.manual_seed(0)
    a = ViTModel(config).state_dict()
    torch.manual_seed(0)
    b = ViTModel(config).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_optimize_for_inference_gives_the_same_outputs():
    e = expected("classification")
    model = classifier()
    fast = model.optimize_for_inference()
    pixels = torch.from_numpy(e["pixel_values"])
    out = fast(pixels).logits
    assert not out.requires_grad and np.max(np.abs(out.numpy() - e["logits"])) <= 1e-5
    assert all(p.requires_grad for p in model.parameters())  # the original is untouched


def test_onednn_path_and_autograd_path_agree():
    """Inference multiplies with packed oneDNN weights; training with autograd uses plain matmuls."""
    e = expected("classification")
    model = classifier()
    pixels = torch.from_numpy(e["pixel_values"])
    with torch.no_grad():
        fast = model(pixels).logits
    slow = model(pixels).logits  # autograd on: the plain path
    assert slow.requires_grad and torch.allclose(fast, slow, atol=1e-5)
    with torch.no_grad():
        model.classifier.weight.mul_(2.0)  # a weight change invalidates the packed cache
        model.vit.encoder.layer[0].attention.attention.query.weight.mul_(2.0)
        again = model(pixels).logits
    assert torch.allclose(again, model(pixels).logits, atol=1e-5)
