"""`quantize()`: an int8 copy of a PyTorch ViT for CPU inference, dynamic or static.

`mode` says where the activations' int8 scales come from; `flow` says which PyTorch machinery makes the copy:

- `mode="dynamic"` quantises activations per batch at run time; no calibration data is needed. Two flows:
  - `flow="eager"` (the default for dynamic): every `nn.Linear` becomes PyTorch's dynamically quantised linear
    (fbgemm on x86): int8 weights with one scale per output channel, int32 accumulation. The copy is still the
    same model class, returns the same output dataclass, and its other modules (LayerNorm, softmax, GELU, the
    patch convolution) run in float32 as before. It is made at once and runs in eager mode.
  - `flow="pt2e"`: the PyTorch 2 export quantisation flow below, with `X86InductorQuantizer`'s dynamic
    configuration. Once compiled it runs oneDNN's int8 GEMMs with the activations' scales computed per call; on a
    CPU with AMX it is much faster than the eager flow (`make bench`).
- `mode="static"` (the pt2e flow only): activations get fixed int8 scales, calibrated on the `calibration`
  batches you pass.

The pt2e flow is torchao's `prepare_pt2e`/`convert_pt2e` with `X86InductorQuantizer`: the model is exported
with `torch.export` and quantised as a graph. With `compile=True` (the default) the graph is lowered by
`torch.compile` (inductor) to oneDNN int8 kernels, which takes from seconds to minutes on a small CPU and
happens on the first call; with `compile=False` it runs PyTorch's reference quantise/dequantise ops (the same
int8 numbers, no speed-up). It needs `pip install torchao`.

Both copies are frozen: the weights are quantised once, when the copy is made; edit the original and call
`quantize()` again. Which route is faster depends on the CPU's int8 instructions: `make bench` measures it
(on an AVX2-only CPU the dynamic route is the faster one; see `bench_low_precision`).

Example:
    >>> import torch
    >>> from vit import ViTConfig, ViTForImageClassification
    >>> from vit.pt.quantize import quantize
    >>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
    ...                    num_attention_heads=4, intermediate_size=64, num_labels=3)
    >>> model = ViTForImageClassification(config).eval()
    >>> int8 = quantize(model, mode="dynamic")
    >>> int8(torch.zeros(2, 3, 32, 32)).logits.shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

MODES = ("dynamic", "static")
FLOWS = ("eager", "pt2e")


def _check_model(model: nn.Module) -> None:
    dtypes = {p.dtype for p in model.parameters()}
    devices = {p.device.type for p in model.parameters()}
    if dtypes != {torch.float32} or devices != {"cpu"}:
        raise ValueError(f"quantize() takes a float32 model on the CPU; this one has {sorted(map(str, dtypes))} on "
                         f"{sorted(devices)}. Load it with dtype=torch.float32 and keep it on the CPU.")


def _as_batches(calibration: Iterable) -> list[torch.Tensor]:
    """The calibration batches as float32 tensors, checked: at least one, each (batch, channels, H, W)."""
    if calibration is None:
        raise ValueError('mode="static" fixes the activations\' int8 scales from data: pass calibration=, an iterable '
                         "of pixel_values batches (a few hundred representative images, from ViTImageProcessor).")
    if isinstance(calibration, (torch.Tensor, np.ndarray)):
        calibration = [calibration]
    batches = []
    for batch in calibration:
        tensor = torch.as_tensor(np.asarray(batch) if not isinstance(batch, torch.Tensor) else batch)
        if tensor.dim() != 4 or not torch.is_floating_point(tensor):
            raise ValueError(f"Each calibration batch must be floating-point pixel_values (batch, channels, height, "
                             f"width), got {tuple(tensor.shape)} {tensor.dtype}; use ViTImageProcessor.")
        batches.append(tensor.float())
    if not batches:
        raise ValueError("calibration= holds no batches; pass at least one batch of pixel_values.")
    return batches


def quantize(model: nn.Module, mode: str = "dynamic", calibration: Iterable | None = None,
             compile: bool = True, flow: str | None = None) -> nn.Module:
    """An int8 copy of `model` for CPU inference (see the module docstring); `model` is unchanged.

    `calibration` (static only) is an iterable of pixel_values batches; `flow` is "eager" (dynamic only, its
    default) or "pt2e" (static's only flow); `compile` (pt2e only) lowers the quantised graph with `torch.compile`.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: quantize() offers {MODES}.")
    flow = flow or ("eager" if mode == "dynamic" else "pt2e")
    if flow not in FLOWS:
        raise ValueError(f"flow={flow!r}: quantize() offers {FLOWS}.")
    if mode == "static" and flow == "eager":
        raise ValueError('mode="static" runs the PyTorch 2 export flow only: leave flow= out, or pass flow="pt2e".')
    _check_model(model)
    if mode == "static":
        return _quantize_pt2e(model, _as_batches(calibration), compile, dynamic=False)
    if calibration is not None:
        raise ValueError('mode="dynamic" quantises activations per batch at run time and takes no calibration=; '
                         'use mode="static" to calibrate.')
    if flow == "eager":
        return _quantize_dynamic(model)
    # An example input for torch.export: two images, so that the batch axis is not specialised to one.
    example = torch.zeros(2, model.config.num_channels, *model.config.image_hw)
    return _quantize_pt2e(model, [example], compile, dynamic=True)


def _quantize_dynamic(model: nn.Module) -> nn.Module:
    # PyTorch's quantized engine is process-wide; the default ("x86": fbgemm for dynamic linears) is left alone.
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    with warnings.catch_warnings():
        # torch.ao's eager quantisation warns that it is deprecated in favour of torchao, whose int8 CPU matmul
        # (torch._int_mm) measured 30x slower than fbgemm's on an AVX2 CPU; the warning is about our choice.
        warnings.filterwarnings("ignore", message=".*(torch.ao.quantization is deprecated|quantize_per_tensor).*")
        per_channel = {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}
        quantized = torch.ao.quantization.quantize_dynamic(frozen, per_channel, dtype=torch.qint8, inplace=True)
    quantized.forward = torch.inference_mode()(quantized.forward)
    return quantized


class _Exported(nn.Module):
    """Runs an exported, quantised graph behind the original model's call: same inputs, same output class.

    A compiled graph is (re)compiled on the call that first sees a new input shape, so every call runs with
    inductor's freezing on: only then does inductor fold the int8 weights into prepacked oneDNN int8 GEMMs
    (AMX / VNNI). Without it the same graph dequantises every weight and multiplies in float32, measured at
    0.97x float32's speed against 3.5x with it (ViT-S/16, batch 8, an AMX CPU). `torch.compile`'s
    `options={"freezing": True}` does not reach that pass (torch 2.13), hence the config patch.
    """

    def __init__(self, graph: nn.Module, original: nn.Module, compiled: bool) -> None:
        super().__init__()
        self.graph = graph
        self.config = original.config
        self.check_inputs = original._check_inputs
        self.compiled = compiled

    def forward(self, pixel_values) -> object:
        size = tuple(np.shape(pixel_values)[-2:])
        if size != tuple(self.config.image_hw):
            # The model's own check would suggest interpolate_pos_encoding=True, which an exported graph cannot take.
            raise ValueError(f"This int8 copy was exported for {self.config.image_hw[0]}x{self.config.image_hw[1]} "
                             f"images and got {size[0]}x{size[1]}: resize the images (ViTImageProcessor), or quantize a "
                             "model whose config has that image_size.")
        pixel_values, *_ = self.check_inputs(pixel_values, None, None, False)
        freezing = torch._inductor.config.patch(freezing=True) if self.compiled else contextlib.nullcontext()
        with torch.inference_mode(), freezing:
            return self.graph(pixel_values)


def _quantize_pt2e(model: nn.Module, batches: list[torch.Tensor], compile: bool, dynamic: bool) -> nn.Module:
    """The PyTorch 2 export flow; `batches` calibrate static scales (dynamic: an example input, which sets none)."""
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    except ImportError as err:
        raise ImportError('quantize(mode="static") and flow="pt2e" use the PyTorch 2 export quantisation flow from '
                          "torchao: pip install torchao (or pip install 'vit[quantize]').") from err
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    example = batches[0]
    # Any batch size: calibration batches and later calls need not match the first batch.
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        graph = torch.export.export(frozen, (example,), dynamic_shapes=({0: batch},)).module()
        quantizer = x86.X86InductorQuantizer()
        quantizer.set_global(x86.get_default_x86_inductor_quantization_config(is_dynamic=dynamic))
        prepared = prepare_pt2e(graph, quantizer)
        for pixels in batches:
            prepared(pixels)
        converted = convert_pt2e(prepared)
    if compile:
        converted = torch.compile(converted)
    return _Exported(converted, frozen, compile)
