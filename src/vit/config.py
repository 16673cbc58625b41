"""`ViTConfig`: the one architecture description shared by the PyTorch, TensorFlow and Flax models.

It reads and writes Hugging Face's `config.json`, keeps HF's defaults, and adds a few documented
extensions (non-square images and patches, more activations, mean pooling, `use_fc_norm`) whose
defaults keep HF behaviour.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError
from .files import atomic_write_text

CONFIG_NAME = "config.json"
logger = logging.getLogger("vit")

# Activations every framework implements identically; the aliases are HF's names.
ACTIVATIONS = ("gelu", "gelu_pytorch_tanh", "gelu_new", "quick_gelu", "relu", "silu", "swish", "tanh")
POOLER_ACTIVATIONS = ("tanh", "relu", "gelu", "gelu_pytorch_tanh", "gelu_new", "quick_gelu", "silu", "swish")
POOLING_ALIASES = {"cls": "cls", "token": "cls", "mean": "mean", "gap": "mean", "avg": "mean", "map": "map"}
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
# What the classifier reads: the pooled token ("sequence"), the dense pooler ("pooler", the original code's
# pre-logits), or DINOv2's class token concatenated with the mean of the patch tokens ("cls_and_mean").
CLASSIFIER_INPUTS = ("sequence", "pooler", "cls_and_mean")
# How position embeddings are resized to another grid: torch's bicubic (HF ViT, CLIP, SigLIP, DeiT, DINOv2),
# or with antialias (HF DINOv2 with registers, timm).
POSITION_INTERPOLATIONS = ("bicubic", "bicubic_antialias")

# ------------------------------------------------------------------------------------------ families
# A family is a configuration (the fields below) plus a column of names in `vit.params.MODULES`. These are the
# HF model_type of each family's vision model; the two-tower model types map to their vision tower.
VISION_MODEL_TYPES = {
    "vit": "vit",
    "clip": "clip_vision_model",
    "siglip": "siglip_vision_model",
    "dinov2": "dinov2",
    "dinov2_with_registers": "dinov2_with_registers",
    "deit": "deit",
}
FAMILY_OF_MODEL_TYPE = {
    **{model_type: family for family, model_type in VISION_MODEL_TYPES.items()},
    "clip": "clip",
    "siglip": "siglip",
}
TWO_TOWER_MODEL_TYPES = ("clip", "siglip")
# HF's defaults for the keys each family's config.json may omit (HF CLIPVisionConfig, SiglipVisionConfig,
# Dinov2Config, Dinov2WithRegistersConfig, DeiTConfig).
_FAMILY_HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "clip": dict(hidden_size=768, intermediate_size=3072, projection_dim=512, num_hidden_layers=12,
                 num_attention_heads=12, num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu",
                 layer_norm_eps=1e-5, attention_dropout=0.0, initializer_range=0.02),
    "siglip": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   num_channels=3, image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh",
                   layer_norm_eps=1e-6, attention_dropout=0.0, vision_use_head=True),
    "dinov2": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4, hidden_act="gelu",
                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.02,
                   layer_norm_eps=1e-6, image_size=224, patch_size=14, num_channels=3, qkv_bias=True,
                   layerscale_value=1.0, use_swiglu_ffn=False),
    "deit": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 hidden_act="gelu", layer_norm_eps=1e-12, image_size=224, patch_size=16, num_channels=3,
                 encoder_stride=16),
}
_FAMILY_HF_DEFAULTS["dinov2_with_registers"] = dict(_FAMILY_HF_DEFAULTS["dinov2"], num_register_tokens=4)
# Keys of the families' configs that carry no meaning for the vision model: kept in `extra`, written back.
FAMILY_KNOWN_KEYS: dict[str, frozenset[str]] = {
    "clip": frozenset({"initializer_factor", "dropout", "projection_dim"}),
    "siglip": frozenset({"initializer_factor"}),
    "dinov2": frozenset({"drop_path_rate", "out_features", "out_indices", "stage_names", "apply_layernorm",
                         "reshape_hidden_states", "use_mask_token", "mlp_ratio", "layerscale_value"}),
    "deit": frozenset(),
}
FAMILY_KNOWN_KEYS["dinov2_with_registers"] = FAMILY_KNOWN_KEYS["dinov2"] | {"num_register_tokens"}
# The extension fields whose values a family fixes; everything else keeps ViTConfig's default.
_EXTENSION_DEFAULTS: dict[str, Any] = dict(
    pooling="cls", use_fc_norm=False, class_token=True, classifier_input="sequence", pre_layernorm=False,
    layer_scale_init_value=None, num_register_tokens=0, distillation_token=False, use_swiglu_ffn=False,
    pooler_dense=True, projection_dim=None, patch_embedding_bias=True, no_embed_class=False,
    position_interpolation="bicubic", always_interpolate_pos_encoding=False,
)


def _dinov2_mlp_width(hidden_size: int, mlp_ratio: float, swiglu: bool) -> int:
    """HF Dinov2's MLP width; its SwiGLU shrinks it to 2/3 and rounds up to a multiple of 8."""
    width = int(hidden_size * mlp_ratio)
    return (int(width * 2 / 3) + 7) // 8 * 8 if swiglu else width


def family_kwargs(data: Mapping[str, Any]) -> dict[str, Any]:
    """ViTConfig keyword arguments from an HF config.json of any family (ViT's is returned as it is).

    Two-tower configs (CLIPModel, SiglipModel) give their `vision_config`; the text tower is ignored.
    """
    model_type = data.get("model_type") or "vit"
    family = FAMILY_OF_MODEL_TYPE.get(model_type)
    if family is None:
        # Read as a ViT, as before families existed: the weights then say what the file really is.
        warnings.warn(f"config model_type is {model_type!r}, not one of vit's families "
                      f"({', '.join(sorted(FAMILY_OF_MODEL_TYPE))}); reading it as a ViT config.", stacklevel=3)
        family = "vit"
    data = {k: v for k, v in data.items() if k != "model_type"}
    if family == "vit":
        return data
    if model_type in TWO_TOWER_MODEL_TYPES:
        vision = data.get("vision_config")
        if not isinstance(vision, Mapping):
            raise ConfigError(f"A {model_type!r} config must hold a `vision_config` object; this one has none.")
        logger.debug("%s config: using its vision tower (vision_config); the text tower is ignored.", model_type)
        # HF's bookkeeping keys of the outer config still describe the file (architectures, dtype, ...).
        outer = {k: data[k] for k in ("architectures", "dtype", "torch_dtype", "transformers_version") if k in data}
        data = {**{k: v for k, v in vision.items() if k != "model_type"}, **outer}
    hf = {**_FAMILY_HF_DEFAULTS[family], **data}
    out: dict[str, Any] = dict(family=family)
    if family in ("clip", "siglip"):
        out.update(
            attention_probs_dropout_prob=hf.pop("attention_dropout"),
            class_token=family == "clip",
            pre_layernorm=family == "clip",
            patch_embedding_bias=family == "siglip",
            pooler_dense=False,
        )
        if family == "clip":
            # CLIP's post_layernorm norms the pooled class token only: our fc_norm after class pooling.
            out.update(use_fc_norm=True, projection_dim=hf.pop("projection_dim"))
        else:
            if not hf.pop("vision_use_head"):
                raise ConfigError("SigLIP configs with vision_use_head=false (no attention-pool head) are not "
                                  "supported: their pooler_output is None. Use a checkpoint with the head.")
            out.update(pooling="map")
    elif family in ("dinov2", "dinov2_with_registers"):
        swiglu = bool(hf.pop("use_swiglu_ffn"))
        out.update(
            intermediate_size=_dinov2_mlp_width(hf["hidden_size"], hf["mlp_ratio"], swiglu),
            use_swiglu_ffn=swiglu,
            layer_scale_init_value=hf["layerscale_value"],
            pooler_dense=False,
            classifier_input="cls_and_mean",
            always_interpolate_pos_encoding=True,
        )
        if family == "dinov2_with_registers":
            out.update(num_register_tokens=hf.pop("num_register_tokens"), position_interpolation="bicubic_antialias")
    elif family == "deit":
        out.update(distillation_token=True)
    for key, value in hf.items():
        out.setdefault(key, value)
    return out


def _family_hf_dict(config: ViTConfig) -> dict[str, Any]:
    """The HF config.json keys of a family's vision model, from a ViTConfig."""
    family = config.family
    common = dict(hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
                  num_attention_heads=config.num_attention_heads, num_channels=config.num_channels,
                  image_size=config.image_size, patch_size=config.patch_size, hidden_act=config.hidden_act,
                  layer_norm_eps=config.layer_norm_eps, initializer_range=config.initializer_range)
    if family in ("clip", "siglip"):
        out = dict(common, intermediate_size=config.intermediate_size,
                   attention_dropout=config.attention_probs_dropout_prob)
        if family == "clip" and config.projection_dim is not None:
            out["projection_dim"] = config.projection_dim
        return out
    out = dict(common, hidden_dropout_prob=config.hidden_dropout_prob,
               attention_probs_dropout_prob=config.attention_probs_dropout_prob, qkv_bias=config.qkv_bias)
    if family == "deit":
        out.update(intermediate_size=config.intermediate_size, encoder_stride=config.encoder_stride,
                   pooler_output_size=config.pooler_output_size, pooler_act=config.pooler_act)
        return out
    # DINOv2 states its MLP width as a ratio; write one that gives our width back.
    ratio = config.extra.get("mlp_ratio")
    if ratio is None or _dinov2_mlp_width(config.hidden_size, ratio, config.use_swiglu_ffn) != config.intermediate_size:
        if config.use_swiglu_ffn:
            raise ConfigError("Cannot write a DINOv2 SwiGLU config whose intermediate_size no mlp_ratio gives; "
                              "keep `mlp_ratio` in config.extra.")
        ratio = config.intermediate_size / config.hidden_size
        ratio = int(ratio) if float(ratio).is_integer() else ratio
    out.update(mlp_ratio=ratio, use_swiglu_ffn=config.use_swiglu_ffn,
               layerscale_value=config.layer_scale_init_value if config.layer_scale_init_value is not None else 1.0)
    if family == "dinov2_with_registers":
        out["num_register_tokens"] = config.num_register_tokens
    return out

# Keys that HF's PretrainedConfig writes or accepts. We accept them silently; the ones that carry meaning
# for a ViT are fields below, the rest are kept in `extra` so that a read-then-write round trip keeps them.
HF_KNOWN_KEYS = frozenset(
    """
    architectures torch_dtype dtype transformers_version model_type _name_or_path _commit_hash
    _attn_implementation_autoset return_dict output_hidden_states output_attentions torchscript use_bfloat16
    tf_legacy_loss pruned_heads tie_word_embeddings chunk_size_feed_forward is_encoder_decoder is_decoder
    cross_attention_hidden_size add_cross_attention tie_encoder_decoder finetuning_task tokenizer_class prefix
    bos_token_id pad_token_id eos_token_id sep_token_id decoder_start_token_id task_specific_params
    max_length min_length do_sample early_stopping num_beams num_beam_groups diversity_penalty temperature
    top_k top_p typical_p repetition_penalty length_penalty no_repeat_ngram_size
    encoder_no_repeat_ngram_size bad_words_ids num_return_sequences output_scores return_dict_in_generate
    forced_bos_token_id forced_eos_token_id remove_invalid_values exponential_decay_length_penalty
    suppress_tokens begin_suppress_tokens gradient_checkpointing use_cache
    """.split()
)

# Presets of the published architectures (no weights): name -> (hidden, layers, heads, mlp).
_WIDTHS = {
    "tiny": (192, 12, 3, 768),
    "small": (384, 12, 6, 1536),
    "base": (768, 12, 12, 3072),
    "large": (1024, 24, 16, 4096),
    "huge": (1280, 32, 16, 5120),
}
PRESETS = {
    f"vit-{width}-patch{patch}-{size}": dict(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=mlp,
        patch_size=patch, image_size=size, encoder_stride=patch,
    )
    for width, (hidden, layers, heads, mlp) in _WIDTHS.items()
    for patch in (8, 14, 16, 32)
    for size in (224, 384)
}


def to_pair(value: Any, field: str) -> tuple[int, int]:
    """An int or a [h, w] pair as a (h, w) tuple of positive ints; names the field on error."""
    if isinstance(value, bool):
        raise ConfigError(f"`{field}` must be an int or a [height, width] pair, got {value!r}.")
    if isinstance(value, int):
        pair = (value, value)
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ConfigError(f"`{field}` must be an int or a [height, width] pair of ints, got {value!r}.")
    if min(pair) <= 0:
        raise ConfigError(f"`{field}` must be positive, got {value!r}.")
    return pair


def check_model_family(model_class: type, config: ViTConfig) -> None:
    """A family's class (CLIPVisionModel, ...) takes that family's config only; the ViT classes take any."""
    families = getattr(model_class, "families", ())
    if families and config.family not in families:
        raise ConfigError(
            f"{model_class.__name__} needs a {' or '.join(families)} config (family={families[0]!r}), got "
            f"family={config.family!r}. Read the family's config.json with ViTConfig.from_pretrained, or use the "
            "ViT class of the same head, which takes any family."
        )


class ViTConfig:
    """Configuration of a Vision Transformer, compatible with Hugging Face's `config.json`.

    Every field of HF's `ViTConfig` is here with HF's default. Extensions beyond HF (all default to HF's
    behaviour):

    - `image_size`, `patch_size` and `encoder_stride` accept an int or a `[height, width]` pair;
    - `hidden_act` may be "gelu" (erf), "gelu_pytorch_tanh"/"gelu_new" (tanh approximation), "quick_gelu",
      "relu" or "silu";
    - `pooling` is "cls" (HF, default) or "mean"; the aliases "token" and "gap" (original code) and "avg"
      (timm) are accepted;
    - `use_fc_norm`: timm's LayerNorm after mean pooling instead of before it;
    - `class_token`: False for checkpoints without a class token (big_vision's 'gap' models);
    - `representation_size` is not a field: the original code's pre-logits layer is the pooler
      (`pooler_output_size`, `pooler_act`), which the classifier reads when `classifier_input="pooler"`.

    Example:
        >>> from vit import ViTConfig
        >>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
        ...                    num_attention_heads=4, intermediate_size=64)
        >>> config.num_patches
        16
        >>> ViTConfig.from_preset("vit-base-patch16-224").hidden_size
        768
    """

    def __init__(
        self,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        image_size: int | list[int] = 224,
        patch_size: int | list[int] = 16,
        num_channels: int = 3,
        qkv_bias: bool = True,
        encoder_stride: int | list[int] = 16,
        pooler_output_size: int | None = None,
        pooler_act: str = "tanh",
        pooling: str = "cls",
        use_fc_norm: bool = False,
        class_token: bool = True,
        classifier_input: str = "sequence",
        family: str = "vit",
        pre_layernorm: bool = False,
        layer_scale_init_value: float | None = None,
        num_register_tokens: int = 0,
        distillation_token: bool = False,
        use_swiglu_ffn: bool = False,
        pooler_dense: bool = True,
        projection_dim: int | None = None,
        patch_embedding_bias: bool = True,
        no_embed_class: bool = False,
        position_interpolation: str = "bicubic",
        always_interpolate_pos_encoding: bool = False,
        id2label: Mapping[int | str, str] | None = None,
        label2id: Mapping[str, int] | None = None,
        num_labels: int | None = None,
        problem_type: str | None = None,
        attn_implementation: str = "sdpa",
        **kwargs: Any,
    ) -> None:
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.image_size = list(image_size) if isinstance(image_size, (list, tuple)) else image_size
        self.patch_size = list(patch_size) if isinstance(patch_size, (list, tuple)) else patch_size
        self.num_channels = num_channels
        self.qkv_bias = qkv_bias
        self.encoder_stride = list(encoder_stride) if isinstance(encoder_stride, (list, tuple)) else encoder_stride
        self.pooler_output_size = pooler_output_size if pooler_output_size is not None else hidden_size
        self.pooler_act = pooler_act
        self.pooling = POOLING_ALIASES.get(pooling, pooling) if isinstance(pooling, str) else pooling
        self.use_fc_norm = use_fc_norm
        self.class_token = class_token
        self.classifier_input = classifier_input
        self.family = family
        self.pre_layernorm = pre_layernorm
        self.layer_scale_init_value = layer_scale_init_value
        self.num_register_tokens = num_register_tokens
        self.distillation_token = distillation_token
        self.use_swiglu_ffn = use_swiglu_ffn
        self.pooler_dense = pooler_dense
        self.projection_dim = projection_dim
        self.patch_embedding_bias = patch_embedding_bias
        self.no_embed_class = no_embed_class
        self.position_interpolation = position_interpolation
        self.always_interpolate_pos_encoding = always_interpolate_pos_encoding
        self.problem_type = problem_type
        self.attn_implementation = kwargs.pop("_attn_implementation", None) or attn_implementation
        # HF's forward defaults: a model's call falls back to these when an argument is None.
        self.return_dict = kwargs.pop("return_dict", True)
        self.output_attentions = kwargs.pop("output_attentions", False)
        self.output_hidden_states = kwargs.pop("output_hidden_states", False)
        self._set_labels(id2label, label2id, num_labels)
        # HF's bookkeeping keys (architectures, transformers_version, ...) survive a read-then-write.
        self.extra: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key not in HF_KNOWN_KEYS and key not in FAMILY_KNOWN_KEYS.get(family, ()):
                warnings.warn(
                    f"ViTConfig: unknown key {key!r} (neither HF's ViTConfig nor vit knows it); it is kept "
                    "in `config.extra` but has no effect. Check the spelling.",
                    stacklevel=2,
                )
            self.extra[key] = value
        self.validate()

    # ----------------------------------------------------------------------------------------- labels
    def _set_labels(self, id2label, label2id, num_labels) -> None:
        if id2label is not None:
            if not isinstance(id2label, Mapping):
                raise ConfigError(f"`id2label` must be a mapping from class index to name, got {type(id2label).__name__}.")
            try:
                self.id2label = {int(k): str(v) for k, v in id2label.items()}
            except (TypeError, ValueError) as err:
                raise ConfigError(f"`id2label` keys must be integers, got {list(id2label)[:5]}.") from err
            if num_labels is not None and num_labels != len(self.id2label):
                # HF lets num_labels win when the two disagree; so do we, but loudly.
                warnings.warn(
                    f"ViTConfig: num_labels={num_labels} disagrees with id2label ({len(self.id2label)} entries); "
                    "using num_labels and generic label names.",
                    stacklevel=3,
                )
                self.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
        else:
            n = 2 if num_labels is None else num_labels
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ConfigError(f"`num_labels` must be a non-negative int, got {num_labels!r}.")
            self.id2label = {i: f"LABEL_{i}" for i in range(n)}
        inverse = {name: i for i, name in self.id2label.items()}
        given = {str(k): int(v) for k, v in label2id.items()} if label2id is not None else None
        if given is not None and given != inverse:
            if len(inverse) < len(self.id2label):  # repeated names cannot be inverted: keep the given mapping
                inverse = given
            else:
                warnings.warn("ViTConfig: label2id does not invert id2label; using the inverse of id2label.",
                              stacklevel=3)
        self.label2id = inverse

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, n: int) -> None:
        self._set_labels(None, None, n)

    # ------------------------------------------------------------------------------------ geometry
    @property
    def image_hw(self) -> tuple[int, int]:
        return to_pair(self.image_size, "image_size")

    @property
    def patch_hw(self) -> tuple[int, int]:
        return to_pair(self.patch_size, "patch_size")

    @property
    def stride_hw(self) -> tuple[int, int]:
        return to_pair(self.encoder_stride, "encoder_stride")

    @property
    def grid_hw(self) -> tuple[int, int]:
        (h, w), (ph, pw) = self.image_hw, self.patch_hw
        return h // ph, w // pw

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid_hw
        return gh * gw

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: class token, distillation token, then register tokens."""
        return int(self.class_token) + int(self.distillation_token) + self.num_register_tokens

    @property
    def num_position_prefix_tokens(self) -> int:
        """Prefix tokens that have a position embedding: class and distillation tokens (not with
        `no_embed_class`, timm's layout), never register tokens (HF's and timm's DINOv2)."""
        return 0 if self.no_embed_class else int(self.class_token) + int(self.distillation_token)

    @property
    def num_positions(self) -> int:
        """Rows of the position-embedding table."""
        return self.num_patches + self.num_position_prefix_tokens

    @property
    def model_type(self) -> str:
        """HF's model_type of this family's vision model (written to config.json)."""
        return VISION_MODEL_TYPES[self.family]

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def use_return_dict(self) -> bool:
        return bool(self.return_dict)

    # HF's bookkeeping, read by transformers' pipeline and Trainer.
    @property
    def name_or_path(self) -> str:
        return self.extra.get("_name_or_path", "")

    @name_or_path.setter
    def name_or_path(self, value: str) -> None:
        self.extra["_name_or_path"] = str(value)

    @property
    def _commit_hash(self) -> str | None:
        return self.extra.get("_commit_hash")

    # ---------------------------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise `ConfigError` naming the first field that is wrong and how to fix it."""
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "num_channels", "pooler_output_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"`{name}` must be an int, got {value!r} ({type(value).__name__}).")
            if value <= 0 and not (name == "num_hidden_layers" and value == 0):
                raise ConfigError(f"`{name}` must be positive, got {value}.")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(f"`{name}` must be a probability in [0, 1), got {value!r}.")
        for name in ("layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
                raise ConfigError(f"`{name}` must be a positive number, got {value!r}.")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads="
                f"{self.num_attention_heads}; pick a head count that divides the width "
                f"(e.g. {self.hidden_size // 64 or 1})."
            )
        (h, w), (ph, pw) = self.image_hw, self.patch_hw
        to_pair(self.encoder_stride, "encoder_stride")
        if h % ph or w % pw:
            raise ConfigError(
                f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}; "
                "choose an image size that is a multiple of the patch size."
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"`hidden_act`={self.hidden_act!r} is not supported; choose one of {ACTIVATIONS}.")
        if self.pooler_act not in POOLER_ACTIVATIONS:
            raise ConfigError(f"`pooler_act`={self.pooler_act!r} is not supported; choose one of {POOLER_ACTIVATIONS}.")
        if self.pooling not in ("cls", "mean", "map"):
            raise ConfigError(f"`pooling`={self.pooling!r} is not supported; choose one of {sorted(POOLING_ALIASES)}.")
        if self.pooling == "cls" and not self.class_token:
            raise ConfigError("pooling='cls' needs a class token; set pooling='mean' or class_token=True.")
        if self.use_fc_norm and self.pooling == "map":
            raise ConfigError("use_fc_norm=True norms the pooled token, but the MAP head has its own norm; "
                              "set use_fc_norm=False with pooling='map'.")
        if self.classifier_input not in CLASSIFIER_INPUTS:
            raise ConfigError(f"`classifier_input` must be one of {CLASSIFIER_INPUTS}, got {self.classifier_input!r}.")
        if self.classifier_input == "cls_and_mean" and not self.class_token:
            raise ConfigError("classifier_input='cls_and_mean' (DINOv2's head) needs a class token; set class_token=True.")
        if self.classifier_input == "pooler" and not self.pooler_dense:
            raise ConfigError("classifier_input='pooler' reads the dense pooler; set pooler_dense=True.")
        if self.family not in VISION_MODEL_TYPES:
            raise ConfigError(f"`family`={self.family!r} is not known; choose one of {sorted(VISION_MODEL_TYPES)}.")
        for name in ("pre_layernorm", "distillation_token", "use_swiglu_ffn", "pooler_dense", "patch_embedding_bias",
                     "no_embed_class", "always_interpolate_pos_encoding", "class_token", "use_fc_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"`{name}` must be true or false, got {getattr(self, name)!r}.")
        if self.distillation_token and not self.class_token:
            raise ConfigError("distillation_token=True (DeiT) needs a class token before it; set class_token=True.")
        if isinstance(self.num_register_tokens, bool) or not isinstance(self.num_register_tokens, int) \
                or self.num_register_tokens < 0:
            raise ConfigError(f"`num_register_tokens` must be a non-negative int, got {self.num_register_tokens!r}.")
        value = self.layer_scale_init_value
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise ConfigError(f"`layer_scale_init_value` must be a number (LayerScale) or null (none), got {value!r}.")
        value = self.projection_dim
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ConfigError(f"`projection_dim` must be a positive int or null, got {value!r}.")
        if self.position_interpolation not in POSITION_INTERPOLATIONS:
            raise ConfigError(f"`position_interpolation` must be one of {POSITION_INTERPOLATIONS}, "
                              f"got {self.position_interpolation!r}.")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ConfigError(f"`problem_type`={self.problem_type!r} is not one of {PROBLEM_TYPES} (or null).")
        if self.attn_implementation not in ("sdpa", "eager"):
            raise ConfigError(f"`attn_implementation` must be 'sdpa' or 'eager', got {self.attn_implementation!r}.")
        if not isinstance(self.qkv_bias, bool):
            raise ConfigError(f"`qkv_bias` must be true or false, got {self.qkv_bias!r}.")

    # -------------------------------------------------------------------------------- construction
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ViTConfig:
        """The architecture of a published ViT (no weights), e.g. "vit-base-patch16-224"."""
        if name not in PRESETS:
            raise ConfigError(f"Unknown preset {name!r}. Known presets: {', '.join(sorted(PRESETS))}.")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **overrides: Any) -> ViTConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"A config must be a JSON object, got {type(data).__name__}.")
        data = family_kwargs(data)  # HF's CLIP, SigLIP, DINOv2 and DeiT configs become ViTConfig fields
        try:
            return cls(**{**data, **overrides})
        except TypeError as err:
            raise ConfigError(f"Invalid config: {err}") from err

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, **overrides: Any) -> ViTConfig:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON ({err}); fix or regenerate the file.") from err
        except OSError as err:
            raise ConfigError(f"Cannot read {path}: {err}") from err
        try:
            return cls.from_dict(data, **overrides)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides: Any) -> ViTConfig:
        """Read `config.json` from a local folder (or the file itself) or a hub id.

        The hub options of `from_pretrained` (revision, cache_dir, local_files_only, token, force_download,
        subfolder) are accepted; the other keyword arguments override fields.
        """
        from .hub import HubOptions, resolve

        hub = HubOptions.pop_from(overrides)
        path = os.fspath(path)
        if os.path.isfile(path):
            return cls.from_json_file(path, **overrides)
        folder = resolve(path, hub, weights=False)
        return cls.from_json_file(os.path.join(folder, CONFIG_NAME), **overrides)

    # ------------------------------------------------------------------------------------ writing
    def to_dict(self) -> dict[str, Any]:
        if self.family != "vit":
            return self._family_to_dict()
        out: dict[str, Any] = dict(self.extra)
        out.update(
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            hidden_act=self.hidden_act,
            hidden_dropout_prob=self.hidden_dropout_prob,
            attention_probs_dropout_prob=self.attention_probs_dropout_prob,
            initializer_range=self.initializer_range,
            layer_norm_eps=self.layer_norm_eps,
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_channels=self.num_channels,
            qkv_bias=self.qkv_bias,
            encoder_stride=self.encoder_stride,
            pooler_output_size=self.pooler_output_size,
            pooler_act=self.pooler_act,
            id2label={str(k): v for k, v in self.id2label.items()},
            label2id=dict(self.label2id),
            model_type=self.model_type,
        )
        if self.problem_type is not None:
            out["problem_type"] = self.problem_type
        for name, hf_default in (("return_dict", True), ("output_attentions", False), ("output_hidden_states", False)):
            if getattr(self, name) != hf_default:
                out[name] = getattr(self, name)
        # Extensions are written only when they differ from HF, so HF can read our configs.
        for name, hf_default in _EXTENSION_DEFAULTS.items():
            if getattr(self, name) != hf_default:
                out[name] = getattr(self, name)
        return dict(sorted(out.items()))

    def _family_to_dict(self) -> dict[str, Any]:
        """HF's config.json of the family's vision model, plus the extensions that differ from the family's."""
        out: dict[str, Any] = dict(self.extra)
        out.update(_family_hf_dict(self), model_type=self.model_type)
        if self.num_labels != 2 or any(name != f"LABEL_{i}" for i, name in self.id2label.items()):
            out.update(id2label={str(k): v for k, v in self.id2label.items()}, label2id=dict(self.label2id))
        if self.problem_type is not None:
            out["problem_type"] = self.problem_type
        for name, hf_default in (("return_dict", True), ("output_attentions", False), ("output_hidden_states", False)):
            if getattr(self, name) != hf_default:
                out[name] = getattr(self, name)
        implied = family_kwargs(out)
        for name, vit_default in _EXTENSION_DEFAULTS.items():
            if getattr(self, name) != implied.get(name, vit_default):
                out[name] = getattr(self, name)
        return dict(sorted(out.items()))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        os.makedirs(folder, exist_ok=True)
        atomic_write_text(os.path.join(folder, CONFIG_NAME), self.to_json_string())

    def copy(self, **overrides: Any) -> ViTConfig:
        """A validated copy with some fields changed."""
        new = copy.deepcopy(self)
        labels = {k: overrides.pop(k) for k in ("id2label", "label2id", "num_labels") if k in overrides}
        if labels:
            # Labels change together: int id2label keys and a label2id that inverts them, as HF's configs have.
            id2label = labels.get("id2label")
            if id2label is None and "label2id" in labels and "num_labels" not in labels:
                id2label = {int(i): name for name, i in labels["label2id"].items()}
            new._set_labels(id2label, labels.get("label2id"), labels.get("num_labels"))
        for key, value in overrides.items():
            if key == "pooling":
                new.pooling = POOLING_ALIASES.get(value, value)
            elif hasattr(new, key) and key != "extra":
                setattr(new, key, value)
            else:
                raise ConfigError(f"ViTConfig has no field {key!r}.")
        new.validate()
        return new

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ViTConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"ViTConfig {self.to_json_string()}"
