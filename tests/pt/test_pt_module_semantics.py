"""The PyTorch models obey nn.Module semantics: every submodule is called, hooks fire, in-place edits are used.

Regression tests for issue 11 item 1: a cached, packed copy of each weight made `.data` edits invisible under
`no_grad`, and the fused QKV projection bypassed the Linear modules, so their hooks never fired.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
prune = pytest.importorskip("torch.nn.utils.prune")

from vit import ViTConfig, ViTForImageClassification, ViTModel  # noqa: E402
from vit.pt.fast import FrozenConv2d, PackedLinear  # noqa: E402


def tiny(**overrides) -> ViTConfig:
    return ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, num_labels=5, **overrides)


def model_and_input(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return ViTForImageClassification(tiny(**overrides)).eval(), torch.randn(2, 3, 32, 32)


def rebuilt(model: ViTForImageClassification) -> ViTForImageClassification:
    """A fresh model holding `model`'s current weights: what a correct model must compute."""
    fresh = ViTForImageClassification(model.config).eval()
    fresh.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    return fresh


@pytest.mark.parametrize("edit", ["ema", "zero_encoder"])
def test_in_place_edits_through_data_are_used_under_no_grad(edit):
    model, x = model_and_input()
    with torch.no_grad():
        before = model(x).logits
        if edit == "ema":
            torch.manual_seed(1)
            target = ViTForImageClassification(model.config)
            for p, q in zip(model.parameters(), target.parameters(), strict=True):
                p.data.mul_(0.5).add_(q.data, alpha=0.5)
        else:
            for p in model.vit.encoder.parameters():
                p.data.mul_(0)
        after = model(x).logits
        reference = rebuilt(model)(x).logits
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, reference, atol=1e-6, rtol=0)


def test_pruning_gives_the_same_outputs_with_and_without_grad():
    model, x = model_and_input()
    for layer in model.vit.encoder.layer:
        prune.l1_unstructured(layer.intermediate.dense, "weight", amount=0.5)
        prune.l1_unstructured(layer.attention.attention.query, "weight", amount=0.5)
    with torch.no_grad():
        no_grad = model(x).logits
    with_grad = model(x).logits.detach()
    torch.testing.assert_close(no_grad, with_grad, atol=1e-6, rtol=0)


@pytest.mark.parametrize("grad", [False, True])
def test_every_submodule_is_called_and_its_hooks_fire(grad):
    model, x = model_and_input()
    called, pre_called = set(), set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList):
            continue  # a container, iterated rather than called, as in HF
        module.register_forward_hook(lambda m, args, out, name=name: called.add(name))
        module.register_forward_pre_hook(lambda m, args, name=name: pre_called.add(name))
    with torch.set_grad_enabled(grad):
        model(x)
    expected = {n for n, m in model.named_modules() if not isinstance(m, torch.nn.ModuleList)}
    assert called == expected
    assert pre_called == expected
    assert {"vit.encoder.layer.0.attention.attention.query", "vit.encoder.layer.1.attention.attention.value",
            "vit.encoder.layer.0.intermediate.intermediate_act_fn"} <= called


def test_a_hook_that_edits_an_output_changes_the_result():
    model, x = model_and_input()
    value = model.vit.encoder.layer[0].attention.attention.value
    with torch.no_grad():
        before = model(x).logits
        handle = value.register_forward_hook(lambda m, args, out: torch.zeros_like(out))
        hooked = model(x).logits
        handle.remove()
        value.weight.zero_()
        value.bias.zero_()
        reference = model(x).logits
    assert not torch.allclose(before, hooked)
    torch.testing.assert_close(hooked, reference, atol=1e-6, rtol=0)


def test_optimize_for_inference_is_a_frozen_copy():
    model, x = model_and_input()
    fast = model.optimize_for_inference()
    with torch.no_grad():
        reference = model(x).logits
        torch.testing.assert_close(fast(x).logits, reference, atol=1e-5, rtol=0)
        for p in model.parameters():
            p.data.mul_(0)  # the copy is frozen: the original's edits do not reach it
        torch.testing.assert_close(fast(x).logits, reference, atol=1e-5, rtol=0)
        for layer in fast.modules():  # nor do edits of the frozen layers' own weights (the convolution's were shared)
            if isinstance(layer, (PackedLinear, FrozenConv2d)):
                layer.weight.data.mul_(0)
        torch.testing.assert_close(fast(x).logits, reference, atol=1e-5, rtol=0)
    assert not fast.training and not any(p.requires_grad for p in fast.parameters())
    assert set(fast.state_dict()) == set(model.state_dict())
    with pytest.raises(ValueError, match="float32 CPU"):
        fast.vit.encoder.layer[0].attention.attention.query(torch.zeros(1, 32, dtype=torch.bfloat16))


def test_optimize_for_inference_refuses_what_it_cannot_pack():
    torch.manual_seed(0)
    model = ViTModel(tiny()).to(torch.float16)  # bfloat16 packs since issue 15 (tests/pt/test_pt_fast_bf16.py)
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        model.optimize_for_inference()
