"""The Vision Transformer in PyTorch, with Hugging Face's module names, so `state_dict()` is the canonical checkpoint.

Layering follows timm: patch embedding -> blocks -> norm -> pool -> head, with `forward_features` and
`forward_head`. `src/vit/tf/modeling.py` and `src/vit/flax/modeling.py` hold the same classes in the same
order; every numeric constant comes from the config.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import ViTConfig, check_model_family
from ..errors import ConfigError
from ..inputs import check_head_mask, check_mask, check_mim_stride, check_pixel_values, resolve_problem_type
from ..outputs import (
    BaseModelOutputWithPooling,
    ImageClassifierOutput,
    ImageClassifierWithTeacherOutput,
    ImageEmbeddingsOutput,
    MaskedImageModelingOutput,
    ModelOutput,
)
from ..params import classifier_width
from ..pretrained import PretrainedMixin, dtype_name, init_is_skipped, skip_init
from ..resize import resize_matrix


def _register_output_pytrees() -> None:
    """Outputs are pytrees for torch.export and torch.compile (their fields are the children), as HF's are."""
    for output_class in ModelOutput.__subclasses__():
        if output_class not in torch.utils._pytree.SUPPORTED_NODES:
            torch.utils._pytree.register_dataclass(output_class, serialized_type_name=f"vit.outputs.{output_class.__name__}")


_register_output_pytrees()


class QuickGELU(nn.Module):
    """CLIP's GELU approximation, x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


# Activations are modules, as in HF, so that hooks can see them.
ACTIVATIONS = {
    "gelu": nn.GELU,
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "quick_gelu": QuickGELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "tanh": nn.Tanh,
}


def resize_positions(pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int],
                     method: str = "bicubic") -> torch.Tensor:
    """Bicubic resize of a (1, H*W, D) grid as torch's `interpolate` does, via the shared matrices."""
    mh = torch.tensor(resize_matrix(old_grid[0], new_grid[0], method), dtype=pos.dtype, device=pos.device)
    mw = torch.tensor(resize_matrix(old_grid[1], new_grid[1], method), dtype=pos.dtype, device=pos.device)
    grid = pos.reshape(old_grid[0], old_grid[1], -1)
    grid = torch.einsum("ah,hwd->awd", mh, grid)
    grid = torch.einsum("bw,awd->abd", mw, grid)
    return grid.reshape(1, new_grid[0] * new_grid[1], -1)


class ViTPatchEmbeddings(nn.Module):
    """Cuts the image into patches and projects each to hidden_size (a strided convolution)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_hw, stride=config.patch_hw,
                                    bias=config.patch_embedding_bias)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


class ViTEmbeddings(nn.Module):
    """Patch embeddings, the optional mask token, the prefix tokens and the position embeddings.

    The sequence is [class, distillation, registers, patches]. Position embeddings cover the class and
    distillation tokens (not with `no_embed_class`) and the patches, never the registers (DINOv2's layout).
    """

    def __init__(self, config: ViTConfig, use_mask_token: bool = False) -> None:
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if config.class_token else None
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, d)) if config.distillation_token else None
        self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, d)) if config.num_register_tokens else None
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d)) if use_mask_token else None
        self.patch_embeddings = ViTPatchEmbeddings(config)
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_positions, d))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def interpolate_pos_encoding(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position embeddings for a patch grid, resized (HF's numbers) when it is not the config's."""
        if grid == self.config.grid_hw:
            return self.position_embeddings
        prefix = self.config.num_position_prefix_tokens
        patches = resize_positions(self.position_embeddings[:, prefix:], self.config.grid_hw, grid,
                                   self.config.position_interpolation)
        return torch.cat([self.position_embeddings[:, :prefix], patches], dim=1)

    def forward(self, pixel_values: torch.Tensor, grid: tuple[int, int],
                bool_masked_pos: torch.Tensor | None = None) -> torch.Tensor:
        embeddings = self.patch_embeddings(pixel_values)
        if bool_masked_pos is not None:
            mask = bool_masked_pos.unsqueeze(-1).type_as(embeddings)
            embeddings = embeddings * (1.0 - mask) + self.mask_token.expand_as(embeddings) * mask
        batch = embeddings.shape[0]
        tokens = [t.expand(batch, -1, -1) for t in (self.cls_token, self.distillation_token) if t is not None]
        positions = self.interpolate_pos_encoding(grid)
        if self.config.no_embed_class:
            embeddings = torch.cat([*tokens, embeddings + positions], dim=1)
        else:
            embeddings = torch.cat([*tokens, embeddings], dim=1) + positions
        if self.register_tokens is not None:
            # Registers go after the class and distillation tokens, without position embeddings.
            split = len(tokens)
            registers = self.register_tokens.expand(batch, -1, -1)
            embeddings = torch.cat([embeddings[:, :split], registers, embeddings[:, split:]], dim=1)
        return self.dropout(embeddings)


class ViTSelfAttention(nn.Module):
    """Multi-head scaled dot-product attention: SDPA by default, the explicit softmax when maps are needed."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.query = nn.Linear(d, d, bias=config.qkv_bias)
        self.key = nn.Linear(d, d, bias=config.qkv_bias)
        self.value = nn.Linear(d, d, bias=config.qkv_bias)
        self.dropout_prob = config.attention_probs_dropout_prob
        self.use_sdpa = config.attn_implementation == "sdpa"

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, tokens, hidden) -> (batch, heads, tokens, head_dim)."""
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(self, hidden_states: torch.Tensor, head_mask: torch.Tensor | None = None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        q, k, v = (self.split_heads(projection(hidden_states)) for projection in (self.query, self.key, self.value))
        dropout = self.dropout_prob if self.training else 0.0
        if self.use_sdpa and head_mask is None and not output_attentions:
            context, probs = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout), None
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            # Softmax statistics in float32 whatever the compute dtype, as in the TF and Flax twins (and HF).
            probs = scores.softmax(dim=-1, dtype=torch.float32).to(scores.dtype)
            dropped = F.dropout(probs, dropout, self.training)
            if head_mask is not None:
                dropped = dropped * head_mask
            context = torch.matmul(dropped, v)
        return context.transpose(1, 2).flatten(2), probs


class ViTSelfOutput(nn.Module):
    """The attention's output projection; the residual is added in ViTLayer."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(hidden_states))


class ViTAttention(nn.Module):
    """Self-attention followed by its output projection."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.attention = ViTSelfAttention(config)
        self.output = ViTSelfOutput(config)

    def forward(self, hidden_states: torch.Tensor, head_mask: torch.Tensor | None = None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        context, probs = self.attention(hidden_states, head_mask, output_attentions)
        return self.output(context), probs


class ViTIntermediate(nn.Module):
    """The MLP's expansion and activation."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation_name = config.hidden_act
        self.intermediate_act_fn = ACTIVATIONS[config.hidden_act]()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class ViTOutput(nn.Module):
    """The MLP's projection back to hidden_size, plus the residual."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        out = self.dropout(self.dense(hidden_states))
        return out if residual is None else out + residual


class ViTSwiGLU(nn.Module):
    """SwiGLU MLP (DINOv2-g): silu(gate) * value from one fused projection, then back to hidden_size."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.weights_in = nn.Linear(config.hidden_size, 2 * config.intermediate_size)
        self.weights_out = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        gate, value = self.weights_in(hidden_states).chunk(2, dim=-1)
        out = self.dropout(self.weights_out(F.silu(gate) * value))
        return out if residual is None else out + residual


class ViTLayerScale(nn.Module):
    """LayerScale (CaiT, DINOv2): a learned per-channel factor on a residual branch."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.lambda1 = nn.Parameter(torch.full((config.hidden_size,), float(config.layer_scale_init_value)))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states * self.lambda1


class ViTLayer(nn.Module):
    """One pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)); LayerScale on each branch if set."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.attention = ViTAttention(config)
        if config.use_swiglu_ffn:
            self.mlp = ViTSwiGLU(config)
        else:
            self.intermediate = ViTIntermediate(config)
            self.output = ViTOutput(config)
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        use_scale = config.layer_scale_init_value is not None
        self.layer_scale1 = ViTLayerScale(config) if use_scale else None
        self.layer_scale2 = ViTLayerScale(config) if use_scale else None

    def feed_forward(self, hidden_states: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """The MLP (or SwiGLU) branch, plus the residual when one is given."""
        if hasattr(self, "mlp"):
            return self.mlp(hidden_states, residual)
        return self.output(self.intermediate(hidden_states), residual)

    def forward(self, hidden_states: torch.Tensor, head_mask: torch.Tensor | None = None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, probs = self.attention(self.layernorm_before(hidden_states), head_mask, output_attentions)
        if self.layer_scale1 is None:
            hidden_states = attended + hidden_states
            return self.feed_forward(self.layernorm_after(hidden_states), hidden_states), probs
        hidden_states = self.layer_scale1(attended) + hidden_states
        return self.layer_scale2(self.feed_forward(self.layernorm_after(hidden_states), None)) + hidden_states, probs


class ViTEncoder(nn.Module):
    """The stack of blocks; collects hidden states and attention maps on request."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(ViTLayer(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False

    def forward(self, hidden_states: torch.Tensor, head_mask: torch.Tensor | None = None,
                output_attentions: bool = False, output_hidden_states: bool = False):
        all_hidden = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for i, layer in enumerate(self.layer):
            layer_mask = head_mask[i] if head_mask is not None else None
            if self.gradient_checkpointing and self.training:
                # Recompute the block's activations in the backward pass instead of storing them.
                hidden_states, probs = checkpoint(layer, hidden_states, layer_mask, output_attentions, use_reentrant=False)
            else:
                hidden_states, probs = layer(hidden_states, layer_mask, output_attentions)
            if output_hidden_states:
                all_hidden.append(hidden_states)
            if output_attentions:
                all_attentions.append(probs)
        return hidden_states, all_hidden, all_attentions


class ViTPooler(nn.Module):
    """Dense + activation on the pooled token (HF's pooler; the original code's pre-logits)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.pooler_output_size)
        self.activation = ACTIVATIONS[config.pooler_act]()

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(pooled))


class ViTAttentionPoolingHead(nn.Module):
    """Attention pooling (MAP, SigLIP's head): a learned probe attends to the tokens, then a residual MLP.

    The attention is `nn.MultiheadAttention`'s: one head split of query/key/value with biases and an output
    projection; the MLP uses the config's activation and width.
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.probe = nn.Parameter(torch.zeros(1, 1, d))
        self.attention = nn.Module()
        self.attention.query = nn.Linear(d, d)
        self.attention.key = nn.Linear(d, d)
        self.attention.value = nn.Linear(d, d)
        self.attention.out_proj = nn.Linear(d, d)
        self.layernorm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(d, config.intermediate_size)
        self.mlp.fc2 = nn.Linear(config.intermediate_size, d)
        self.activation = ACTIVATIONS[config.hidden_act]()

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        batch = sequence.shape[0]

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

        q = heads(self.attention.query(self.probe.expand(batch, -1, -1)))
        k, v = heads(self.attention.key(sequence)), heads(self.attention.value(sequence))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        probs = scores.softmax(dim=-1, dtype=torch.float32).to(scores.dtype)
        pooled = self.attention.out_proj(torch.matmul(probs, v).transpose(1, 2).flatten(2))
        pooled = pooled + self.mlp.fc2(self.activation(self.mlp.fc1(self.layernorm(pooled))))
        return pooled[:, 0]


class PixelShuffle(nn.Module):
    """Depth to space with a (rows, cols) factor; torch's nn.PixelShuffle when the two are equal."""

    def __init__(self, factor: tuple[int, int]) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (sh, sw), (b, c, h, w) = self.factor, x.shape
        x = x.reshape(b, c // (sh * sw), sh, sw, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c // (sh * sw), h * sh, w * sw)


def _device_from_map(device_map: str | torch.device) -> torch.device:
    """HF's device_map for a model that fits one device: "auto" picks the GPU when there is one."""
    if device_map == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device_map, (str, torch.device)):
        return torch.device(device_map)
    raise ValueError(f"device_map={device_map!r}: vit places the whole model on one device; pass 'auto', 'cpu' or "
                     "a device such as 'cuda:0'.")


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """NumPy has no bfloat16 of its own: bf16 tensors become ml_dtypes.bfloat16 arrays (the same bits), so that
    a bf16 model saves as BF16, as HF's does."""
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.detach().cpu().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.detach().cpu().numpy()


class ViTPreTrainedModel(PretrainedMixin, nn.Module):
    """Shared by the PyTorch models: construction from a config, checkpoint I/O, input checks."""

    config_class = ViTConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True

    def __init__(self, config: ViTConfig, torch_dtype: torch.dtype | str | None = None,
                 attn_implementation: str | None = None) -> None:
        super().__init__()
        if not isinstance(config, ViTConfig):
            raise TypeError(f"config must be a ViTConfig, got {type(config).__name__}")
        if attn_implementation is not None:
            config = config.copy(attn_implementation=attn_implementation)
        check_model_family(type(self), config)
        self.config = config
        keep = torch_dtype is None or (isinstance(torch_dtype, str) and torch_dtype == "auto")
        self._torch_dtype = None if keep else getattr(torch, dtype_name(torch_dtype))

    def post_init(self) -> None:
        """Initialise like HF (seeded from torch's RNG, so torch.manual_seed makes it repeatable)."""
        if not init_is_skipped():
            self.init_weights(seed=int(torch.randint(0, 2**31 - 1, ())))
        if isinstance(self._torch_dtype, torch.dtype):
            self.to(self._torch_dtype)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, dtype=None, torch_dtype=None,
                        device_map: str | torch.device | None = None, **kwargs):
        """HF's loader (see `PretrainedMixin.from_pretrained`), returning the model in eval mode as HF does.

        `dtype` (transformers >= 4.56's name; `torch_dtype` is kept) casts the weights, "auto" keeps the
        checkpoint's; `device_map` is "cpu", "auto" (the GPU when there is one) or a device.
        """
        if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
            raise ValueError(f"Pass dtype or torch_dtype, not both ({dtype} vs {torch_dtype}).")
        model = super().from_pretrained(pretrained_model_name_or_path, *model_args,
                                        torch_dtype=dtype if dtype is not None else torch_dtype, **kwargs)
        if device_map is not None:
            model.to(_device_from_map(device_map))
        return model.eval()

    def num_parameters(self, only_trainable: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not only_trainable)

    def _output_flags(self, output_attentions, output_hidden_states, return_dict) -> tuple[bool, bool, bool]:
        """As in PretrainedMixin, but under torch.jit.trace the default output is a tuple, since TorchScript
        records no dataclasses (HF's `torchscript=True` does the same)."""
        if return_dict is None and torch.jit.is_tracing():
            return_dict = False
        return super()._output_flags(output_attentions, output_hidden_states, return_dict)

    def canonical_state_dict(self) -> dict[str, np.ndarray]:
        return {k: _to_numpy(v) for k, v in self.state_dict().items()}

    def _state_to_save(self, kwargs: dict) -> dict[str, np.ndarray]:
        """HF's `save_pretrained(state_dict=...)`, which Trainer and peft pass, wins over the model's own."""
        state_dict = kwargs.pop("state_dict", None)
        if state_dict is None:
            return self.canonical_state_dict()
        return {k: _to_numpy(v) for k, v in state_dict.items()}

    def load_canonical_state_dict(self, state: dict[str, np.ndarray]) -> None:
        own = self.state_dict()
        with torch.no_grad():
            for name, array in state.items():
                if array.dtype.name == "bfloat16":  # torch.from_numpy has no ml_dtypes; the widening is exact
                    array = array.astype(np.float32)
                own[name].copy_(torch.from_numpy(np.require(array, requirements=["C", "W"])))

    def optimize_for_inference(self) -> ViTPreTrainedModel:
        """A frozen copy for float32 or bfloat16 CPU inference; see `vit.pt.fast` for its contract. This model is unchanged."""
        from .fast import optimize_for_inference

        return optimize_for_inference(self)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        for module in self.modules():
            if isinstance(module, ViTEncoder):
                module.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        for module in self.modules():
            if isinstance(module, ViTEncoder):
                module.gradient_checkpointing = False

    def _check_inputs(self, pixel_values, bool_masked_pos, head_mask, interpolate_pos_encoding) -> tuple:
        """Validate the inputs and cast pixel_values to the model's dtype (the one place that casts).

        Returns (pixel_values, grid, bool_masked_pos, head_mask), as in the TF and Flax twins.
        """
        if not isinstance(pixel_values, torch.Tensor):
            pixel_values = torch.as_tensor(np.asarray(pixel_values))
        interpolate = bool(interpolate_pos_encoding) or self.config.always_interpolate_pos_encoding
        grid = check_pixel_values(tuple(pixel_values.shape), self.config, interpolate)
        if not torch.is_floating_point(pixel_values):
            raise ValueError(f"pixel_values must be floating point, got {pixel_values.dtype}; use ViTImageProcessor.")
        # On an accelerator this check would force a device-to-host sync on every call; on the CPU it is free.
        tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
        if not tracing and pixel_values.device.type == "cpu" and not torch.isfinite(pixel_values).all():
            raise ValueError("pixel_values holds NaN or infinite values.")
        if bool_masked_pos is not None:
            bool_masked_pos = torch.as_tensor(bool_masked_pos)
            check_mask(tuple(bool_masked_pos.shape), pixel_values.shape[0], grid[0] * grid[1])
        if head_mask is not None:
            head_mask = torch.as_tensor(head_mask)
            check_head_mask(tuple(head_mask.shape), self.config)
            # (layers, 1, heads, 1, 1) so that layer i's mask broadcasts over (batch, heads, q, k).
            head_mask = head_mask.expand(self.config.num_hidden_layers, -1) if head_mask.dim() == 1 else head_mask
            head_mask = head_mask[:, None, :, None, None].to(self.dtype)
        return pixel_values.to(self.dtype), grid, bool_masked_pos, head_mask


class ViTModel(ViTPreTrainedModel):
    """The bare ViT encoder: `last_hidden_state` and, with the pooling layer, `pooler_output`.

    Example:
        >>> import torch
        >>> from vit import ViTConfig, ViTModel
        >>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
        ...                    num_attention_heads=4, intermediate_size=64)
        >>> model = ViTModel(config).eval()
        >>> model(torch.zeros(1, 3, 32, 32)).last_hidden_state.shape
        torch.Size([1, 17, 32])
    """

    head = "base"
    hf_architecture = "ViTModel"

    def __init__(self, config: ViTConfig, add_pooling_layer: bool = True, use_mask_token: bool = False,
                 torch_dtype: torch.dtype | str | None = None, attn_implementation: str | None = None) -> None:
        super().__init__(config, torch_dtype, attn_implementation)
        self.add_pooling_layer, self.use_mask_token = add_pooling_layer, use_mask_token
        config = self.config
        self.embeddings = ViTEmbeddings(config, use_mask_token)
        # CLIP norms the embeddings before the blocks.
        self.pre_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.pre_layernorm else None
        self.encoder = ViTEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if not config.use_fc_norm else None
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.use_fc_norm else None
        self.map_head = ViTAttentionPoolingHead(config) if config.pooling == "map" else None
        self.pooler = ViTPooler(config) if add_pooling_layer and config.pooler_dense else None
        self.post_init()

    def get_input_embeddings(self) -> ViTPatchEmbeddings:
        return self.embeddings.patch_embeddings

    def forward_features(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None,
                         interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """The normalised token sequence (batch, tokens, hidden)."""
        return self(pixel_values, bool_masked_pos, interpolate_pos_encoding=interpolate_pos_encoding).last_hidden_state

    def pool(self, sequence: torch.Tensor) -> torch.Tensor:
        """The class token, the mean of the patch tokens or the attention pool; then fc_norm (timm, CLIP)."""
        if self.config.pooling == "cls":
            pooled = sequence[:, 0]
        elif self.config.pooling == "map":
            pooled = self.map_head(sequence)
        else:
            pooled = sequence[:, self.config.num_prefix_tokens:].mean(dim=1)
        return self.fc_norm(pooled) if self.fc_norm is not None else pooled

    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
    ):
        output_attentions, output_hidden_states, return_dict = self._output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        pixel_values, grid, bool_masked_pos, head_mask = self._check_inputs(
            pixel_values, bool_masked_pos, head_mask, interpolate_pos_encoding
        )
        if bool_masked_pos is not None and self.embeddings.mask_token is None:
            raise ValueError("bool_masked_pos needs a mask token; build the model with use_mask_token=True.")
        embedded = self.embeddings(pixel_values, grid, bool_masked_pos)
        if self.pre_layernorm is not None:
            embedded = self.pre_layernorm(embedded)
        sequence, hidden_states, attentions = self.encoder(
            embedded, head_mask, bool(output_attentions), bool(output_hidden_states)
        )
        if self.layernorm is not None:
            sequence = self.layernorm(sequence)
        if self.pooler is not None:
            pooled = self.pooler(self.pool(sequence))
        else:  # DINOv2, CLIP, SigLIP: the pooled token itself is the pooler output
            pooled = self.pool(sequence) if self.add_pooling_layer and not self.config.pooler_dense else None
        output = BaseModelOutputWithPooling(
            last_hidden_state=sequence,
            pooler_output=pooled,
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
        )
        return output if return_dict else output.to_tuple()


class ViTForMaskedImageModeling(ViTPreTrainedModel):
    """ViT with SimMIM's decoder: reconstructs the pixels of masked patches (any patch size or grid).

    Example:
        >>> import torch
        >>> from vit import ViTConfig, ViTForMaskedImageModeling
        >>> config = ViTConfig(image_size=32, patch_size=8, encoder_stride=8, hidden_size=32,
        ...                    num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
        >>> model = ViTForMaskedImageModeling(config).eval()
        >>> mask = torch.zeros(1, 16, dtype=torch.bool); mask[:, ::2] = True
        >>> out = model(torch.zeros(1, 3, 32, 32), bool_masked_pos=mask)
        >>> out.reconstruction.shape
        torch.Size([1, 3, 32, 32])
    """

    head = "mim"
    hf_architecture = "ViTForMaskedImageModeling"

    def __init__(self, config: ViTConfig, torch_dtype: torch.dtype | str | None = None,
                 attn_implementation: str | None = None) -> None:
        super().__init__(config, torch_dtype, attn_implementation)
        config = self.config
        with skip_init():
            self.vit = ViTModel(config, add_pooling_layer=False, use_mask_token=True)
        sh, sw = config.stride_hw
        self.decoder = nn.Sequential(
            nn.Conv2d(config.hidden_size, sh * sw * config.num_channels, kernel_size=1),
            PixelShuffle((sh, sw)),
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
    ):
        output_attentions, output_hidden_states, return_dict = self._output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        if bool_masked_pos is not None:
            check_mim_stride(self.config)
        outputs = self.vit(pixel_values, bool_masked_pos, head_mask, output_attentions, output_hidden_states,
                           interpolate_pos_encoding, return_dict=True)
        pixel_values = torch.as_tensor(pixel_values)
        grid = (pixel_values.shape[2] // self.config.patch_hw[0], pixel_values.shape[3] // self.config.patch_hw[1])
        patches = outputs.last_hidden_state[:, self.config.num_prefix_tokens:]
        feature_map = patches.transpose(1, 2).reshape(patches.shape[0], -1, *grid)
        reconstruction = self.decoder(feature_map)
        loss = None
        if bool_masked_pos is not None:
            (ph, pw) = self.config.patch_hw
            mask = bool_masked_pos.reshape(-1, *grid).repeat_interleave(ph, 1).repeat_interleave(pw, 2)
            mask = mask.unsqueeze(1).to(reconstruction.dtype)
            target = pixel_values[:, :, : grid[0] * ph, : grid[1] * pw].to(reconstruction.dtype)
            l1 = F.l1_loss(target, reconstruction, reduction="none")
            loss = (l1 * mask).sum() / (mask.sum() + 1e-5) / self.config.num_channels
        output = MaskedImageModelingOutput(loss, reconstruction, outputs.hidden_states, outputs.attentions)
        return output if return_dict else output.to_tuple()


class ViTForImageClassification(ViTPreTrainedModel):
    """ViT with a linear classifier on the pooled token; `labels` give a loss by `problem_type`.

    Example:
        >>> import torch
        >>> from vit import ViTConfig, ViTForImageClassification
        >>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
        ...                    num_attention_heads=4, intermediate_size=64, num_labels=10)
        >>> model = ViTForImageClassification(config).eval()
        >>> model(torch.zeros(2, 3, 32, 32), labels=torch.tensor([1, 2])).logits.shape
        torch.Size([2, 10])
    """

    head = "classification"
    hf_architecture = "ViTForImageClassification"

    def __init__(self, config: ViTConfig, torch_dtype: torch.dtype | str | None = None,
                 attn_implementation: str | None = None) -> None:
        super().__init__(config, torch_dtype, attn_implementation)
        config = self.config
        self.num_labels = config.num_labels
        with skip_init():
            self.vit = ViTModel(config, add_pooling_layer=config.classifier_input == "pooler")
        width = classifier_width(config)
        self.classifier = nn.Linear(width, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def forward_head(self, outputs: BaseModelOutputWithPooling) -> torch.Tensor:
        if self.config.classifier_input == "pooler":
            features = outputs.pooler_output
        elif self.config.classifier_input == "cls_and_mean":  # DINOv2: class token and mean of the patch tokens
            sequence = outputs.last_hidden_state
            features = torch.cat([sequence[:, 0], sequence[:, self.config.num_prefix_tokens:].mean(dim=1)], dim=-1)
        else:
            features = self.vit.pool(outputs.last_hidden_state)
        return self.classifier(features)

    def forward(
        self,
        pixel_values: torch.Tensor,
        head_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
    ):
        output_attentions, output_hidden_states, return_dict = self._output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        outputs = self.vit(pixel_values, None, head_mask, output_attentions, output_hidden_states,
                           interpolate_pos_encoding, return_dict=True)
        logits = self.forward_head(outputs)
        loss = self.loss_from_labels(logits, labels) if labels is not None else None
        output = ImageClassifierOutput(loss, logits, outputs.hidden_states, outputs.attentions)
        return output if return_dict else output.to_tuple()

    def loss_from_labels(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """HF's losses by problem_type, mean-reduced."""
        labels = torch.as_tensor(labels, device=logits.device)
        problem = resolve_problem_type(self.config, not torch.is_floating_point(labels))
        if problem == "regression":
            if self.num_labels == 1:
                return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
            return F.mse_loss(logits, labels.to(logits.dtype))
        if problem == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1).long())
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class ViTWithProjection(ViTPreTrainedModel):
    """ViT with a linear projection (no bias) of the pooled token into an embedding space, as CLIP's image tower.

    Example:
        >>> import torch
        >>> from vit import ViTConfig, ViTWithProjection
        >>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
        ...                    num_attention_heads=4, intermediate_size=64, projection_dim=24)
        >>> ViTWithProjection(config).eval()(torch.zeros(1, 3, 32, 32)).image_embeds.shape
        torch.Size([1, 24])
    """

    head = "projection"
    hf_architecture = "ViTWithProjection"

    def __init__(self, config: ViTConfig, torch_dtype: torch.dtype | str | None = None,
                 attn_implementation: str | None = None) -> None:
        super().__init__(config, torch_dtype, attn_implementation)
        config = self.config
        if config.projection_dim is None:
            raise ConfigError(f"{type(self).__name__} needs `projection_dim` in the config (CLIP's projection_dim).")
        with skip_init():
            self.vit = ViTModel(config, add_pooling_layer=False)
        self.visual_projection = nn.Linear(config.hidden_size, config.projection_dim, bias=False)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        head_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
    ):
        output_attentions, output_hidden_states, return_dict = self._output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        outputs = self.vit(pixel_values, None, head_mask, output_attentions, output_hidden_states,
                           interpolate_pos_encoding, return_dict=True)
        image_embeds = self.visual_projection(self.vit.pool(outputs.last_hidden_state))
        output = ImageEmbeddingsOutput(image_embeds, outputs.last_hidden_state, outputs.hidden_states, outputs.attentions)
        return output if return_dict else output.to_tuple()


class ViTForImageClassificationWithTeacher(ViTPreTrainedModel):
    """ViT with DeiT's two heads: one on the class token, one on the distillation token; `logits` is their mean.

    Example:
        >>> import torch
        >>> from vit import ViTConfig, ViTForImageClassificationWithTeacher
        >>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
        ...                    num_attention_heads=4, intermediate_size=64, num_labels=5, distillation_token=True)
        >>> ViTForImageClassificationWithTeacher(config).eval()(torch.zeros(1, 3, 32, 32)).distillation_logits.shape
        torch.Size([1, 5])
    """

    head = "distilled"
    hf_architecture = "ViTForImageClassificationWithTeacher"

    def __init__(self, config: ViTConfig, torch_dtype: torch.dtype | str | None = None,
                 attn_implementation: str | None = None) -> None:
        super().__init__(config, torch_dtype, attn_implementation)
        config = self.config
        if not config.distillation_token or config.num_labels == 0:
            raise ConfigError(f"{type(self).__name__} needs distillation_token=True and num_labels > 0 in the config.")
        with skip_init():
            self.vit = ViTModel(config, add_pooling_layer=False)
        self.cls_classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.distillation_classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        head_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        return_dict: bool | None = None,
    ):
        output_attentions, output_hidden_states, return_dict = self._output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        outputs = self.vit(pixel_values, None, head_mask, output_attentions, output_hidden_states,
                           interpolate_pos_encoding, return_dict=True)
        sequence = outputs.last_hidden_state
        cls_logits = self.cls_classifier(sequence[:, 0])
        distillation_logits = self.distillation_classifier(sequence[:, 1])
        output = ImageClassifierWithTeacherOutput((cls_logits + distillation_logits) / 2, cls_logits,
                                                  distillation_logits, outputs.hidden_states, outputs.attentions)
        return output if return_dict else output.to_tuple()


# ----------------------------------------------------------------------------------------- the ViT family
# Each class fixes the family (checked against the config), the head and HF's architecture name; the network
# is the ViT above, configured by the family's config.
class CLIPVisionModel(ViTModel):
    """CLIP's image tower (HF's CLIPVisionModel): `pooler_output` is the normed class token."""

    families = ("clip",)
    hf_architecture = "CLIPVisionModel"


class CLIPVisionModelWithProjection(ViTWithProjection):
    """CLIP's image tower with its projection: `image_embeds` (HF's CLIPVisionModelWithProjection)."""

    families = ("clip",)
    hf_architecture = "CLIPVisionModelWithProjection"


class SiglipVisionModel(ViTModel):
    """SigLIP's image tower: `pooler_output` is the attention pool of the normed tokens (HF's SiglipVisionModel)."""

    families = ("siglip",)
    hf_architecture = "SiglipVisionModel"


class Dinov2Model(ViTModel):
    """DINOv2 (HF's Dinov2Model): LayerScale, a mask token, position embeddings resized to any input."""

    families = ("dinov2",)
    hf_architecture = "Dinov2Model"

    def __init__(self, config: ViTConfig, add_pooling_layer: bool = True, use_mask_token: bool = True,
                 torch_dtype: torch.dtype | str | None = None, attn_implementation: str | None = None) -> None:
        super().__init__(config, add_pooling_layer, use_mask_token, torch_dtype, attn_implementation)


class Dinov2ForImageClassification(ViTForImageClassification):
    """DINOv2 with HF's linear head on the class token and the mean of the patch tokens."""

    families = ("dinov2",)
    hf_architecture = "Dinov2ForImageClassification"


class Dinov2WithRegistersModel(Dinov2Model):
    """DINOv2 with register tokens (HF's Dinov2WithRegistersModel)."""

    families = ("dinov2_with_registers",)
    hf_architecture = "Dinov2WithRegistersModel"


class Dinov2WithRegistersForImageClassification(ViTForImageClassification):
    """DINOv2 with registers and HF's linear head on the class token and the mean of the patch tokens."""

    families = ("dinov2_with_registers",)
    hf_architecture = "Dinov2WithRegistersForImageClassification"


class DeiTModel(ViTModel):
    """DeiT (HF's DeiTModel): class and distillation tokens, a dense pooler."""

    families = ("deit",)
    hf_architecture = "DeiTModel"


class DeiTForImageClassification(ViTForImageClassification):
    """DeiT with a linear head on the class token (HF's DeiTForImageClassification)."""

    families = ("deit",)
    hf_architecture = "DeiTForImageClassification"


class DeiTForImageClassificationWithTeacher(ViTForImageClassificationWithTeacher):
    """DeiT with the class-token and distillation-token heads (HF's DeiTForImageClassificationWithTeacher)."""

    families = ("deit",)
    hf_architecture = "DeiTForImageClassificationWithTeacher"
