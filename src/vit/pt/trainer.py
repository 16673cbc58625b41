"""`vit.Trainer`: HF's `transformers.Trainer`, saving vit models with their config.

transformers' Trainer calls `save_pretrained` only on its own `PreTrainedModel` (and peft's `PeftModel`); for any
other module it writes the bare state dict, so its checkpoints and `save_model()` output hold no config.json
and cannot be loaded back by name. This subclass saves a vit model through the model's own `save_pretrained`
(config.json, the weights, and the removal of stale weight files), and behaves exactly as Trainer otherwise.
transformers is imported only when this module is.
"""

from __future__ import annotations

import os

import transformers

from ..pretrained import PretrainedMixin


class Trainer(transformers.Trainer):
    """transformers.Trainer whose checkpoints and `save_model()` output load with `from_pretrained`.

    Example:
        >>> from vit import Trainer  # instead of `from transformers import Trainer`; the rest is unchanged
        >>> issubclass(Trainer, __import__("transformers").Trainer)
        True
    """

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if not isinstance(model, PretrainedMixin):
            return super()._save(output_dir, state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        model.save_pretrained(output_dir, state_dict=state_dict, safe_serialization=self.args.save_safetensors)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        import torch

        torch.save(self.args, os.path.join(output_dir, transformers.trainer.TRAINING_ARGS_NAME))
