"""Read PyTorch's `pytorch_model.bin` without executing code, and without needing torch installed.

If torch is already imported, `torch.load(weights_only=True)` reads the file. Otherwise a restricted
unpickler does: it allows only the handful of globals a state dict needs (an OrderedDict, typed storages
and `_rebuild_tensor_v2`) and refuses everything else, exactly as `weights_only=True` does. Either way a
pickle that carries code is refused, never run.
"""

from __future__ import annotations

import collections
import pickle
import sys
import zipfile

import numpy as np

from .errors import CheckpointError


def _bfloat16():
    try:
        import ml_dtypes

        return ml_dtypes.bfloat16
    except ImportError as err:  # pragma: no cover - ml_dtypes ships with jax and tensorflow
        raise CheckpointError("This checkpoint holds bfloat16 tensors; `pip install ml_dtypes` to read them.") from err


_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str) -> None:
        dtype = _STORAGE_DTYPES[name]
        self.dtype = np.dtype(_bfloat16()) if dtype == "bfloat16" else np.dtype(dtype)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    )
    return np.array(view)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load the global {module}.{name}: only tensors are allowed")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, _numel = pid
        data = self.archive.read(f"{self.prefix}/data/{key}")
        return np.frombuffer(data, dtype=storage_type.dtype)


def _load_without_torch(path: str) -> dict:
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not a zip-format PyTorch checkpoint (a legacy or corrupt file). Re-save it with a "
            "recent torch.save, or convert it to model.safetensors."
        )
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: expected one data.pkl in the archive, found {len(pickles)}.")
        prefix = pickles[0][: -len("/data.pkl")]
        with archive.open(pickles[0]) as f:
            return _RestrictedUnpickler(f, archive, prefix).load()


def _load_with_torch(path: str) -> dict:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    out = {}
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{path}: entry {name!r} is a {type(tensor).__name__}, not a tensor.")
        out[name] = tensor.detach().float().numpy() if tensor.dtype == torch.bfloat16 else tensor.detach().numpy()
    return out


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    """Read a `pytorch_model.bin` into NumPy arrays, refusing pickles that carry code."""
    try:
        state = _load_with_torch(path) if sys.modules.get("torch") is not None else _load_without_torch(path)
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, KeyError, ValueError, TypeError, OSError) as err:
        raise CheckpointError(
            f"Refusing or unable to read {path}: {err}. A pytorch_model.bin may only hold tensors (it is "
            "loaded as with weights_only=True); if it is truncated or holds code, get a clean copy or a "
            "model.safetensors."
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict of tensors.")
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return {str(k): np.asarray(v) for k, v in state.items()}
