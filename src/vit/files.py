"""File-system helpers shared by every save and load: local-folder resolution and atomic writes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator

from .errors import CheckpointError


def resolve_local_folder(path: str | os.PathLike, wanted: str = "") -> str:
    """Return `path` if it is a local folder; otherwise an error (hub ids are resolved by `vit.hub.resolve`)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return path
    looks_like_hub_id = path.count("/") <= 1 and not path.startswith((".", "/", "~")) and not os.path.exists(path)
    if looks_like_hub_id:
        raise CheckpointError(
            f"{path!r} is not a local folder. If it is a Hugging Face hub id, load it with from_pretrained or the "
            "`vit` command, which download it, or resolve it first with `vit.hub.resolve(path)`."
        )
    what = f" (looking for {wanted})" if wanted else ""
    raise CheckpointError(f"No such folder: {path!r}{what}. Pass the folder that holds config.json and the weights.")


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to `final_path`; on success rename it into place, on failure delete it.

    The rename is atomic on POSIX, so readers see either the old file or the new one, never a mixture.
    """
    final_path = os.fspath(final_path)
    folder = os.path.dirname(os.path.abspath(final_path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(final_path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _publish_mode(tmp)
        os.replace(tmp, final_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(final_path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` and move the result into place atomically."""
    with atomic_path(final_path) as tmp:
        write(tmp)


def atomic_write_text(final_path: str | os.PathLike, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(final_path, write)


@contextlib.contextmanager
def folder_lock(folder: str) -> Iterator[None]:
    """An exclusive advisory lock on the folder itself, so two processes never interleave their renames."""
    import fcntl

    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _publish_mode(path: str) -> None:
    """mkstemp creates files readable by their owner only; give them the umask's usual permissions."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_save_folder(
    folder: str | os.PathLike,
    writers: dict[str, Callable[[str], None]],
    remove_stale: Callable[[str], bool] | None = None,
) -> None:
    """Write several files of one checkpoint so that readers never see a mixture of two saves.

    Every file is first written to a temporary name; only when all of them succeeded are they renamed
    into place, under a lock that serialises concurrent savers. A failure leaves the old files untouched.
    Files of the folder for which `remove_stale(name)` is true and that this save did not write (the
    weights of an earlier save in another format or sharding) are deleted under the same lock, before the
    renames, so that no reader pairs them with the new files.
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    temps: dict[str, str] = {}
    try:
        for name, write in writers.items():
            fd, tmp = tempfile.mkstemp(prefix="." + name + ".", suffix=".tmp", dir=folder)
            os.close(fd)
            temps[name] = tmp
            write(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            _publish_mode(tmp)
        with folder_lock(folder):
            if remove_stale is not None:
                for name in os.listdir(folder):
                    if name not in temps and remove_stale(name) and os.path.isfile(os.path.join(folder, name)):
                        os.unlink(os.path.join(folder, name))
            for name, tmp in temps.items():
                os.replace(tmp, os.path.join(folder, name))
    except BaseException:
        for tmp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
