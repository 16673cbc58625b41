"""`optimize_for_inference()`: a frozen copy of a PyTorch model for float32 or bfloat16 CPU inference.

The default models follow `nn.Module` semantics exactly: every submodule is called, every hook fires and every
weight is read when it is used, so in-place edits (EMA, pruning, `.data` surgery) take effect on the next call.
This module is the one place that trades those semantics for speed, and only when the user asks for it.

The contract of the copy that `optimize_for_inference(model)` returns:
- It is a deep copy in eval mode, with autograd off (`requires_grad=False`, forward under `inference_mode`).
- Each `nn.Linear` becomes a `PackedLinear` whose weight was reordered for oneDNN once, when the copy was made,
  and each `nn.Conv2d` a `FrozenConv2d` holding its own copy of the weight. The weights are frozen: editing them
  (or the original model's) does not change the copy's outputs. Edit the original model and call
  `optimize_for_inference()` again.
- The MLP's bias and GELU/ReLU are fused into its first matmul, so a hook on `intermediate_act_fn` of the copy
  does not fire. Hooks on the `PackedLinear` modules do fire.
- It accepts CPU inputs in the model's dtype only. A float32 copy gives the original model's outputs to float32
  round-off; a bfloat16 copy gives them to bfloat16 round-off (`BF16_FAST_VS_EAGER_REL` in tests/pt/test_pt_fast_bf16.py).

bfloat16: a bf16 matmul multiplies bf16 numbers (exactly, in float32) and accumulates in float32. On CPUs with
bf16 instructions (AVX512-BF16, AMX) oneDNN does that natively on the packed bf16 weight. CPUs without them
(AVX2 only, such as AMD Zen 3) have no fast bf16 GEMM: PyTorch's fallback measured 30x slower than float32 there,
so the copy does the same arithmetic as float32 GEMMs on bf16 values widened once (exact), then rounds the
result to bf16. That brings bf16 to float32's speed, not past it: without bf16 hardware there is nothing faster.

PyTorch's own CPU matmul calls MKL, which on some AMD CPUs runs well below oneDNN; how much the copy gains
therefore depends on the CPU (`make bench` measures it on the machine at hand).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

# Activations that oneDNN can apply inside the matmul: config name -> (oneDNN op, algorithm).
_FUSABLE = {"gelu": ("gelu", "none"), "gelu_pytorch_tanh": ("gelu", "tanh"), "gelu_new": ("gelu", "tanh"),
            "relu": ("relu", "")}


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def native_bf16_gemm() -> bool:
    """Whether oneDNN has bf16 matmul instructions on this CPU (AVX512-BF16 / AMX, or AVX512-BW emulation)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _gemm_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a frozen layer multiplies in: its own, except bf16 on a CPU without bf16 GEMMs (widened, exact)."""
    return dtype if dtype == torch.float32 or native_bf16_gemm() else torch.float32


def _check_input(x: torch.Tensor, dtype: torch.dtype) -> None:
    if x.device.type != "cpu" or x.dtype != dtype:
        raise ValueError(f"An optimize_for_inference() copy of a {dtype} model takes {dtype} CPU inputs, "
                         f"got {x.dtype} on {x.device}; use the original model for other devices and dtypes.")


class PackedLinear(nn.Module):
    """A frozen `nn.Linear` whose weight is pre-packed for oneDNN, optionally with a fused activation.

    `weight` and `bias` stay in the state dict under their usual names and dtype, so the copy still saves; the
    packed weight (and the GEMM's bias) are non-persistent buffers computed once from them. A bf16 layer on a
    CPU without bf16 GEMMs packs the exactly widened float32 weight (see the module docstring).
    """

    def __init__(self, linear: nn.Linear, activation: str | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(linear.weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False) if linear.bias is not None else None
        self.dtype = self.weight.dtype
        self.gemm_dtype = _gemm_dtype(self.dtype)
        self.register_buffer("packed_weight",
                             torch.ops.mkldnn._reorder_linear_weight(self.weight.detach().to(self.gemm_dtype)),
                             persistent=False)
        self.register_buffer("gemm_bias", None if self.bias is None else self.bias.detach().to(self.gemm_dtype),
                             persistent=False)
        self.op, self.algorithm = _FUSABLE[activation] if activation else ("none", "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.dtype)
        out = torch.ops.mkldnn._linear_pointwise(x.to(self.gemm_dtype), self.packed_weight, self.gemm_bias, self.op,
                                                 [], self.algorithm)
        return out.to(self.dtype)

    def extra_repr(self) -> str:
        fused = f", fused={self.op}" if self.op != "none" else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, packed{fused}"


class FrozenConv2d(nn.Module):
    """A frozen `nn.Conv2d` that takes inputs in the model's dtype only, like `PackedLinear`.

    A bf16 convolution runs natively where oneDNN has bf16 instructions. Elsewhere it is computed as float32 on
    exactly widened values and rounded to bf16, because PyTorch's bf16 convolution there takes its slow reference
    path (measured 12% of a ViT-S/16 forward, for a layer with 0.5% of the FLOPs).
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False) if conv.bias is not None else None
        self.dtype = self.weight.dtype
        self.gemm_dtype = _gemm_dtype(self.dtype)
        # Copies, even in the layer's own dtype: an in-place edit of `weight` must not reach the frozen product.
        self.register_buffer("gemm_weight", self.weight.detach().to(self.gemm_dtype, copy=True), persistent=False)
        self.register_buffer("gemm_bias", None if self.bias is None else
                             self.bias.detach().to(self.gemm_dtype, copy=True), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.dtype)
        out = F.conv2d(x.to(self.gemm_dtype), self.gemm_weight, self.gemm_bias, self.stride, self.padding,
                       self.dilation, self.groups)
        return out.to(self.dtype)


def optimize_for_inference(model: nn.Module) -> nn.Module:
    """Return a frozen, oneDNN-packed copy of a float32 or bfloat16 `model` (see the module docstring)."""
    from .modeling import ViTIntermediate

    if not onednn_available():
        raise RuntimeError("optimize_for_inference needs PyTorch built with oneDNN (mkldnn); use the model as it is.")
    dtypes = {p.dtype for p in model.parameters()}
    devices = {p.device.type for p in model.parameters()}
    if len(dtypes) != 1 or not dtypes <= {torch.float32, torch.bfloat16} or devices != {"cpu"}:
        raise ValueError(f"optimize_for_inference packs float32 or bfloat16 CPU weights; this model has "
                         f"{sorted(map(str, dtypes))} on {sorted(devices)}. Use the model as it is, or torch.compile.")
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    for module in list(frozen.modules()):
        if isinstance(module, ViTIntermediate) and module.activation_name in _FUSABLE:
            module.dense = PackedLinear(module.dense, module.activation_name)
            module.intermediate_act_fn = nn.Identity()
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, name, PackedLinear(child))
            elif type(child) is nn.Conv2d:
                setattr(module, name, FrozenConv2d(child))
    frozen.forward = torch.inference_mode()(frozen.forward)
    return frozen
