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


class BatchFeature(dict):
    """A dict of model inputs (`pixel_values`) with attribute access, like HF's BatchFeature."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(name) from err


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
        for key in kwargs:
            if key not in _HF_KNOWN_KEYS:
                warnings.warn(f"ViTImageProcessor: unknown option {key!r} is ignored.", stacklevel=2)

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
        values = [value] if isinstance(value, (int, float)) else list(value)
        if not values or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in values):
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
        if kwargs:
            raise TypeError(f"preprocess() got unexpected options {sorted(kwargs)}")
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
        batch = self._as_list(images)
        if options["do_resize"]:
            # Every image ends up the same size: each worker normalises straight into its slot of the batch.
            out = np.empty((len(batch), *self._output_shape(options)), dtype=np.float32)

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
        """A thread pool kept for the processor's life: PIL releases the GIL while it decodes and resizes."""
        if getattr(self, "_executor", None) is None:
            with _OPEN_LOCK:
                if getattr(self, "_executor", None) is None:
                    workers = self.num_workers or min(os.cpu_count() or 1, 8)
                    self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vit-processor")
        return self._executor

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
                size = (options["size"]["width"], options["size"]["height"])
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
        size = (options["size"]["width"], options["size"]["height"])
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
