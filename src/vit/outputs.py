"""Model outputs with Hugging Face's field names, shared by the three frameworks.

Like HF's `ModelOutput`, an output is a dataclass that also behaves like an ordered mapping and a tuple:
`out.logits`, `out["logits"]` and `out[0]` all work, `to_tuple()` drops the fields that are None, and
`return_dict=False` returns exactly that tuple.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any


class ModelOutput:
    """Base of the output dataclasses: attribute, key and index access; None fields are skipped."""

    def _present(self) -> list[tuple[str, Any]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]

    def keys(self) -> list[str]:
        return [k for k, _ in self._present()]

    def values(self) -> list[Any]:
        return [v for _, v in self._present()]

    def items(self) -> list[tuple[str, Any]]:
        return self._present()

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(self.values())

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            return dict(self._present())[key]
        return self.to_tuple()[key]

    def __contains__(self, key: str) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._present())


@dataclass
class BaseModelOutputWithPooling(ModelOutput):
    """The output of `ViTModel`: the encoder's sequence, the pooled output, and optional per-layer values."""

    last_hidden_state: Any = None
    pooler_output: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None


@dataclass
class ImageClassifierOutput(ModelOutput):
    """The output of `ViTForImageClassification`."""

    loss: Any = None
    logits: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None


@dataclass
class MaskedImageModelingOutput(ModelOutput):
    """The output of `ViTForMaskedImageModeling`; `logits` is HF's deprecated alias of `reconstruction`."""

    loss: Any = None
    reconstruction: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None

    @property
    def logits(self) -> Any:
        return self.reconstruction


@dataclass
class ImageEmbeddingsOutput(ModelOutput):
    """The output of `CLIPVisionModelWithProjection` (HF's `CLIPVisionModelOutput`): the projected `image_embeds`
    (the pooled class token through `visual_projection`), then the encoder's values."""

    image_embeds: Any = None
    last_hidden_state: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None


CLIPVisionModelOutput = ImageEmbeddingsOutput


@dataclass
class ImageClassifierWithTeacherOutput(ModelOutput):
    """The output of `DeiTForImageClassificationWithTeacher`: `logits` is the mean of the class-token head's
    `cls_logits` and the distillation-token head's `distillation_logits`, as in HF (inference only, no loss)."""

    logits: Any = None
    cls_logits: Any = None
    distillation_logits: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None


DeiTForImageClassificationWithTeacherOutput = ImageClassifierWithTeacherOutput
