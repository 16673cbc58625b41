"""`from_pretrained` / `save_pretrained`, written once for the three frameworks.

A framework's model class mixes in `PretrainedMixin` and provides two methods that move a canonical state
dict (`{HF PyTorch name: numpy array}`) in and out of its own parameters. Everything else, reading any HF
file, checking it against the parameter table, resizing position embeddings and writing files
atomically, happens here, once.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import os
from typing import Any, ClassVar

import numpy as np

from .checkpoint import fit_state_dict, init_state, read_canonical, save_checkpoint
from .config import ViTConfig
from .errors import ConfigError
from .hub import HubOptions, resolve
from .params import parameter_specs

_SKIP_INIT = contextvars.ContextVar("vit_skip_init", default=False)


@contextlib.contextmanager
def skip_init():
    """Within this block, models skip their random initialisation (from_pretrained overwrites it anyway)."""
    token = _SKIP_INIT.set(True)
    try:
        yield
    finally:
        _SKIP_INIT.reset(token)


def init_is_skipped() -> bool:
    return _SKIP_INIT.get()


COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def dtype_name(dtype: Any) -> str:
    """The name ("float32", "bfloat16" or "float16") of a dtype given in any framework's spelling.

    Takes a string, a `torch.dtype`, a `tf.DType`, a `jnp`/NumPy dtype or scalar type, without importing any
    framework, so that `from_pretrained(..., dtype=...)` means the same in all three.

    >>> import numpy as np
    >>> dtype_name("bfloat16"), dtype_name(np.float16), dtype_name(np.dtype("float32"))
    ('bfloat16', 'float16', 'float32')
    """
    if isinstance(dtype, str):
        name = dtype
    elif type(dtype).__module__.startswith("torch"):
        name = str(dtype).removeprefix("torch.")  # str(torch.bfloat16) == "torch.bfloat16"
    elif isinstance(getattr(dtype, "name", None), str) and not isinstance(dtype, type):
        name = dtype.name  # tf.DType, np.dtype
    else:
        try:
            name = np.dtype(dtype).name  # jnp.bfloat16 and np.float16 are scalar types
        except TypeError:
            name = repr(dtype)
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; pass one of {', '.join(COMPUTE_DTYPES)} "
                         "(as a string or the framework's dtype object).")
    return name


class PretrainedMixin:
    """The checkpoint API that the PyTorch, TensorFlow and Flax models share."""

    head: ClassVar[str] = "base"  # "base", "classification" or "mim": which parameter-table rows
    hf_architecture: ClassVar[str] = "ViTModel"  # written to config.json's `architectures`
    config: ViTConfig

    # Implemented by each framework.
    def canonical_state_dict(self) -> dict[str, np.ndarray]:
        """The parameters as `{HF PyTorch name: numpy array in PyTorch layout}`."""
        raise NotImplementedError

    def load_canonical_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Set parameters from canonical names and arrays; names not given keep their values."""
        raise NotImplementedError

    # Shared.
    @property
    def model_flags(self) -> tuple[bool | None, bool | None]:
        """(add_pooling_layer, use_mask_token) of this model; None means the head's default."""
        return getattr(self, "add_pooling_layer", None), getattr(self, "use_mask_token", None)

    def parameter_specs(self):
        return parameter_specs(self.config, self.head, *self.model_flags)

    def init_weights(self, seed: int = 0) -> None:
        """HF's initialisation (see `vit.checkpoint.init_state`), the same numbers in every framework."""
        self.load_canonical_state_dict(init_state(self.config, self.parameter_specs(), seed))

    def num_parameters(self, only_trainable: bool = False) -> int:
        """The number of parameters (a framework that can freeze some counts only the trainable on request)."""
        return int(sum(int(np.prod(spec.shape)) for spec in self.parameter_specs().values()))

    @property
    def name_or_path(self) -> str:
        """The folder or hub id the model was loaded from ("" for a new model), as HF's `name_or_path`."""
        return self.config.name_or_path

    def _output_flags(self, output_attentions: bool | None, output_hidden_states: bool | None,
                      return_dict: bool | None) -> tuple[bool, bool, bool]:
        """HF's rule for a forward's flags: an argument left as None takes the config's value."""
        config = self.config
        return (bool(config.output_attentions if output_attentions is None else output_attentions),
                bool(config.output_hidden_states if output_hidden_states is None else output_hidden_states),
                bool(config.return_dict if return_dict is None else return_dict))

    @classmethod
    def _split_kwargs(cls, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Split from_pretrained's kwargs into the model constructor's and config overrides."""
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "config"}
        model_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in accepted}
        return model_kwargs, kwargs

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args: Any,
        config: ViTConfig | None = None,
        ignore_mismatched_sizes: bool = False,
        pos_embed_resize: str = "bicubic",
        seed: int = 0,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        force_download: bool = False,
        subfolder: str = "",
        **kwargs: Any,
    ):
        """Load a model from a local folder or a hub id, with config.json and weights in any HF format.

        A hub id ("org/name", a timm "timm/name" or "hf-hub:org/name") is downloaded through huggingface_hub
        into its shared cache (see `vit.hub`): `revision` is a branch, tag or commit; offline
        (HF_HUB_OFFLINE=1 or `local_files_only=True`) the cache serves it. Keyword arguments that are config
        fields override the saved config; `image_size=384` resizes the position embeddings with
        `pos_embed_resize` ("bicubic", "bicubic_antialias" or "linear"). Head weights that the checkpoint
        lacks are initialised from `seed` with a warning.
        """
        if model_args:
            raise TypeError("from_pretrained takes keyword arguments only after the path.")
        hub = HubOptions(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                         token=token if token is not None else kwargs.pop("use_auth_token", None),
                         force_download=force_download, subfolder=subfolder or "")
        path = os.fspath(pretrained_model_name_or_path)  # what the user named: a folder, a file or a hub id
        local = path if os.path.isfile(path) else resolve(
            path, hub, timm_options={"num_attention_heads": kwargs.get("num_attention_heads")})
        folder = local if os.path.isdir(local) else os.path.dirname(local)
        for hf_only in ("use_auth_token", "from_pt", "from_tf", "from_flax", "trust_remote_code", "low_cpu_mem_usage"):
            kwargs.pop(hf_only, None)
        model_kwargs, overrides = cls._split_kwargs(kwargs)
        source_config = config or ViTConfig.from_pretrained(folder)
        try:
            target_config = source_config.copy(**overrides) if overrides else source_config
        except ConfigError as err:
            raise ConfigError(f"from_pretrained: {err}") from err
        state = read_canonical(local, source_config)
        with skip_init():
            model = cls(target_config, **model_kwargs)
        fitted, report = fit_state_dict(
            state, target_config, cls.head, *model.model_flags,
            ignore_mismatched_sizes=ignore_mismatched_sizes, source_config=source_config, resize_method=pos_embed_resize,
        )
        fresh = set(report.initialised) | set(report.mismatched)
        if fresh:
            specs = {n: s for n, s in model.parameter_specs().items() if n in fresh}
            fitted.update(init_state(target_config, specs, seed))
        model.load_canonical_state_dict(fitted)
        model.config.name_or_path = path
        model.load_report = report
        return model

    def _state_to_save(self, kwargs: dict[str, Any]) -> dict[str, np.ndarray]:
        """The canonical state that save_pretrained writes; a framework pops its own keywords from `kwargs`
        (PyTorch's `state_dict=`, Flax's `params=`)."""
        return self.canonical_state_dict()

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        formats: tuple[str, ...] | str | None = None,
        *,
        safe_serialization: bool = True,
        max_shard_size: int | str | None = None,
        is_main_process: bool = True,
        push_to_hub: bool = False,
        **kwargs: Any,
    ) -> None:
        """Write config.json and the weights atomically, removing weight files of an earlier save.

        `formats` picks the files: "safetensors" (the default), "pt" (pytorch_model.bin, also what
        `safe_serialization=False` writes), "tf" and "flax". HF's keywords `max_shard_size` and
        `is_main_process` behave as in transformers; each framework adds its own (PyTorch `state_dict=`,
        TensorFlow `saved_model=`, Flax `params=`). Any other keyword is an error, never silently dropped.
        """
        if push_to_hub:
            raise NotImplementedError("save_pretrained(push_to_hub=True) is not supported; save to a folder, then "
                                      "upload it with huggingface_hub.upload_folder(repo_id=..., folder_path=...).")
        state = {k: np.asarray(v) for k, v in self._state_to_save(kwargs).items()}
        if kwargs:
            raise TypeError(f"{type(self).__name__}.save_pretrained() got keyword arguments that vit does not support: "
                            f"{', '.join(sorted(kwargs))}. Remove them (see the method's docstring for what it takes).")
        if formats is None:
            formats = ("safetensors",) if safe_serialization else ("pt",)
        formats = (formats,) if isinstance(formats, str) else tuple(formats)
        if not safe_serialization and "safetensors" in formats:
            raise ValueError("safe_serialization=False contradicts formats containing 'safetensors'; pass one of them.")
        if not is_main_process:
            return
        sharding = {"max_shard_size": max_shard_size} if max_shard_size is not None else {}
        save_checkpoint(os.fspath(save_directory), self.config, state, self.head, formats, self.hf_architecture,
                        **sharding)
