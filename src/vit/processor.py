"""`ViTImageProcessor`: images in, `pixel_values` out, as Hugging Face's processor does, for every framework.

The pipeline per image is: decode -> convert to RGB -> resize with PIL (on uint8, as HF does) -> one fused
`x * (rescale_factor / std) - mean / std` in float32 -> channels first. Images are processed on a small
thread pool (PIL releases the GIL while resizing), and the output matches HF's to float32 round-off.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .errors import ConfigError, ImageError
from .files import atomic_write_text

PROCESSOR_NAME = "preprocessor_config.json"
IMAGENET_STANDARD_MEAN = [0.5, 0.5, 0.5]
IMAGENET_STANDARD_STD = [0.5, 0.5, 0.5]
_RESAMPLE_NAMES = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
_HF_KNOWN_KEYS = {"image_processor_type", "_processor_class", "feature_extractor_type", "processor_class"}
_CHANNEL_COUNTS = (1, 3, 4)
# PIL's decompression-bomb limit is a module global; opening under a lock lets each processor use its own.
_OPEN_LOCK = threading.Lock()


def _reset_locks_in_child() -> None:
    """A fork copies a lock held by another thread as held forever; the child gets fresh ones."""
    global _OPEN_LOCK
    _OPEN_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_locks_in_child)


class BatchFeature(dict):
    """A dict of model inputs (`pixel_values`) with attribute access, like HF's BatchFeature."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(name) from err

    def to(self, *args: Any, **kwargs: Any) -> BatchFeature:
        """HF's `BatchFeature.to(device_or_dtype)`: torch tensors move or cast (only floating ones are cast to a
        dtype, as in HF); other values are kept."""
        import torch

        def move(value: Any) -> Any:
            if not isinstance(value, torch.Tensor):
                return value
            casting = any(isinstance(a, torch.dtype) for a in (*args, *kwargs.values()))
            if casting and not torch.is_floating_point(value):
                device = kwargs.get("device", next((a for a in args if not isinstance(a, torch.dtype)), None))
                return value.to(device) if device is not None else value
            return value.to(*args, **kwargs)

        return BatchFeature({k: move(v) for k, v in self.items()})


def _describe(image: Any, index: int) -> str:
    if isinstance(image, (str, os.PathLike)):
        return f"image {os.fspath(image)!r}"
    return f"image #{index} ({type(image).__name__})"


def _framework_tensor_to_numpy(image: Any) -> np.ndarray | None:
    """torch / tf / jax tensors -> numpy, recognised by module so that no framework is imported."""
    module = type(image).__module__.split(".")[0]
    if module == "torch":
        return image.detach().cpu().float().numpy() if image.is_floating_point() else image.detach().cpu().numpy()
    if module in ("tensorflow", "tf_keras", "keras", "jax", "jaxlib"):
        return np.asarray(image)
    return None


class ViTImageProcessor:
    """Turns images into the `pixel_values` that a ViT takes, with HF's options and defaults.

    Input may be PIL images of any mode (alpha is composited on white), NumPy arrays (HWC or CHW, uint8
    or float), torch / tf / jax tensors, file paths, or a list of those, of different sizes.

    Example:
        >>> import numpy as np
        >>> from vit import ViTImageProcessor
        >>> processor = ViTImageProcessor(size={"height": 32, "width": 32})
        >>> image = np.zeros((48, 64, 3), dtype=np.uint8)
        >>> processor(image, return_tensors="np")["pixel_values"].shape
        (1, 3, 32, 32)
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        do_resize: bool = True,
        size: dict[str, int] | int | None = None,
        resample: int | str = 2,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        do_convert_rgb: bool | None = None,
        apply_exif_orientation: bool = False,
        max_image_pixels: int | None = Image.MAX_IMAGE_PIXELS,
        num_workers: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.do_resize = do_resize
        self.size = self._size_dict(size)
        self.resample = self._resample_code(resample)
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.do_normalize = do_normalize
        self.image_mean = self._per_channel(IMAGENET_STANDARD_MEAN if image_mean is None else image_mean, "image_mean")
        self.image_std = self._per_channel(IMAGENET_STANDARD_STD if image_std is None else image_std, "image_std")
        if len(self.image_mean) != len(self.image_std):
            raise ConfigError(f"image_mean has {len(self.image_mean)} values but image_std has {len(self.image_std)}.")
        if any(s == 0 for s in self.image_std):
            raise ConfigError("image_std must not contain 0.")
        self.do_convert_rgb = do_convert_rgb
        self.apply_exif_orientation = apply_exif_orientation
        self.max_image_pixels = max_image_pixels
        self.num_workers = num_workers
        if kwargs.get("do_center_crop"):
            # A config that centre-crops (CLIP, DINOv2, DeiT) would give other numbers here without the crop.
            raise ConfigError(
                f"{type(self).__name__} does not centre-crop, but this configuration asks for it "
                f"(image_processor_type {kwargs.get('image_processor_type')!r}). Load it with "
                "AutoImageProcessor.from_pretrained, or use CLIPImageProcessor, BitImageProcessor or DeiTImageProcessor."
            )
        for key in kwargs:
            if key not in _HF_KNOWN_KEYS:
                warnings.warn(f"{type(self).__name__}: unknown option {key!r} is ignored.", stacklevel=2)

    # ------------------------------------------------------------------------------------ options
    @staticmethod
    def _size_dict(size: Any) -> dict[str, int]:
        if size is None:
            return {"height": 224, "width": 224}
        if isinstance(size, int) and not isinstance(size, bool):
            size = {"height": size, "width": size}
        if isinstance(size, (list, tuple)) and len(size) == 2:
            size = {"height": size[0], "width": size[1]}
        if not isinstance(size, dict) or set(size) != {"height", "width"}:
            raise ConfigError(f"size must be an int or {{'height': H, 'width': W}}, got {size!r}.")
        for key, value in size.items():
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"size[{key!r}] must be a positive int, got {value!r}.")
        return dict(size)

    @staticmethod
    def _resample_code(resample: Any) -> int:
        if isinstance(resample, str):
            if resample.lower() not in _RESAMPLE_NAMES:
                raise ConfigError(f"resample {resample!r} is not one of {sorted(_RESAMPLE_NAMES)}.")
            return _RESAMPLE_NAMES[resample.lower()]
        code = int(resample)
        if code not in _RESAMPLE_NAMES.values():
            raise ConfigError(f"resample must be a PIL resampling code 0-5, got {resample!r}.")
        return code

    @staticmethod
    def _per_channel(value: Any, name: str) -> list[float]:
        # HF broadcasts a scalar over the RGB channels; only an explicit one-element list means grayscale.
        values = [value] * 3 if isinstance(value, (int, float, np.number)) else list(value)
        if not values or not all(isinstance(v, (int, float, np.number)) and np.isfinite(v) for v in values):
            raise ConfigError(f"{name} must be a number or a list of finite numbers, got {value!r}.")
        return [float(v) for v in values]

    def to_dict(self) -> dict[str, Any]:
        return {
            "do_convert_rgb": self.do_convert_rgb,
            "do_normalize": self.do_normalize,
            "do_rescale": self.do_rescale,
            "do_resize": self.do_resize,
            "image_mean": self.image_mean,
            "image_processor_type": "ViTImageProcessor",
            "image_std": self.image_std,
            "resample": self.resample,
            "rescale_factor": self.rescale_factor,
            "size": self.size,
        }

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> ViTImageProcessor:
        return cls(**{**data, **overrides})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides: Any) -> ViTImageProcessor:
        """Read `preprocessor_config.json` from a local folder (or the file itself) or a hub id.

        The hub options of `from_pretrained` (revision, cache_dir, local_files_only, token, force_download,
        subfolder) are accepted; the other keyword arguments override fields.
        """
        from .hub import HubOptions, resolve

        hub = HubOptions.pop_from(overrides)
        path = os.fspath(path)
        file = path if os.path.isfile(path) else os.path.join(resolve(path, hub, weights=False, processor="required"),
                                                              PROCESSOR_NAME)
        try:
            with open(file, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError as err:
            raise ConfigError(f"No {PROCESSOR_NAME} in {path}; pass a folder saved with save_pretrained.") from err
        except json.JSONDecodeError as err:
            raise ConfigError(f"{file} is not valid JSON ({err}).") from err
        return cls.from_dict(data, **overrides)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        os.makedirs(folder, exist_ok=True)
        atomic_write_text(os.path.join(folder, PROCESSOR_NAME), self.to_json_string())

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    # ------------------------------------------------------------------------------------ running
    def __call__(self, images: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    def preprocess(
        self,
        images: Any,
        do_resize: bool | None = None,
        size: dict[str, int] | int | None = None,
        resample: int | str | None = None,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        do_normalize: bool | None = None,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        do_convert_rgb: bool | None = None,
        return_tensors: str | None = None,
        data_format: str = "channels_first",
        input_data_format: str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Process one image or a list of images; options given here override the processor's."""
        recipe_options = self._recipe_options(kwargs)
        options = dict(
            do_resize=self.do_resize if do_resize is None else do_resize,
            size=self.size if size is None else self._size_dict(size),
            resample=self.resample if resample is None else self._resample_code(resample),
            do_rescale=self.do_rescale if do_rescale is None else do_rescale,
            rescale_factor=self.rescale_factor if rescale_factor is None else rescale_factor,
            do_normalize=self.do_normalize if do_normalize is None else do_normalize,
            image_mean=self.image_mean if image_mean is None else self._per_channel(image_mean, "image_mean"),
            image_std=self.image_std if image_std is None else self._per_channel(image_std, "image_std"),
            do_convert_rgb=self.do_convert_rgb if do_convert_rgb is None else do_convert_rgb,
            channels_last=self._channels_last(data_format),
            input_data_format=input_data_format,
        )
        options.update(recipe_options)
        batch = self._as_list(images)
        output_shape = self._output_shape(options) if options["do_resize"] else None
        if output_shape is not None:
            # Every image ends up the same size: each worker normalises straight into its slot of the batch.
            out = np.empty((len(batch), *output_shape), dtype=np.float32)

            def work(index: int) -> None:
                self._normalise(self._process_one(batch[index], index, options), options, out=out[index])

            self._map(work, len(batch))
            return BatchFeature(pixel_values=self._to_tensors(out, return_tensors))
        arrays: list[np.ndarray] = [np.empty(0)] * len(batch)

        def work_unresized(index: int) -> None:
            arrays[index] = self._normalise(self._process_one(batch[index], index, options), options)

        self._map(work_unresized, len(batch))
        return BatchFeature(pixel_values=self._stack(arrays, return_tensors))

    @staticmethod
    def _output_shape(options: dict) -> tuple[int, int, int]:
        channels = 3 if len(options["image_mean"]) != 1 else 1
        h, w = options["size"]["height"], options["size"]["width"]
        return (h, w, channels) if options["channels_last"] else (channels, h, w)

    def _map(self, work, count: int) -> None:
        if count > 1 and (self.num_workers or 0) != 1:
            list(self._pool().map(work, range(count)))
        else:
            for index in range(count):
                work(index)

    def _pool(self) -> ThreadPoolExecutor:
        """A thread pool kept for the processor's life: PIL releases the GIL while it decodes and resizes.

        The pool belongs to the process that made it: a forked child (a DataLoader worker) inherits the
        pool object but not its threads, so work submitted there would wait forever. Each process
        therefore makes its own pool, keyed on its pid.
        """
        pid = os.getpid()
        if getattr(self, "_executor_pid", None) != pid:
            with _OPEN_LOCK:
                if getattr(self, "_executor_pid", None) != pid:
                    workers = self.num_workers or min(os.cpu_count() or 1, 8)
                    self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vit-processor")
                    self._executor_pid = pid
        return self._executor

    def __getstate__(self) -> dict[str, Any]:
        """Pickle (spawned DataLoader workers) and deepcopy leave the pool behind; the copy makes its own."""
        state = dict(self.__dict__)
        state.pop("_executor", None)
        state.pop("_executor_pid", None)
        return state

    @staticmethod
    def _channels_last(data_format: Any) -> bool:
        value = getattr(data_format, "value", data_format)
        if value in ("channels_first", "first"):
            return False
        if value in ("channels_last", "last"):
            return True
        raise ConfigError(f"data_format must be 'channels_first' or 'channels_last', got {data_format!r}.")

    @staticmethod
    def _as_list(images: Any) -> list[Any]:
        if isinstance(images, (list, tuple)):
            return list(images)
        if isinstance(images, np.ndarray) and images.ndim == 4:
            return list(images)
        tensor = _framework_tensor_to_numpy(images)
        if tensor is not None and tensor.ndim == 4:
            return list(tensor)
        if isinstance(images, Iterable) and not isinstance(images, (str, bytes, os.PathLike, Image.Image, np.ndarray)) and tensor is None:
            return list(images)
        return [images]

    def _stack(self, arrays: list[np.ndarray], return_tensors: str | None) -> Any:
        if len({a.shape for a in arrays}) <= 1:
            return self._to_tensors(np.stack(arrays) if arrays else np.zeros((0, 3, 0, 0), np.float32), return_tensors)
        if return_tensors is None:
            return arrays
        raise ImageError(
            f"The images have different sizes {sorted({a.shape for a in arrays})} and cannot be stacked into "
            "one tensor; turn on do_resize or pass return_tensors=None for a list."
        )

    @staticmethod
    def _to_tensors(stacked: np.ndarray, return_tensors: str | None) -> Any:
        if return_tensors in (None, "np"):
            return stacked
        if return_tensors == "pt":
            import torch

            return torch.from_numpy(stacked)
        if return_tensors == "tf":
            import tensorflow as tf

            return tf.convert_to_tensor(stacked)
        if return_tensors == "jax":
            import jax.numpy as jnp

            return jnp.asarray(stacked)
        raise ConfigError(f"return_tensors must be one of 'np', 'pt', 'tf', 'jax' or None, got {return_tensors!r}.")

    def _recipe_options(self, extra: dict[str, Any]) -> dict[str, Any]:
        """Options beyond ViT's (the family processors' centre crop); ViTImageProcessor takes none."""
        if extra:
            raise TypeError(f"preprocess() got unexpected options {sorted(extra)}")
        return {}

    def _resize_target(self, width: int, height: int, options: dict) -> tuple[int, int]:
        """The (width, height) that an image of this size is resized to; ViT's is the fixed `size`."""
        return options["size"]["width"], options["size"]["height"]

    # ------------------------------------------------------------------------------ one image
    def _process_one(self, image: Any, index: int, options: dict) -> np.ndarray:
        rgb = len(options["image_mean"]) != 1
        if isinstance(image, (str, os.PathLike)):
            image = self._open(image)
        if isinstance(image, Image.Image):
            pil = self._to_mode(image, rgb, index)
            array = None
        else:
            array = self._to_hwc(image, index, options["input_data_format"])
            pil = self._array_to_pil(array, rgb) if array.dtype == np.uint8 else None
        if pil is not None:
            if options["do_resize"]:
                size = self._resize_target(pil.width, pil.height, options)
                if pil.size != size:
                    pil = pil.resize(size, resample=options["resample"], reducing_gap=None)
            hwc = np.asarray(pil)
            if hwc.ndim == 2:
                hwc = hwc[:, :, None]
        else:
            hwc = self._resize_float(array, options) if options["do_resize"] else array.astype(np.float32)
            if options["do_rescale"] and hwc.size and float(np.max(hwc)) <= 1.0:
                warnings.warn(
                    "It looks like the images are already rescaled to [0, 1] and do_rescale=True rescales them "
                    "again; pass do_rescale=False.",
                    stacklevel=4,
                )
        return hwc

    def _normalise(self, hwc: np.ndarray, options: dict, out: np.ndarray | None = None) -> np.ndarray:
        channels = hwc.shape[-1]
        mean = np.asarray(options["image_mean"], dtype=np.float32)
        std = np.asarray(options["image_std"], dtype=np.float32)
        if options["do_normalize"] and len(mean) not in (1, channels):
            raise ImageError(f"The image has {channels} channels but image_mean has {len(mean)} values.")
        scale = np.float32(options["rescale_factor"] if options["do_rescale"] else 1.0)
        if options["do_normalize"]:
            multiplier, offset = scale / std, -mean / std
        else:
            multiplier, offset = np.full(channels, scale, np.float32), np.zeros(channels, np.float32)
        layout = hwc if options["channels_last"] else hwc.transpose(2, 0, 1)
        shape = (1, 1, -1) if options["channels_last"] else (-1, 1, 1)
        # One fused multiply-add in float32: the same numbers as HF's rescale-then-normalise, one pass.
        out = np.empty(layout.shape, dtype=np.float32) if out is None else out
        np.multiply(layout, multiplier.astype(np.float32).reshape(shape), out=out, casting="unsafe")
        out += offset.astype(np.float32).reshape(shape)
        return out

    def _open(self, path: str | os.PathLike) -> Image.Image:
        path = os.fspath(path)
        if os.path.isdir(path):
            raise ImageError(f"{path!r} is a directory, not an image file; pass the image files inside it.")
        limit = self.max_image_pixels
        try:
            with _OPEN_LOCK:
                previous = Image.MAX_IMAGE_PIXELS
                Image.MAX_IMAGE_PIXELS = limit
                try:
                    image = Image.open(path)
                finally:
                    Image.MAX_IMAGE_PIXELS = previous
            if limit is not None and image.width * image.height > limit:
                raise ImageError(
                    f"{path!r} has {image.width}x{image.height} pixels, above the limit of {limit} "
                    "(a possible decompression bomb); raise max_image_pixels if you trust the file."
                )
            image.load()
        except ImageError:
            raise
        except Image.DecompressionBombError as err:
            raise ImageError(f"{path!r}: {err} Raise max_image_pixels if you trust the file.") from err
        except FileNotFoundError as err:
            raise ImageError(f"Image file not found: {path!r}.") from err
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageError(f"Cannot read {path!r} as an image ({err}). The file is corrupt, truncated or not an image.") from err
        return image

    def _to_mode(self, image: Image.Image, rgb: bool, index: int) -> Image.Image:
        if self.apply_exif_orientation:
            image = ImageOps.exif_transpose(image)
        target = "RGB" if rgb else "L"
        if image.mode == target:
            return image
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            # Wide grey levels: scale to 8 bits by the type's range, as a viewer would show them.
            array = np.asarray(image, dtype=np.float64)
            top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0) if image.mode == "I" else 1.0
            grey = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
            return grey.convert(target)
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert(target)
        try:
            return image.convert(target)
        except (ValueError, OSError) as err:
            raise ImageError(f"image #{index}: cannot convert PIL mode {image.mode!r} to {target}: {err}") from err

    @staticmethod
    def _to_hwc(image: Any, index: int, input_data_format: str | None) -> np.ndarray:
        array = _framework_tensor_to_numpy(image)
        if array is None:
            if not isinstance(image, np.ndarray):
                raise ImageError(
                    f"{_describe(image, index)} is not an image: pass PIL images, NumPy arrays, torch/tf/jax "
                    "tensors or file paths."
                )
            array = image
        if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise ImageError(f"{_describe(image, index)} has dtype {array.dtype}; use uint8 (0-255) or float.")
        if array.ndim == 2:
            array = array[:, :, None]
        elif array.ndim != 3:
            raise ImageError(
                f"{_describe(image, index)} has shape {array.shape}; an image is (H, W), (H, W, C) or (C, H, W)."
            )
        fmt = getattr(input_data_format, "value", input_data_format)
        if fmt in ("channels_first", "first"):
            array = array.transpose(1, 2, 0)
        elif fmt in ("channels_last", "last"):
            pass
        elif fmt is not None:
            raise ConfigError(f"input_data_format must be 'channels_first' or 'channels_last', got {input_data_format!r}.")
        else:
            first, last = array.shape[0] in _CHANNEL_COUNTS, array.shape[-1] in _CHANNEL_COUNTS
            if first and last:
                raise ImageError(
                    f"{_describe(image, index)} has shape {array.shape}: both the first and last axes could be "
                    "channels. Pass input_data_format='channels_first' or 'channels_last'."
                )
            if first and not last:
                array = array.transpose(1, 2, 0)
            elif not first and not last:
                raise ImageError(
                    f"{_describe(image, index)} has shape {array.shape}, with no axis of 1, 3 or 4 channels."
                )
        if array.shape[-1] not in _CHANNEL_COUNTS:
            raise ImageError(
                f"{_describe(image, index)} has {array.shape[-1]} channels after layout detection (shape {array.shape}); "
                "images have 1, 3 or 4 channels. Check input_data_format."
            )
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise ImageError(f"{_describe(image, index)} is empty (shape {array.shape}).")
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            raise ImageError(f"{_describe(image, index)} holds NaN or infinite values.")
        if array.dtype != np.uint8 and np.issubdtype(array.dtype, np.integer):
            array = array.astype(np.float32)
        return np.ascontiguousarray(array)

    @staticmethod
    def _array_to_pil(array: np.ndarray, rgb: bool) -> Image.Image:
        channels = array.shape[-1]
        if channels == 1:
            image = Image.fromarray(array[:, :, 0], "L")
        elif channels == 3:
            image = Image.fromarray(array, "RGB")
        else:
            image = Image.fromarray(array, "RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        target = "RGB" if rgb else "L"
        return image if image.mode == target else image.convert(target)

    def _resize_float(self, array: np.ndarray, options: dict) -> np.ndarray:
        """Float images resize channel by channel in PIL's 32-bit float mode, without quantising to 8 bits."""
        rgb = len(options["image_mean"]) != 1
        array = array.astype(np.float32)
        if array.shape[-1] == 4:
            alpha = array[:, :, 3:]
            top = 1.0 if float(array.max()) <= 1.0 else 255.0
            array = array[:, :, :3] * (alpha / top) + top * (1 - alpha / top)
        if array.shape[-1] == 1 and rgb:
            array = np.repeat(array, 3, axis=-1)
        elif array.shape[-1] == 3 and not rgb:
            array = (array @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None]
        size = self._resize_target(array.shape[1], array.shape[0], options)
        channels = [
            np.asarray(Image.fromarray(np.ascontiguousarray(array[:, :, c]), "F").resize(size, resample=options["resample"]))
            for c in range(array.shape[-1])
        ]
        return np.stack(channels, axis=-1)


class ViTFeatureExtractor(ViTImageProcessor):
    """Deprecated alias of `ViTImageProcessor`, kept because HF had it; it warns once per construction."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        warnings.warn(
            "ViTFeatureExtractor is deprecated; use ViTImageProcessor, which takes the same arguments.",
            FutureWarning,
            stacklevel=2,
        )
        super().__init__(*args, **kwargs)


# ==================================================================================== the ViT family
# CLIP, SigLIP, DINOv2 and DeiT share ViT's pipeline and differ only in a recipe: how `size` is read
# (the shortest edge or a fixed height and width), whether a centre crop follows, and the defaults.
# Each class below is that recipe under the HF class name that `preprocessor_config.json` records.
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
_SHORTEST_EDGE = "shortest_edge"
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _height_width(value: Any, name: str) -> dict[str, int]:
    """`{"height": H, "width": W}` from an int (a square), a (height, width) pair or a dict."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"height": value, "width": value}
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        value = {"height": value[0], "width": value[1]}
    if not isinstance(value, dict) or set(value) != {"height", "width"}:
        raise ConfigError(f"{name} must be an int, (height, width) or {{'height': H, 'width': W}}, got {value!r}.")
    for key, side in value.items():
        if isinstance(side, bool) or not isinstance(side, int) or side <= 0:
            raise ConfigError(f"{name}[{key!r}] must be a positive int, got {side!r}.")
    return dict(value)


class _FamilyImageProcessor(ViTImageProcessor):
    """ViT's pipeline plus a family's recipe: shortest-edge resize and centre crop, as HF's PIL processors.

    Per image: RGB -> resize (PIL, on uint8) to `size` -> centre-crop to `crop_size` (zero-padded where the
    image is smaller, as HF pads) -> rescale and normalise. Subclasses set the recipe's HF name and defaults.
    """

    hf_class_name = ""
    default_size: dict[str, int] = {"height": 224, "width": 224}
    # How HF reads `size=N`: CLIP and BiT as the shortest edge, DeiT and SigLIP as a square.
    int_size_is_shortest_edge = False
    accepts_shortest_edge = True
    has_centre_crop = True
    default_image_mean: list[float] = IMAGENET_STANDARD_MEAN
    default_image_std: list[float] = IMAGENET_STANDARD_STD
    default_do_convert_rgb: bool | None = None
    # Options that HF's class does not have, left out of its preprocessor_config.json.
    unsaved_keys: tuple[str, ...] = ()

    def __init__(
        self,
        do_resize: bool = True,
        size: dict[str, int] | int | Sequence[int] | None = None,
        resample: int | str = 3,
        do_center_crop: bool | None = None,
        crop_size: dict[str, int] | int | Sequence[int] | None = None,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        do_convert_rgb: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if not self.has_centre_crop and (do_center_crop or crop_size is not None):
            raise ConfigError(f"{type(self).__name__} has no centre crop (HF's has none); drop do_center_crop and crop_size.")
        # HF's CLIPImageProcessor option: read {"shortest_edge": N} as an N x N square.
        use_square_size = kwargs.pop("use_square_size", False)
        self.do_center_crop = self.has_centre_crop if do_center_crop is None else bool(do_center_crop)
        self.crop_size = _height_width({"height": 224, "width": 224} if crop_size is None else crop_size, "crop_size")
        super().__init__(
            do_resize=do_resize,
            size=size,
            resample=resample,
            do_rescale=do_rescale,
            rescale_factor=rescale_factor,
            do_normalize=do_normalize,
            image_mean=self.default_image_mean if image_mean is None else image_mean,
            image_std=self.default_image_std if image_std is None else image_std,
            do_convert_rgb=self.default_do_convert_rgb if do_convert_rgb is None else do_convert_rgb,
            **kwargs,
        )
        if use_square_size and _SHORTEST_EDGE in self.size:
            self.size = {"height": self.size[_SHORTEST_EDGE], "width": self.size[_SHORTEST_EDGE]}

    # ------------------------------------------------------------------------------------ options
    def _size_dict(self, size: Any) -> dict[str, int]:
        if size is None:
            return dict(self.default_size)
        if isinstance(size, int) and not isinstance(size, bool) and self.int_size_is_shortest_edge:
            size = {_SHORTEST_EDGE: size}
        if isinstance(size, dict) and _SHORTEST_EDGE in size:
            if not self.accepts_shortest_edge:
                raise ConfigError(
                    f"{type(self).__name__} resizes to a fixed {{'height': H, 'width': W}} (as HF's does), got "
                    f"size={size!r}. Use CLIPImageProcessor or BitImageProcessor for a shortest-edge resize."
                )
            edge = size[_SHORTEST_EDGE]
            if set(size) != {_SHORTEST_EDGE}:
                raise ConfigError(f"size {size!r} mixes 'shortest_edge' with {sorted(set(size) - {_SHORTEST_EDGE})}; "
                                  "give either {'shortest_edge': N} or {'height': H, 'width': W}.")
            if isinstance(edge, bool) or not isinstance(edge, int) or edge <= 0:
                raise ConfigError(f"size['shortest_edge'] must be a positive int, got {edge!r}.")
            return {_SHORTEST_EDGE: edge}
        return _height_width(size, "size")

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data.update(
            image_processor_type=self.hf_class_name,
            size=dict(self.size),
            do_center_crop=self.do_center_crop,
            crop_size=dict(self.crop_size),
        )
        return {key: data[key] for key in sorted(data) if key not in self.unsaved_keys}

    # ------------------------------------------------------------------------------------ running
    def _recipe_options(self, extra: dict[str, Any]) -> dict[str, Any]:
        extra = dict(extra)
        do_center_crop = extra.pop("do_center_crop", None) if self.has_centre_crop else None
        crop_size = extra.pop("crop_size", None) if self.has_centre_crop else None
        super()._recipe_options(extra)
        return {
            "do_center_crop": self.do_center_crop if do_center_crop is None else bool(do_center_crop),
            "crop_size": self.crop_size if crop_size is None else _height_width(crop_size, "crop_size"),
        }

    def _resize_target(self, width: int, height: int, options: dict) -> tuple[int, int]:
        size = options["size"]
        if _SHORTEST_EDGE not in size:
            return size["width"], size["height"]
        # HF's get_resize_output_image_size: the short side becomes N, the long side int(N * long / short)
        # (truncated, in Python floats), and a square counts as "width is the short side".
        edge = size[_SHORTEST_EDGE]
        if width <= height:
            return edge, int(edge * height / width)
        return int(edge * width / height), edge

    def _output_shape(self, options: dict) -> tuple[int, int, int] | None:
        if options["do_center_crop"]:
            final = options["crop_size"]
        elif _SHORTEST_EDGE in options["size"]:
            return None  # the resized size follows each image's aspect ratio
        else:
            final = options["size"]
        return super()._output_shape({**options, "size": final})

    def _process_one(self, image: Any, index: int, options: dict) -> np.ndarray:
        if options["do_convert_rgb"]:
            if isinstance(image, (str, os.PathLike)):
                image = self._open(image)
            if isinstance(image, Image.Image) and (
                image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)
            ):
                # HF's convert_to_rgb is PIL's convert("RGB"): it drops alpha, where ViT's pipeline composites
                # on white. CLIP's and DINOv2's own preprocessing drop it too, so their checkpoints expect it.
                if self.apply_exif_orientation:
                    image = ImageOps.exif_transpose(image)
                image = image.convert("RGB")
        hwc = super()._process_one(image, index, options)
        if options["do_center_crop"]:
            hwc = self._centre_crop(hwc, options["crop_size"]["height"], options["crop_size"]["width"])
        return hwc

    @staticmethod
    def _centre_crop(hwc: np.ndarray, height: int, width: int) -> np.ndarray:
        """HF's center_crop: offsets (size - crop) // 2, and zeros (before normalising) outside a small image."""
        image_height, image_width = hwc.shape[:2]
        top, left = (image_height - height) // 2, (image_width - width) // 2
        if top >= 0 and left >= 0 and top + height <= image_height and left + width <= image_width:
            return hwc[top : top + height, left : left + width]
        out = np.zeros((height, width, hwc.shape[2]), dtype=hwc.dtype)
        source_top, source_left = max(top, 0), max(left, 0)
        source_bottom, source_right = min(top + height, image_height), min(left + width, image_width)
        out[source_top - top : source_bottom - top, source_left - left : source_right - left] = hwc[
            source_top:source_bottom, source_left:source_right
        ]
        return out

    def _stack(self, arrays: list[np.ndarray], return_tensors: str | None) -> Any:
        shapes = sorted({a.shape for a in arrays})
        if len(shapes) > 1 and return_tensors is not None:
            raise ImageError(
                f"The images come out in different sizes {shapes} (a shortest-edge resize keeps each aspect ratio) "
                "and cannot be stacked into one tensor; turn on do_center_crop, resize to a fixed "
                "{'height': H, 'width': W}, or pass return_tensors=None for a list."
            )
        return super()._stack(arrays, return_tensors)


class CLIPImageProcessor(_FamilyImageProcessor):
    """HF's `CLIPImageProcessor`: shortest edge to 224 (bicubic), centre crop 224, OpenAI CLIP's mean and std.

    `size` may be `{"shortest_edge": N}` (an int means the same) or `{"height": H, "width": W}`. Takes every
    input that `ViTImageProcessor` takes and reads HF's `preprocessor_config.json`.

    Example:
        >>> import numpy as np
        >>> from vit import CLIPImageProcessor
        >>> processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32)
        >>> image = np.zeros((48, 64, 3), dtype=np.uint8)  # resized to 32 x 42, then cropped to 32 x 32
        >>> processor(image, return_tensors="np")["pixel_values"].shape
        (1, 3, 32, 32)
    """

    hf_class_name = "CLIPImageProcessor"
    default_size = {_SHORTEST_EDGE: 224}
    int_size_is_shortest_edge = True
    default_image_mean = OPENAI_CLIP_MEAN
    default_image_std = OPENAI_CLIP_STD
    default_do_convert_rgb = True


class SiglipImageProcessor(_FamilyImageProcessor):
    """HF's `SiglipImageProcessor`: resize to 224 x 224 (bicubic), no crop, mean and std 0.5.

    Example:
        >>> import numpy as np
        >>> from vit import SiglipImageProcessor
        >>> processor = SiglipImageProcessor(size={"height": 32, "width": 32})
        >>> processor(np.zeros((48, 64, 3), dtype=np.uint8), return_tensors="np")["pixel_values"].shape
        (1, 3, 32, 32)
    """

    hf_class_name = "SiglipImageProcessor"
    accepts_shortest_edge = False
    has_centre_crop = False
    unsaved_keys = ("crop_size", "do_center_crop")


class BitImageProcessor(_FamilyImageProcessor):
    """HF's `BitImageProcessor`, DINOv2's: shortest edge to 224 (bicubic), centre crop 224.

    Its defaults are HF's (OpenAI CLIP's mean and std); DINOv2 checkpoints' `preprocessor_config.json` sets
    `{"shortest_edge": 256}` and ImageNet's mean and std, and `from_pretrained` reads them.

    Example:
        >>> import numpy as np
        >>> from vit import BitImageProcessor
        >>> processor = BitImageProcessor(size=40, crop_size=28, image_mean=[0.485, 0.456, 0.406],
        ...                               image_std=[0.229, 0.224, 0.225])
        >>> processor(np.zeros((60, 50, 3), dtype=np.uint8), return_tensors="np")["pixel_values"].shape
        (1, 3, 28, 28)
    """

    hf_class_name = "BitImageProcessor"
    default_size = {_SHORTEST_EDGE: 224}
    int_size_is_shortest_edge = True
    default_image_mean = OPENAI_CLIP_MEAN
    default_image_std = OPENAI_CLIP_STD
    default_do_convert_rgb = True


class DeiTImageProcessor(_FamilyImageProcessor):
    """HF's `DeiTImageProcessor`: resize to 256 x 256 (bicubic), centre crop 224, mean and std 0.5.

    Example:
        >>> import numpy as np
        >>> from vit import DeiTImageProcessor
        >>> processor = DeiTImageProcessor(size=36, crop_size=32)
        >>> processor(np.zeros((48, 64, 3), dtype=np.uint8), return_tensors="np")["pixel_values"].shape
        (1, 3, 32, 32)
    """

    hf_class_name = "DeiTImageProcessor"
    default_size = {"height": 256, "width": 256}
    accepts_shortest_edge = False
    unsaved_keys = ("do_convert_rgb",)


# image_processor_type -> class; the *FeatureExtractor names are HF's older spellings of the same classes.
IMAGE_PROCESSOR_CLASSES: dict[str, type[ViTImageProcessor]] = {
    "ViTImageProcessor": ViTImageProcessor,
    "CLIPImageProcessor": CLIPImageProcessor,
    "SiglipImageProcessor": SiglipImageProcessor,
    "BitImageProcessor": BitImageProcessor,
    "DeiTImageProcessor": DeiTImageProcessor,
}
# config.json's model_type -> image_processor_type, as transformers' IMAGE_PROCESSOR_MAPPING_NAMES, plus the
# vision-tower model types, which share their full model's processor.
MODEL_TYPE_IMAGE_PROCESSORS = {
    "vit": "ViTImageProcessor",
    "vit_mae": "ViTImageProcessor",
    "vit_msn": "ViTImageProcessor",
    "clip": "CLIPImageProcessor",
    "clip_vision_model": "CLIPImageProcessor",
    "siglip": "SiglipImageProcessor",
    "siglip_vision_model": "SiglipImageProcessor",
    "bit": "BitImageProcessor",
    "dinov2": "BitImageProcessor",
    "dinov2_with_registers": "BitImageProcessor",
    "deit": "DeiTImageProcessor",
}


def _read_json(file: str) -> dict[str, Any]:
    try:
        with open(file, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{file} is not valid JSON ({err}).") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{file} holds {type(data).__name__}, not a JSON object.")
    return data


class AutoImageProcessor:
    """Picks the image processor class that a folder's `preprocessor_config.json` names, as transformers does.

    The class comes from `image_processor_type`, else from the older `feature_extractor_type`, else from
    `config.json`'s `model_type` (e.g. `dinov2` -> `BitImageProcessor`).

    Example:
        >>> import tempfile
        >>> from vit import AutoImageProcessor, DeiTImageProcessor
        >>> folder = tempfile.mkdtemp()
        >>> DeiTImageProcessor(size=36, crop_size=32).save_pretrained(folder)
        >>> processor = AutoImageProcessor.from_pretrained(folder)
        >>> type(processor).__name__, processor.crop_size
        ('DeiTImageProcessor', {'height': 32, 'width': 32})
    """

    def __init__(self) -> None:
        raise TypeError("AutoImageProcessor is not instantiated; use AutoImageProcessor.from_pretrained(folder).")

    @staticmethod
    def class_name_for(config: dict[str, Any], model_config: dict[str, Any] | None = None) -> str:
        """The processor class name for a `preprocessor_config.json` dict (and the model's `config.json`)."""
        name = config.get("image_processor_type")
        if name is None and config.get("feature_extractor_type") is not None:
            name = str(config["feature_extractor_type"]).replace("FeatureExtractor", "ImageProcessor")
        if name is None and model_config is not None:
            name = model_config.get("image_processor_type")
            model_type = model_config.get("model_type")
            if name is None and model_type is not None:
                if model_type not in MODEL_TYPE_IMAGE_PROCESSORS:
                    raise ConfigError(
                        f"config.json's model_type {model_type!r} has no image processor in vit; supported model "
                        f"types are {sorted(MODEL_TYPE_IMAGE_PROCESSORS)}."
                    )
                name = MODEL_TYPE_IMAGE_PROCESSORS[model_type]
        if name is None:
            raise ConfigError(
                "Cannot tell which image processor to use: preprocessor_config.json has no image_processor_type "
                "and there is no config.json with a model_type beside it. Add \"image_processor_type\" (e.g. "
                "\"CLIPImageProcessor\") or construct the processor class directly."
            )
        name = str(name)
        if name.endswith("Fast") and name[: -len("Fast")] in IMAGE_PROCESSOR_CLASSES:
            # HF's torchvision processors resize differently; ours are its PIL ones, whose numbers we match.
            warnings.warn(
                f"{name} is HF's torchvision-based processor; vit uses {name[:-4]}, HF's PIL-based one, whose "
                "outputs differ slightly from the fast one's.",
                stacklevel=3,
            )
            name = name[: -len("Fast")]
        if name not in IMAGE_PROCESSOR_CLASSES:
            raise ConfigError(f"Image processor {name!r} is not supported by vit; supported: {sorted(IMAGE_PROCESSOR_CLASSES)}.")
        return name

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides: Any) -> ViTImageProcessor:
        """Read `preprocessor_config.json` from a local folder, the file itself or a hub id into its HF-named
        class (hub options as in `ViTImageProcessor.from_pretrained`)."""
        from .hub import HubOptions, resolve

        hub = HubOptions.pop_from(overrides)
        path = os.fspath(path)
        if os.path.isfile(path):
            file, folder = path, os.path.dirname(path)
        else:
            folder = resolve(path, hub, weights=False, processor="required")
            file = os.path.join(folder, PROCESSOR_NAME)
        if not os.path.isfile(file):
            raise ConfigError(f"No {PROCESSOR_NAME} in {path}; pass a folder saved with save_pretrained.")
        data = _read_json(file)
        model_file = os.path.join(folder, "config.json")
        needs_model_config = data.get("image_processor_type") is None and data.get("feature_extractor_type") is None
        model_config = _read_json(model_file) if needs_model_config and os.path.isfile(model_file) else None
        if overrides.pop("use_fast", None):  # transformers' switch to its torchvision processors
            warnings.warn("vit has only HF's PIL-based image processors; use_fast=True is ignored.", stacklevel=2)
        return IMAGE_PROCESSOR_CLASSES[cls.class_name_for(data, model_config)].from_dict(data, **overrides)
