"""See what a ViT sees: attention rollout, class-token attention, per-head maps and PCA feature maps.

Every function takes a model of any framework (PyTorch, TensorFlow or Flax) and `pixel_values` (NumPy or the
framework's tensor, batch-first, channels-first) and returns NumPy arrays laid out on the patch grid, so the same
call gives the same maps in all three frameworks. The maps come from `output_attentions=True`, which every
attention kernel honours, and from the final normalised token sequence.

Prefix tokens: the class token, if any, is the query; register tokens (Darcet et al., "Vision Transformers Need
Registers") take part in the attention but, as in that paper, are dropped from the maps, which cover the patch
tokens only. A model without a class token is explained through its mean-pooled output: the query is the mean
of the patch rows.

The rendering helpers (`overlay_heatmap`, `heads_grid`, `features_panel`) draw with PIL only.

Example:
    >>> import numpy as np
    >>> from vit import ViTConfig, ViTModel
    >>> from vit.explain import attention_rollout
    >>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
    ...                    num_attention_heads=4, intermediate_size=64)
    >>> attention_rollout(ViTModel(config).eval(), np.zeros((1, 3, 32, 32), np.float32)).shape
    (1, 4, 4)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ViTError

METHODS = ("rollout", "last-layer", "heads")


# ------------------------------------------------------------------------------------ running a model
def framework_of(model: Any) -> str:
    """'pt', 'tf' or 'flax', from the classes the model is built on (no framework is imported here)."""
    for klass in type(model).__mro__:
        module = klass.__module__ or ""
        if module.startswith(("vit.pt", "torch")):
            return "pt"
        if module.startswith(("vit.tf", "keras", "tensorflow", "tf_keras")):
            return "tf"
        if module.startswith(("vit.flax", "flax", "jax")):
            return "flax"
    raise ViTError(f"Cannot tell the framework of {type(model).__name__}; pass a vit PyTorch, TF or Flax model.")


def to_numpy(value: Any) -> np.ndarray:
    """A framework tensor (or array) as a float32 NumPy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def forward(model: Any, pixel_values: Any, **options: Any) -> Any:
    """Call `model` on `pixel_values` in its own framework, without gradients, in inference mode.

    Images of another size than the config's are run with `interpolate_pos_encoding=True`.
    """
    framework = framework_of(model)
    pixels = to_numpy(pixel_values)
    if pixels.ndim != 4:
        raise ViTError(f"pixel_values must be (batch, channels, height, width), got shape {pixels.shape}.")
    if tuple(pixels.shape[2:]) != tuple(model.config.image_hw):
        options.setdefault("interpolate_pos_encoding", True)
    if framework == "pt":
        import torch

        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                return model(torch.from_numpy(np.ascontiguousarray(pixels)), **options)
        finally:
            model.train(was_training)
    if framework == "tf":
        return model(pixels, training=False, **options)
    return model(pixels, **options)


@dataclass
class TokenLayout:
    """Where the class token, the register tokens and the patch tokens sit in the sequence."""

    class_index: int | None  # None: the model has no class token
    num_prefix: int  # class token + registers, in front of the patches
    grid: tuple[int, int]

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]


def token_layout(config: Any, pixel_shape: tuple[int, ...], sequence_length: int) -> TokenLayout:
    """The layout of a sequence of `sequence_length` tokens for images of `pixel_shape` (B, C, H, W)."""
    (ph, pw) = config.patch_hw
    grid = (pixel_shape[2] // ph, pixel_shape[3] // pw)
    num_prefix = sequence_length - grid[0] * grid[1]
    has_class = bool(getattr(config, "class_token", True))
    registers = int(getattr(config, "num_register_tokens", 0) or 0)
    # num_prefix_tokens may or may not count the registers, depending on the config class; accept both.
    allowed = {config.num_prefix_tokens, config.num_prefix_tokens + registers}
    if num_prefix not in allowed or num_prefix < int(has_class):
        raise ViTError(
            f"The model returned {sequence_length} tokens for a {grid[0]}x{grid[1]} patch grid, so "
            f"{num_prefix} prefix tokens, but its config declares {config.num_prefix_tokens} (class token "
            f"{has_class}, {registers} registers); the config does not describe this model."
        )
    return TokenLayout(0 if has_class else None, num_prefix, grid)


def _config_of(model: Any) -> Any:
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "patch_hw"):
        raise ViTError(f"{type(model).__name__} has no ViT config; pass a vit model.")
    return config


def attentions(model: Any, pixel_values: Any) -> tuple[np.ndarray, TokenLayout]:
    """Every layer's attention probabilities, (batch, layers, heads, tokens, tokens), and the token layout."""
    config = _config_of(model)
    outputs = forward(model, pixel_values, output_attentions=True)
    maps = getattr(outputs, "attentions", None)
    if not maps:
        raise ViTError(f"{type(model).__name__} returned no attentions with output_attentions=True.")
    stacked = np.stack([to_numpy(a) for a in maps], axis=1)
    return stacked, token_layout(config, to_numpy(pixel_values).shape, stacked.shape[-1])


def _query_rows(matrix: np.ndarray, layout: TokenLayout) -> np.ndarray:
    """The row that explains the pooled output: the class token's, else the mean of the patch rows."""
    if layout.class_index is not None:
        return matrix[..., layout.class_index, :]
    return matrix[..., layout.num_prefix:, :].mean(axis=-2)


def _to_grid(rows: np.ndarray, layout: TokenLayout) -> np.ndarray:
    """Keep the patch columns (class and register tokens dropped) and lay them out on the patch grid."""
    patches = rows[..., layout.num_prefix:]
    return patches.reshape(*patches.shape[:-1], *layout.grid)


def attention_rollout(model: Any, pixel_values: Any, head_fusion: str = "mean") -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020): (batch, grid_h, grid_w).

    Each layer's attention, fused over heads (`"mean"`, `"max"` or `"min"`), is averaged with the identity for
    the residual connection and renormalised; the product over layers says how much each patch flows into the
    class token (or into the mean-pooled output of a model without one).
    """
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}.get(head_fusion)
    if fuse is None:
        raise ViTError(f"head_fusion must be 'mean', 'max' or 'min', got {head_fusion!r}.")
    maps, layout = attentions(model, pixel_values)
    fused = fuse(maps.astype(np.float64), axis=2)  # (batch, layers, tokens, tokens)
    tokens = fused.shape[-1]
    rollout = np.broadcast_to(np.eye(tokens), (fused.shape[0], tokens, tokens)).copy()
    for layer in range(fused.shape[1]):
        step = 0.5 * fused[:, layer] + 0.5 * np.eye(tokens)
        step /= step.sum(axis=-1, keepdims=True)
        rollout = step @ rollout
    return _to_grid(_query_rows(rollout, layout), layout).astype(np.float32)


def head_attention(model: Any, pixel_values: Any, layer: int = -1) -> np.ndarray:
    """The query token's attention to the patches, per head, in one layer: (batch, heads, grid_h, grid_w)."""
    maps, layout = attentions(model, pixel_values)
    return _to_grid(_query_rows(maps[:, layer], layout), layout)


def last_layer_attention(model: Any, pixel_values: Any) -> np.ndarray:
    """The last layer's class-token attention to the patches, averaged over heads: (batch, grid_h, grid_w)."""
    return head_attention(model, pixel_values, -1).mean(axis=1)


def attention_map(model: Any, pixel_values: Any, method: str) -> np.ndarray:
    """`rollout` or `last-layer`: (batch, grid_h, grid_w); `heads`: (batch, heads, grid_h, grid_w)."""
    if method == "rollout":
        return attention_rollout(model, pixel_values)
    if method == "last-layer":
        return last_layer_attention(model, pixel_values)
    if method == "heads":
        return head_attention(model, pixel_values)
    raise ViTError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")


def patch_features(model: Any, pixel_values: Any) -> np.ndarray:
    """The final normalised patch tokens on the grid: (batch, grid_h, grid_w, hidden)."""
    config = _config_of(model)
    base = getattr(model, "vit", model)  # a model with a head: its encoder gives the normalised tokens
    sequence = to_numpy(forward(base, pixel_values).last_hidden_state)
    layout = token_layout(config, to_numpy(pixel_values).shape, sequence.shape[1])
    patches = sequence[:, layout.num_prefix:]
    return patches.reshape(patches.shape[0], *layout.grid, patches.shape[-1])


def pca_rgb(features: np.ndarray, background_threshold: float | None = None) -> np.ndarray:
    """The first three principal components of patch features as RGB in [0, 1], as in the DINOv2 paper.

    The PCA is fitted on the patches of all the images together, so colours are comparable across images.
    With `background_threshold`, patches whose first component (scaled to [0, 1]) is below it are background:
    they are shown black and the colours come from a second PCA of the foreground patches only. Each
    component's sign is fixed (its largest loading is positive), so the colours do not flip between runs or
    frameworks.
    """
    feats = np.asarray(features, dtype=np.float64)
    flat = feats.reshape(-1, feats.shape[-1])
    foreground = np.ones(len(flat), dtype=bool)
    if background_threshold is not None:
        first = _scale01(_components(flat, 1)[:, 0])
        foreground = first >= background_threshold
        if not foreground.any():
            raise ViTError(f"background_threshold={background_threshold} marks every patch as background.")
    rgb = np.zeros((len(flat), 3))
    rgb[foreground] = _scale01(_components(flat[foreground], 3))
    return rgb.reshape(*feats.shape[:-1], 3).astype(np.float32)


def _components(x: np.ndarray, count: int) -> np.ndarray:
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    vt = vt[:count]
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    projected = centred @ (vt * signs[:, None]).T
    if projected.shape[1] < count:  # fewer patches or features than components: pad with zeros
        projected = np.pad(projected, ((0, 0), (0, count - projected.shape[1])))
    return projected


def _scale01(x: np.ndarray) -> np.ndarray:
    low, high = x.min(axis=0), x.max(axis=0)
    return (x - low) / np.where(high > low, high - low, 1.0)


# ------------------------------------------------------------------------------------ drawing (PIL)
# Viridis, sampled at nine evenly spaced points (matplotlib's published colour map values).
_VIRIDIS = np.array([
    [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
    [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37],
], dtype=np.float64)


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] to viridis RGB, uint8, shape values.shape + (3,)."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0) * (len(_VIRIDIS) - 1)
    low = np.floor(v).astype(int).clip(0, len(_VIRIDIS) - 2)
    frac = (v - low)[..., None]
    return np.round(_VIRIDIS[low] * (1 - frac) + _VIRIDIS[low + 1] * frac).astype(np.uint8)


def _upsample(grid_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (grid_h, grid_w) float map resized bilinearly to the image's (width, height)."""
    from PIL import Image

    image = Image.fromarray(np.asarray(grid_map, dtype=np.float32), mode="F")
    return np.asarray(image.resize(size, resample=Image.Resampling.BILINEAR), dtype=np.float64)


def _blend(image: Any, grid_map: np.ndarray, low: float, high: float, alpha: float) -> Any:
    from PIL import Image

    values = (_upsample(grid_map, image.size) - low) / (high - low if high > low else 1.0)
    heat = Image.fromarray(colormap(values), "RGB")
    return Image.blend(image.convert("RGB"), heat, alpha)


def _colour_bar(height: int, low: float, high: float) -> Any:
    """A vertical bar with its top and bottom values written beside it."""
    from PIL import Image, ImageDraw

    bar_width, label_width = max(12, height // 25), 64
    ramp = colormap(np.linspace(1.0, 0.0, height))[:, None, :].repeat(bar_width, axis=1)
    panel = Image.new("RGB", (bar_width + label_width + 8, height), "white")
    panel.paste(Image.fromarray(ramp, "RGB"), (4, 0))
    draw = ImageDraw.Draw(panel)
    draw.text((bar_width + 8, 0), f"{high:.3g}", fill="black")
    draw.text((bar_width + 8, max(0, height - 12)), f"{low:.3g}", fill="black")
    return panel


def overlay_heatmap(image: Any, grid_map: np.ndarray, alpha: float = 0.55) -> Any:
    """The map over the image at the image's own size and aspect ratio, with a colour bar on the right."""
    from PIL import Image

    low, high = float(np.min(grid_map)), float(np.max(grid_map))
    blended = _blend(image, grid_map, low, high, alpha)
    bar = _colour_bar(blended.height, low, high)
    canvas = Image.new("RGB", (blended.width + bar.width, blended.height), "white")
    canvas.paste(blended, (0, 0))
    canvas.paste(bar, (blended.width, 0))
    return canvas


def heads_grid(image: Any, head_maps: np.ndarray, max_panel_side: int = 320, alpha: float = 0.55) -> Any:
    """One panel per head, in a grid, on a shared scale, with one colour bar.

    Panels keep the image's aspect ratio; images larger than `max_panel_side` are shown smaller so that a
    12-head grid of a large photo stays viewable.
    """
    from PIL import Image, ImageDraw

    scale = min(1.0, max_panel_side / max(image.size))
    panel_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    small = image.convert("RGB").resize(panel_size, resample=Image.Resampling.BILINEAR)
    low, high = float(np.min(head_maps)), float(np.max(head_maps))
    heads = len(head_maps)
    columns = int(np.ceil(np.sqrt(heads)))
    rows = int(np.ceil(heads / columns))
    title, gap = 14, 4
    cell_w, cell_h = panel_size[0] + gap, panel_size[1] + title + gap
    grid_height = rows * cell_h
    bar = _colour_bar(grid_height, low, high)
    canvas = Image.new("RGB", (columns * cell_w + bar.width, grid_height), "white")
    draw = ImageDraw.Draw(canvas)
    for head, grid_map in enumerate(head_maps):
        x, y = (head % columns) * cell_w, (head // columns) * cell_h
        draw.text((x + 2, y), f"head {head}", fill="black")
        canvas.paste(_blend(small, grid_map, low, high, alpha), (x, y + title))
    canvas.paste(bar, (columns * cell_w, 0))
    return canvas


def features_panel(image: Any, rgb_grid: np.ndarray) -> Any:
    """The image and its PCA colours side by side, both at the image's own size (patches shown as blocks)."""
    from PIL import Image

    colours = Image.fromarray(np.round(np.asarray(rgb_grid) * 255).astype(np.uint8), "RGB")
    colours = colours.resize(image.size, resample=Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (image.width * 2 + 4, image.height), "white")
    canvas.paste(image.convert("RGB"), (0, 0))
    canvas.paste(colours, (image.width + 4, 0))
    return canvas
