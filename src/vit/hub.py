"""Hub ids: turn `"google/vit-base-patch16-224"` into a local folder, through the real `huggingface_hub` client.

Every download goes through `huggingface_hub.hf_hub_download`, so the client's cache is shared with
transformers and the environment it respects is respected here: `HF_HUB_OFFLINE`, `HF_HOME`/`HF_HUB_CACHE`,
`HF_ENDPOINT` and `HF_TOKEN`. Only what is needed is fetched: `config.json`, the processor config when
asked for, and the first weights file that the repo has, in the order of `WEIGHTS_PREFERENCE` (a sharded
index brings its shards). After `config.json` every file is fetched at the commit that `config.json` came
from, so a branch that moves during a load never mixes two commits.

The client writes a download to `blobs/<etag>.incomplete` and renames it only when its size is right, so
an interrupted download is never mistaken for a complete file; the next call resumes it.

timm repos (`timm/vit_...`, `hf-hub:org/name`, or any repo whose config.json is timm's) are converted to
the canonical layout with `vit.convert`, once per commit: the converted folder is cached under
`$HF_HOME/vit/converted` (or `<cache_dir>/vit-converted`) and renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import HubError, ViTError

CONFIG_NAME = "config.json"
PROCESSOR_NAME = "preprocessor_config.json"
# Safetensors first, then HF's legacy formats; every framework reads every one of them.
WEIGHTS_PREFERENCE = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                      "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
TIMM_PREFIX = "hf-hub:"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# What the hub accepts as a repo id: "name" or "org/name", letters, digits, "-", "_", "." (no "--" or "..").
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[\w.-]+$")
_TIMM_POOLING = {"token": "cls", "avg": "mean"}


@dataclass(frozen=True)
class HubOptions:
    """The download options of `from_pretrained`, with transformers' names and meanings.

    Example:
        >>> HubOptions(revision="v1.0", local_files_only=True).revision
        'v1.0'
    """

    revision: str | None = None
    cache_dir: str | os.PathLike | None = None
    local_files_only: bool = False
    token: str | bool | None = None
    force_download: bool = False
    subfolder: str = ""

    @classmethod
    def pop_from(cls, kwargs: dict[str, Any]) -> HubOptions:
        """Take the hub options out of `kwargs` (and transformers' deprecated `use_auth_token`)."""
        legacy_token = kwargs.pop("use_auth_token", None)
        options = {name: kwargs.pop(name) for name in ("revision", "cache_dir", "local_files_only", "token",
                                                        "force_download", "subfolder") if name in kwargs}
        if options.get("token") is None and legacy_token is not None:
            options["token"] = legacy_token
        return cls(**{k: v for k, v in options.items() if v is not None})


def looks_like_hub_id(path: str | os.PathLike) -> bool:
    """True for "org/name", "name" and "hf-hub:org/name" when no local file or folder has that name."""
    if isinstance(path, os.PathLike):
        return False
    if path.startswith(TIMM_PREFIX):
        return True
    if os.path.exists(path) or path.startswith((".", "/", "~")) or "--" in path or ".." in path:
        return False
    return bool(_REPO_ID.match(path.split("@")[0]))


def resolve(path: str | os.PathLike, options: HubOptions | None = None, *, weights: bool = True,
            processor: str | None = None, convert_timm: bool = True,
            timm_options: dict[str, Any] | None = None) -> str:
    """A local folder that holds config.json (and weights, and the processor config) for `path`.

    `path` is a local folder (its `options.subfolder`) or a hub id. `processor` is None, "optional" or
    "required". With `convert_timm`, a timm repo comes back converted to the canonical layout; without, as
    its own files (for `vit convert`). Errors name the repo, the revision and the file, and say what to do.
    """
    options = options or HubOptions()
    local = os.fspath(path)
    if not looks_like_hub_id(local):
        from .files import resolve_local_folder

        folder = resolve_local_folder(local, "config.json and weights" if weights else CONFIG_NAME)
        if options.subfolder:
            folder = resolve_local_folder(os.path.join(folder, options.subfolder), f"subfolder {options.subfolder!r}")
        return folder
    repo_id, revision, is_timm = _parse_hub_id(local, options.revision)
    hub = _Hub(repo_id, revision, options)
    config_file = hub.fetch(CONFIG_NAME)
    folder = os.path.dirname(config_file)
    if is_timm or _is_timm_config(config_file):
        if convert_timm:
            return _converted_timm(hub, folder, timm_options or {})
        if weights:
            hub.fetch_weights()
        return folder
    if weights:
        hub.fetch_weights()
    if processor:
        hub.fetch(PROCESSOR_NAME, required=processor == "required")
    return folder


def timm_options_from_config(folder: str) -> dict[str, Any]:
    """What timm's config.json says that its weights do not: the head count and the pooling."""
    try:
        with open(os.path.join(folder, CONFIG_NAME), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError):
        return {}
    out: dict[str, Any] = {}
    model_args = data.get("model_args") or {}
    if isinstance(model_args, dict) and isinstance(model_args.get("num_heads"), int):
        out["num_attention_heads"] = model_args["num_heads"]
    pool = model_args.get("global_pool", data.get("global_pool")) if isinstance(model_args, dict) else data.get("global_pool")
    if pool in _TIMM_POOLING:
        out["pooling"] = _TIMM_POOLING[pool]
    return out


# ------------------------------------------------------------------------------------------------ internals
def _parse_hub_id(path: str, revision: str | None) -> tuple[str, str | None, bool]:
    """(repo id, revision, whether timm's `hf-hub:` prefix said it is a timm model)."""
    is_timm = path.startswith(TIMM_PREFIX)
    repo_id = path.removeprefix(TIMM_PREFIX)
    if "@" in repo_id:  # timm's "hf-hub:org/name@revision"
        repo_id, _, pinned = repo_id.partition("@")
        if revision is not None and revision != pinned:
            raise HubError(f"{path!r} pins revision {pinned!r} but revision={revision!r} was also given; pass one.")
        revision = pinned
    if not _REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id:
        raise HubError(f"{path!r} is neither a local folder nor a hub id of the form 'org/name'.")
    return repo_id, revision, is_timm


def _is_timm_config(config_file: str) -> bool:
    """timm writes `architecture` and `pretrained_cfg` into config.json; transformers writes neither."""
    try:
        with open(config_file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and ("pretrained_cfg" in data or "architecture" in data)


def _offline(options: HubOptions) -> bool:
    from huggingface_hub import constants

    return options.local_files_only or bool(getattr(constants, "HF_HUB_OFFLINE", False))


class _Hub:
    """One repo at one revision: downloads through the client and explains its errors."""

    def __init__(self, repo_id: str, revision: str | None, options: HubOptions):
        self.repo_id = repo_id
        self.revision = revision  # what the user asked for (None = the default branch)
        self.pinned = revision  # the commit after the first download, so every file comes from one commit
        self.options = options

    @property
    def where(self) -> str:
        at = f" at revision {self.revision!r}" if self.revision else ""
        sub = f", subfolder {self.options.subfolder!r}" if self.options.subfolder else ""
        return f"repo {self.repo_id!r}{at}{sub}"

    def _relative(self, name: str) -> str:
        return f"{self.options.subfolder.strip('/')}/{name}" if self.options.subfolder else name

    def fetch(self, name: str, required: bool = True) -> str | None:
        """The local path of `name`, downloaded if needed. A missing optional file gives None."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        o = self.options
        if not required and self.cached(name) is False:
            return None  # the cache knows the repo lacks it (the client itself checks this only online)
        try:
            path = hf_hub_download(self.repo_id, self._relative(name), revision=self.pinned, cache_dir=o.cache_dir,
                                   local_files_only=o.local_files_only, token=o.token, force_download=o.force_download)
        except LocalEntryNotFoundError as err:
            raise self._not_cached(name, err) from err
        except EntryNotFoundError as err:
            if not required:
                return None
            raise HubError(f"The {self.where} has no file {self._relative(name)!r}. "
                           f"{_missing_file_hint(name)}") from err
        except ViTError:
            raise
        except Exception as err:  # noqa: BLE001 -- each client error is explained, with the cause chained
            raise self._explain(name, err) from err
        if self.pinned is None or not _COMMIT.match(self.pinned):
            commit = Path(path).parents[len(Path(self._relative(name)).parts) - 1].name
            if _COMMIT.match(commit):
                self.pinned = commit
        return path

    def cached(self, name: str) -> str | bool | None:
        """The cached path of `name` at the pinned commit, False if the cache knows the repo lacks it, else None."""
        from huggingface_hub import try_to_load_from_cache

        if self.options.force_download:
            return None
        found = try_to_load_from_cache(self.repo_id, self._relative(name), cache_dir=self.options.cache_dir,
                                       revision=self.pinned)
        if isinstance(found, str):
            return found
        return None if found is None else False  # the client's marker of a file known not to exist

    def fetch_weights(self) -> str:
        """The best weights file of the repo (and all its shards), from the cache when it has them."""
        offline = _offline(self.options)
        for name in WEIGHTS_PREFERENCE:
            path = self.cached(name)
            if path is False:
                continue
            if path is None:
                if offline:
                    continue  # unknown without the network: a later candidate may be cached
                path = self.fetch(name, required=False)
                if path is None:
                    continue
            if name.endswith(".index.json"):
                self._fetch_shards(path)
            return path
        if offline:
            raise HubError(
                f"The weights of the {self.where} are not in the cache ({self._cache()}), and downloads are off "
                f"({self._why_offline()}). Run once with network access to download them, or pass a local folder."
            )
        raise HubError(
            f"The {self.where} has none of the weight files {', '.join(WEIGHTS_PREFERENCE)}. If it holds a timm or "
            "original-JAX checkpoint under another name, download it and convert it with `vit convert`."
        )

    def _fetch_shards(self, index_path: str) -> None:
        try:
            with open(index_path, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise HubError(f"{os.path.basename(index_path)} of the {self.where} is not a valid shard index ({err}).") from err
        for shard in shards:
            if os.path.basename(shard) != shard:
                raise HubError(f"The shard index of the {self.where} names {shard!r}, which is not a file beside it.")
            self.fetch(shard)

    def _cache(self) -> str:
        from huggingface_hub import constants

        return os.fspath(self.options.cache_dir or constants.HF_HUB_CACHE)

    def _why_offline(self) -> str:
        return "local_files_only=True" if self.options.local_files_only else "HF_HUB_OFFLINE=1"

    def _not_cached(self, name: str, err: Exception) -> HubError:
        from huggingface_hub.errors import OfflineModeIsEnabled

        if _offline(self.options) or isinstance(err.__cause__, OfflineModeIsEnabled):
            return HubError(
                f"{self._relative(name)!r} of the {self.where} is not in the cache ({self._cache()}), and downloads "
                f"are off ({self._why_offline()}). Run once with network access (unset HF_HUB_OFFLINE, "
                "local_files_only=False) to download it, or pass a local folder."
            )
        return HubError(
            f"Could not reach the hub to get {self._relative(name)!r} of the {self.where}, and it is not in the cache "
            f"({self._cache()}): {err.__cause__ or err}. Check the network (and HF_ENDPOINT), then run again."
        )

    def _explain(self, name: str, err: Exception) -> HubError:
        from huggingface_hub import constants
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        page = f"{constants.ENDPOINT}/{self.repo_id}"
        token_hint = ("the token given was not accepted: check it, and that it can read this repo"
                      if self.options.token or os.environ.get("HF_TOKEN") else
                      "pass token=... or set the HF_TOKEN environment variable (or log in once with `hf auth login`)")
        status = getattr(getattr(err, "response", None), "status_code", None)
        if isinstance(err, GatedRepoError) or (status in (401, 403) and not isinstance(err, RepositoryNotFoundError)):
            return HubError(
                f"The {self.where} is gated or private (HTTP {status}): {token_hint}. If it is gated, accept its "
                f"conditions at {page} first."
            )
        if isinstance(err, RepositoryNotFoundError):
            return HubError(
                f"No local folder {self.repo_id!r}, and the hub ({constants.ENDPOINT}) has no {self.where}: check the "
                f"id. If the repo is private or gated, {token_hint}."
            )
        if isinstance(err, RevisionNotFoundError):
            return HubError(
                f"The {self.where} does not exist: the repo has no branch, tag or commit {self.revision!r}. Pass "
                f"revision= one that exists (see {page}/tree/main)."
            )
        if isinstance(err, HfHubHTTPError):
            return HubError(f"Downloading {self._relative(name)!r} of the {self.where} failed: {err}")
        if isinstance(err, (ValueError, TypeError)):  # the client refused the request itself
            return HubError(f"huggingface_hub refused to get {self._relative(name)!r} of the {self.where}: {err} "
                            f"{err.__cause__ or ''}".rstrip())
        return HubError(
            f"Downloading {self._relative(name)!r} of the {self.where} was interrupted ({type(err).__name__}: {err}). "
            "The partial file stays in the cache as '.incomplete' and is never read as complete; run the same "
            "call again to resume it."
        )


def _missing_file_hint(name: str) -> str:
    if name == PROCESSOR_NAME:
        return "Build the processor with ViTImageProcessor(size=...) instead, or pass a repo that has one."
    if name == CONFIG_NAME:
        return "Is this a ViT model repo? Pass the subfolder= that holds config.json if it is not at the top."
    return "The repo is incomplete at this revision; try another revision."


def _converted_timm(hub: _Hub, snapshot: str, timm_options: dict[str, Any]) -> str:
    """The canonical folder for a timm snapshot, converted once per commit and cached."""
    from huggingface_hub import constants

    from . import __version__
    from .convert import convert_checkpoint

    options = {**timm_options_from_config(snapshot), **{k: v for k, v in timm_options.items() if v is not None}}
    root = (os.path.join(os.fspath(hub.options.cache_dir), "vit-converted") if hub.options.cache_dir
            else os.path.join(constants.HF_HOME, "vit", "converted"))
    commit = hub.pinned if hub.pinned and _COMMIT.match(hub.pinned) else Path(snapshot).name
    # The key is the commit, plus everything else that changes the result: subfolder, options, converter version.
    recipe = json.dumps({"subfolder": hub.options.subfolder, "options": options, "vit": __version__}, sort_keys=True)
    key = f"{commit}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    final = os.path.join(root, "models--" + hub.repo_id.replace("/", "--"), key)
    if os.path.isdir(final) and not hub.options.force_download:
        return final
    hub.fetch_weights()
    os.makedirs(os.path.dirname(final), exist_ok=True)
    building = tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=os.path.dirname(final))
    try:
        convert_checkpoint(snapshot, building, "timm", **options)
        if os.path.isdir(final):  # force_download: retire the old folder whole before the new one appears
            stale = tempfile.mkdtemp(prefix=f".{key}.", suffix=".old", dir=os.path.dirname(final))
            os.rename(final, os.path.join(stale, "folder"))
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(building, final)  # a folder appears complete or not at all
        except OSError:
            if not os.path.isdir(final):  # not the race in which another process finished first
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return final


__all__ = ["HubOptions", "WEIGHTS_PREFERENCE", "looks_like_hub_id", "resolve", "timm_options_from_config"]
