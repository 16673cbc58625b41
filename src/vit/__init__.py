"""vit: one Vision Transformer in PyTorch, TensorFlow and JAX/Flax, with the same numbers from the same weights.

Every public class is exported lazily: `import vit` imports no framework, `vit.ViTModel` imports only
PyTorch, `vit.TFViTModel` only TensorFlow, `vit.FlaxViTModel` only JAX and Flax.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # shared
    "ViTConfig": "vit.config",
    "ViTImageProcessor": "vit.processor",
    "ViTFeatureExtractor": "vit.processor",
    "BatchFeature": "vit.processor",
    "CLIPImageProcessor": "vit.processor",
    "SiglipImageProcessor": "vit.processor",
    "BitImageProcessor": "vit.processor",
    "DeiTImageProcessor": "vit.processor",
    "AutoImageProcessor": "vit.processor",
    "BaseModelOutputWithPooling": "vit.outputs",
    "ImageClassifierOutput": "vit.outputs",
    "MaskedImageModelingOutput": "vit.outputs",
    "ImageEmbeddingsOutput": "vit.outputs",
    "CLIPVisionModelOutput": "vit.outputs",
    "ImageClassifierWithTeacherOutput": "vit.outputs",
    "DeiTForImageClassificationWithTeacherOutput": "vit.outputs",
    # Auto classes: the class named by config.json (each imports only its own framework, when called)
    **{f"{prefix}{name}": "vit.auto" for prefix in ("", "TF", "Flax")
       for name in ("AutoModel", "AutoModelForImageClassification")},
    "ViTError": "vit.errors",
    "ConfigError": "vit.errors",
    "CheckpointError": "vit.errors",
    "ImageError": "vit.errors",
    "HubError": "vit.errors",
    # PyTorch
    "ViTPreTrainedModel": "vit.pt.modeling",
    "ViTModel": "vit.pt.modeling",
    "ViTForImageClassification": "vit.pt.modeling",
    "ViTForMaskedImageModeling": "vit.pt.modeling",
    "Trainer": "vit.pt.trainer",
    # TensorFlow
    "TFViTPreTrainedModel": "vit.tf.modeling",
    "TFViTModel": "vit.tf.modeling",
    "TFViTForImageClassification": "vit.tf.modeling",
    "TFViTForMaskedImageModeling": "vit.tf.modeling",
    # Flax
    "FlaxViTPreTrainedModel": "vit.flax.modeling",
    "FlaxViTModel": "vit.flax.modeling",
    "FlaxViTForImageClassification": "vit.flax.modeling",
    "FlaxViTForMaskedImageModeling": "vit.flax.modeling",
}

# The ViT family: thin subclasses of the ViT classes that fix the family, the head and HF's architecture name,
# in every framework.
FAMILY_CLASSES = (
    "ViTForImageClassificationWithTeacher", "ViTWithProjection",
    "CLIPVisionModel", "CLIPVisionModelWithProjection", "SiglipVisionModel",
    "Dinov2Model", "Dinov2ForImageClassification", "Dinov2WithRegistersModel",
    "Dinov2WithRegistersForImageClassification", "DeiTModel", "DeiTForImageClassification",
    "DeiTForImageClassificationWithTeacher",
)
for _name in FAMILY_CLASSES:
    for _prefix, _module in (("", "vit.pt.modeling"), ("TF", "vit.tf.modeling"), ("Flax", "vit.flax.modeling")):
        _EXPORTS[_prefix + _name] = _module

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


if TYPE_CHECKING:  # pragma: no cover
    from .config import ViTConfig
    from .errors import CheckpointError, ConfigError, HubError, ImageError, ViTError
    from .flax.modeling import FlaxViTForImageClassification, FlaxViTForMaskedImageModeling, FlaxViTModel
    from .outputs import BaseModelOutputWithPooling, ImageClassifierOutput, MaskedImageModelingOutput
    from .processor import (
        AutoImageProcessor,
        BatchFeature,
        BitImageProcessor,
        CLIPImageProcessor,
        DeiTImageProcessor,
        SiglipImageProcessor,
        ViTFeatureExtractor,
        ViTImageProcessor,
    )
    from .pt.modeling import ViTForImageClassification, ViTForMaskedImageModeling, ViTModel
    from .tf.modeling import TFViTForImageClassification, TFViTForMaskedImageModeling, TFViTModel
