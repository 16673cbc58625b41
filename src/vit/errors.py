"""The exceptions that `vit` raises for bad input. Each message names the problem and the fix."""


class ViTError(Exception):
    """Base class of every error that `vit` raises on purpose."""


class ConfigError(ViTError, ValueError):
    """An invalid configuration value or config.json."""


class CheckpointError(ViTError, ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


class ImageError(ViTError, ValueError):
    """An image or pixel array that cannot be processed."""


class HubError(ViTError, OSError):
    """A hub id that cannot be loaded: a missing repo, revision or file, no access, or offline without a cache."""
