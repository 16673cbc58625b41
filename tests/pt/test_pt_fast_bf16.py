"""optimize_for_inference() of a bfloat16 model: bf16 outputs that match the bf16 model to bf16 round-off, on
CPUs with and without bf16 instructions (without them, the GEMMs run in float32 on exactly widened bf16 values)."""

from __future__ import annotations

import pytest
from conftest import BF16_VS_FP32_REL

torch = pytest.importorskip("torch")

from vit import ViTConfig, ViTForImageClassification  # noqa: E402
from vit.pt.fast import PackedLinear, native_bf16_gemm  # noqa: E402

# Max |logit diff| / max |fp32 logit| between the bf16 copy and the bf16 model (both round every layer's output
# to bf16; the copy applies the fused GELU before rounding). Measured 3.3e-3 (gelu, fused), 0 (quick_gelu).
BF16_FAST_VS_EAGER_REL = 1e-2


def bf16_model_and_input(hidden_act: str = "gelu"):
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                       intermediate_size=128, num_labels=10, hidden_act=hidden_act)
    fp32 = ViTForImageClassification(config).eval()
    for p in fp32.parameters():  # weights large enough that bf16 rounding shows in the logits
        p.data.normal_(0, 0.2)
    bf16 = ViTForImageClassification(config, torch_dtype=torch.bfloat16).eval()
    bf16.load_state_dict(fp32.state_dict())
    return fp32, bf16, torch.randn(4, 3, 32, 32)


@pytest.mark.parametrize("hidden_act", ["gelu", "quick_gelu"])  # fused into the GEMM, and not
def test_bf16_copy_matches_the_bf16_model(hidden_act):
    fp32, bf16, x = bf16_model_and_input(hidden_act)
    fast = bf16.optimize_for_inference()
    with torch.no_grad():
        reference, eager = fp32(x).logits, bf16(x).logits
        out = fast(x).logits
    assert out.dtype == torch.bfloat16
    scale = float(reference.abs().max())
    assert float((out.float() - eager.float()).abs().max()) / scale <= BF16_FAST_VS_EAGER_REL
    # Still bf16 arithmetic, not float32 in disguise: the copy is as far from float32 as the bf16 model is.
    eager_error = float((eager.float() - reference).abs().max())
    fast_error = float((out.float() - reference).abs().max())
    assert 0.25 * eager_error <= fast_error <= 4 * eager_error


@pytest.mark.parametrize("hidden_act", ["gelu", "quick_gelu"])
def test_bf16_copy_at_an_interpolated_size_matches_the_bf16_model_there(hidden_act):
    """At a size other than the config's (a 6x5 grid, not 4x4), with interpolate_pos_encoding=True, the copy resizes
    the position embeddings as the bf16 model does, and as float32 does to bf16 accuracy.

    The logits of this random model hardly depend on the positions, so the embedding output (hidden_states[0], where
    the resize acts) is compared too. Measured: logits 3.5e-3 from the bf16 model (gelu; 0 for quick_gelu) and
    4.9e-3 from float32; embeddings 0 and 5.8e-3. A copy that resized bilinearly would be 1.6e-2 off, positions
    tiled from the config's grid 8.5e-2, a bf16-only resize with the grid's axes swapped 7.9e-2 from float32."""
    fp32, bf16, _ = bf16_model_and_input(hidden_act)
    fast = bf16.optimize_for_inference()
    x = torch.randn(4, 3, 48, 40)
    with torch.no_grad():
        reference = fp32(x, interpolate_pos_encoding=True, output_hidden_states=True)
        eager = bf16(x.to(torch.bfloat16), interpolate_pos_encoding=True, output_hidden_states=True)
        out = fast(x.to(torch.bfloat16), interpolate_pos_encoding=True, output_hidden_states=True)
    assert out.logits.dtype == torch.bfloat16 and out.logits.shape == reference.logits.shape
    assert out.hidden_states[0].shape == (4, 1 + 6 * 5, 64)
    for name, index in (("logits", None), ("embeddings", 0)):
        ours, bf16_model, fp32_model = (o.logits if index is None else o.hidden_states[index]
                                        for o in (out, eager, reference))
        scale = float(fp32_model.abs().max())
        assert float((ours.float() - bf16_model.float()).abs().max()) / scale <= BF16_FAST_VS_EAGER_REL, name
        assert float((ours.float() - fp32_model).abs().max()) / scale <= BF16_VS_FP32_REL, name


def test_bf16_linear_is_a_bf16_gemm():
    """One layer against its definition: bf16 inputs and weights, products and sums in float32, rounded to bf16."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 32).to(torch.bfloat16)
    packed = PackedLinear(linear)
    x = torch.randn(5, 48).to(torch.bfloat16)
    definition = (x.float() @ linear.weight.float().T + linear.bias.float()).to(torch.bfloat16)
    out = packed(x)
    assert out.dtype == torch.bfloat16 and packed.weight.dtype == torch.bfloat16
    assert packed.gemm_dtype == (torch.bfloat16 if native_bf16_gemm() else torch.float32)
    # Equal up to float32 summation order, i.e. at most one bf16 rounding step apart.
    torch.testing.assert_close(out.float(), definition.float(), rtol=2**-7, atol=1e-6)


def test_bf16_copy_is_frozen_saves_in_bf16_and_takes_bf16_only():
    _, bf16, x = bf16_model_and_input()
    fast = bf16.optimize_for_inference()
    with torch.no_grad():
        before = fast(x).logits.clone()
        for p in bf16.parameters():
            p.data.mul_(0)
        torch.testing.assert_close(fast(x).logits, before, atol=0, rtol=0)
    assert {v.dtype for v in fast.state_dict().values()} == {torch.bfloat16}
    assert set(fast.state_dict()) == set(bf16.state_dict())
    with pytest.raises(ValueError, match="bfloat16 CPU inputs"):
        fast.vit.encoder.layer[0].attention.attention.query(torch.zeros(1, 64))


def test_bf16_patch_embedding_is_a_bf16_convolution():
    """The patch convolution of the copy computes what the bf16 model's does, whatever kernel runs it, and refuses
    float32 inputs with the copy's own error on every CPU (natively bf16 or not)."""
    _, bf16, x = bf16_model_and_input()
    fast = bf16.optimize_for_inference()
    eager_conv = bf16.vit.embeddings.patch_embeddings.projection
    fast_conv = fast.vit.embeddings.patch_embeddings.projection
    pixels = x.to(torch.bfloat16)
    with torch.no_grad():
        torch.testing.assert_close(fast_conv(pixels).float(), eager_conv(pixels).float(), rtol=2**-7, atol=1e-6)
    assert fast_conv.weight.dtype == torch.bfloat16
    assert fast_conv.gemm_dtype == (torch.bfloat16 if native_bf16_gemm() else torch.float32)
    with pytest.raises(ValueError, match="bfloat16 CPU inputs"):
        fast_conv(x)
