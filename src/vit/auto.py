"""`AutoModel` and `AutoModelForImageClassification` (and their `TF` / `Flax` twins): the class from config.json.

As in transformers, the class is looked up by the config's `model_type`; where a task has several classes
(DeiT's classifier with and without the distillation head) the config's `architectures` picks one. vit holds
vision models only, so the two-tower `clip` and `siglip` model types give their vision tower's class.

Example:
    >>> from vit import AutoModel
    >>> model = AutoModel.from_pretrained("tests/fixtures/family/dinov2/safetensors")
    >>> type(model).__name__
    'Dinov2Model'
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .config import ViTConfig
from .errors import ConfigError

logger = logging.getLogger("vit")

# model_type -> class name (without the framework prefix), or a tuple of candidates told apart by
# `architectures`, the first being the default; transformers 4.57's mappings restricted to vit's families.
MODEL_MAPPING: dict[str, str | tuple[str, ...]] = {
    "vit": "ViTModel",
    "clip": "CLIPVisionModel",
    "clip_vision_model": "CLIPVisionModel",
    "siglip": "SiglipVisionModel",
    "siglip_vision_model": "SiglipVisionModel",
    "dinov2": "Dinov2Model",
    "dinov2_with_registers": "Dinov2WithRegistersModel",
    "deit": "DeiTModel",
}
IMAGE_CLASSIFICATION_MAPPING: dict[str, str | tuple[str, ...]] = {
    "vit": "ViTForImageClassification",
    "dinov2": "Dinov2ForImageClassification",
    "dinov2_with_registers": "Dinov2WithRegistersForImageClassification",
    "deit": ("DeiTForImageClassification", "DeiTForImageClassificationWithTeacher"),
}
PREFIXES = {"pt": "", "tf": "TF", "flax": "Flax"}
HUB_OPTIONS = ("revision", "cache_dir", "local_files_only", "token", "force_download", "subfolder")


def class_name_for(model_type: str, architectures: list[str] | None, mapping: dict, task: str) -> str:
    """The class name (no framework prefix) that transformers would pick for this model_type and task."""
    if model_type not in mapping:
        raise ConfigError(
            f"{task} has no class for model_type {model_type!r} in vit; it knows "
            f"{', '.join(sorted(mapping))}. (vit implements the ViT family's vision models only.)"
        )
    candidates = mapping[model_type]
    if isinstance(candidates, str):
        return candidates
    for architecture in architectures or []:
        for prefix in PREFIXES.values():
            if architecture.removeprefix(prefix) in candidates and architecture.startswith(prefix):
                return architecture.removeprefix(prefix)
    return candidates[0]


class _AutoClass:
    """Shared by the Auto classes; not instantiable, as in transformers."""

    framework = "pt"
    mapping: dict[str, str | tuple[str, ...]] = MODEL_MAPPING

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise OSError(f"{type(self).__name__} is designed to be instantiated with "
                      f"`{type(self).__name__}.from_pretrained(path)` or `{type(self).__name__}.from_config(config)`.")

    @classmethod
    def model_class(cls, model_type: str, architectures: list[str] | None = None):
        import vit

        name = class_name_for(model_type, architectures, cls.mapping, cls.__name__)
        return getattr(vit, PREFIXES[cls.framework] + name)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any, **kwargs: Any):
        """Read config.json, pick the class as transformers does, and load the weights with it."""
        config = kwargs.get("config")
        if not isinstance(config, ViTConfig):
            # A folder, a config.json or a hub id, with the hub options from_pretrained takes.
            hub = {k: kwargs[k] for k in HUB_OPTIONS if k in kwargs}
            config = ViTConfig.from_pretrained(pretrained_model_name_or_path, **hub)
        model_type, architectures = config.model_type, config.extra.get("architectures")
        if any(a in ("CLIPModel", "SiglipModel") for a in architectures or []):
            logger.info("vit has no two-tower model; %s loads the vision tower of %s.", cls.__name__, architectures[0])
        return cls.model_class(model_type, architectures).from_pretrained(pretrained_model_name_or_path, *model_args,
                                                                           **kwargs)

    @classmethod
    def from_config(cls, config: ViTConfig, **kwargs: Any):
        """A freshly initialised model of the class that this config's family and architectures call for."""
        if not isinstance(config, ViTConfig):
            raise TypeError(f"config must be a ViTConfig, got {type(config).__name__}")
        return cls.model_class(config.model_type, config.extra.get("architectures"))(config, **kwargs)


def _auto(name: str, framework: str, mapping: dict, doc: str) -> type:
    return type(name, (_AutoClass,), {"framework": framework, "mapping": mapping, "__doc__": doc,
                                      "__module__": __name__})


AutoModel = _auto("AutoModel", "pt", MODEL_MAPPING, "The PyTorch base model for a config.json (e.g. Dinov2Model).")
TFAutoModel = _auto("TFAutoModel", "tf", MODEL_MAPPING, "The TensorFlow base model for a config.json.")
FlaxAutoModel = _auto("FlaxAutoModel", "flax", MODEL_MAPPING, "The Flax base model for a config.json.")
AutoModelForImageClassification = _auto(
    "AutoModelForImageClassification", "pt", IMAGE_CLASSIFICATION_MAPPING,
    "The PyTorch image classifier for a config.json (e.g. DeiTForImageClassificationWithTeacher).")
TFAutoModelForImageClassification = _auto(
    "TFAutoModelForImageClassification", "tf", IMAGE_CLASSIFICATION_MAPPING,
    "The TensorFlow image classifier for a config.json.")
FlaxAutoModelForImageClassification = _auto(
    "FlaxAutoModelForImageClassification", "flax", IMAGE_CLASSIFICATION_MAPPING,
    "The Flax image classifier for a config.json.")
