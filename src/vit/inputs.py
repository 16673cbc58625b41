"""Checks on model inputs that every framework runs before its forward pass, so errors read the same."""

from __future__ import annotations

from collections.abc import Sequence

from .config import ViTConfig
from .errors import ImageError


def check_pixel_values(shape: Sequence[int | None], config: ViTConfig, interpolate_pos_encoding: bool) -> tuple[int, int]:
    """Validate an NCHW shape against the config; return the patch grid (rows, cols) it gives."""
    if len(shape) != 4:
        raise ImageError(
            f"pixel_values must have 4 dimensions (batch, channels, height, width), got shape {tuple(shape)}. "
            "Use ViTImageProcessor, or add a batch axis for a single image."
        )
    _, channels, height, width = shape
    if channels is not None and channels != config.num_channels:
        hint = " The input looks channels-last (NHWC); transpose it to NCHW." if width == config.num_channels else ""
        raise ImageError(
            f"pixel_values has {channels} channels but the model expects num_channels={config.num_channels}. "
            f"Make sure that the channel dimension of the pixel values matches the configuration.{hint}"
        )
    if height is None or width is None:
        return config.grid_hw
    (ph, pw), (h0, w0) = config.patch_hw, config.image_hw
    if height < ph or width < pw:
        raise ImageError(f"The image ({height}x{width}) is smaller than one patch ({ph}x{pw}); resize it up first.")
    if not interpolate_pos_encoding and (height, width) != (h0, w0):
        raise ImageError(
            f"Input image size ({height}*{width}) doesn't match model ({h0}*{w0}). Resize the image to "
            f"{h0}x{w0}, or pass interpolate_pos_encoding=True to interpolate the position embeddings."
        )
    return height // ph, width // pw


def check_mask(shape: Sequence[int | None], batch: int | None, num_patches: int) -> None:
    """bool_masked_pos must be (batch, num_patches)."""
    if len(shape) != 2 or (shape[1] is not None and shape[1] != num_patches) or (
        batch is not None and shape[0] is not None and shape[0] != batch
    ):
        raise ImageError(
            f"bool_masked_pos must have shape (batch, num_patches) = ({batch}, {num_patches}), got {tuple(shape)}."
        )


def resolve_problem_type(config: ViTConfig, labels_are_integers: bool) -> str:
    """HF's rule: the config's problem_type if set; else regression for 1 label, else by the labels' dtype."""
    if config.problem_type is not None:
        return config.problem_type
    if config.num_labels == 1:
        return "regression"
    return "single_label_classification" if labels_are_integers else "multi_label_classification"


def check_head_mask(shape: Sequence[int], config: ViTConfig) -> None:
    """head_mask is (heads,) for every layer or (layers, heads)."""
    ok = (len(shape) == 1 and shape[0] == config.num_attention_heads) or (
        len(shape) == 2 and tuple(shape) == (config.num_hidden_layers, config.num_attention_heads)
    )
    if not ok:
        raise ImageError(
            f"head_mask must have shape ({config.num_attention_heads},) or ({config.num_hidden_layers}, "
            f"{config.num_attention_heads}), got {tuple(shape)}."
        )


def check_mim_stride(config: ViTConfig) -> None:
    """The MIM loss compares the reconstruction with the input: the decoder must upsample by the patch size."""
    if config.stride_hw != config.patch_hw:
        raise ValueError(
            f"With bool_masked_pos, patch_size ({config.patch_size}) must equal encoder_stride "
            f"({config.encoder_stride}), so that the reconstruction has the input's size."
        )
