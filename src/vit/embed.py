"""Embed a collection of images into Parquet, locally or on Ray, resumably; and search the result.

The output `OUT.parquet` is a folder of shards, `part-00000.parquet`, `part-00001.parquet`, ..., each holding
one row per image: `path`, `embedding` (a fixed-size list of float32), `model`, `revision`, `width` and
`height` (of the original image). Shard `k` is the `k`-th run of `shard_size` images of the sorted source list,
and is written atomically, so a reader (pyarrow, pandas, Ray, DuckDB: they all skip the `_`-prefixed files) sees
whole shards only. `_manifest.json` records what the run was (model, revision, pooling, the list of images);
`resume=True` checks it and skips the shards already written, so an interrupted run loses at most the shards
in flight (one on the local engine). Unreadable images never stop the run: each shard records them with the
reason in its metadata, and `_failures.tsv` lists them all (path, reason) when the run ends.

Example:
    >>> import os, tempfile
    >>> import pyarrow.parquet as pq
    >>> from PIL import Image
    >>> from vit.cli import demo_model_dir
    >>> from vit.embed import embed_images
    >>> images, out = tempfile.mkdtemp(), os.path.join(tempfile.mkdtemp(), "embeddings.parquet")
    >>> for shade in (0, 128, 255):
    ...     Image.new("L", (40, 30), shade).save(os.path.join(images, f"grey-{shade}.png"))
    >>> embed_images(images, out, model=demo_model_dir(), shard_size=2, progress=False)["rows"]
    3
    >>> pq.read_table(out).schema.field("embedding").type
    FixedSizeListType(fixed_size_list<element: float>[64])
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ImageError, ViTError

POOLS = ("cls", "mean", "pooler", "image_embeds")
ENGINES = ("local", "ray")
MANIFEST = "_manifest.json"
FAILURES = "_failures.tsv"
RAY_STAGING = "_ray_staging"
SHARD_METADATA_KEY = b"vit.embed"
PREFIX = {"pt": "", "tf": "TF", "flax": "Flax"}


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


# ------------------------------------------------------------------------------------ sources
def list_sources(source: str) -> list[str]:
    """The images of a folder (walked recursively, sorted) or of a text file with one path per line.

    In a text file, blank lines and lines starting with '#' are skipped, and relative paths are taken relative
    to the text file's folder.
    """
    from .cli import IMAGE_SUFFIXES, collect_images

    if os.path.isdir(source):
        files, _, _ = collect_images([source])
        return files
    if os.path.isfile(source) and os.path.splitext(source)[1].lower() not in IMAGE_SUFFIXES:
        base = os.path.dirname(os.path.abspath(source))
        with open(source, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
        return [line if os.path.isabs(line) else os.path.normpath(os.path.join(base, line))
                for line in lines if line and not line.startswith("#")]
    raise ViTError(f"SOURCE {source!r} is neither a folder nor a text file of image paths; pass one of those "
                   "(with --engine ray, also anything ray.data.read_images reads, e.g. s3://bucket/prefix).")


# ------------------------------------------------------------------------------------ the model
def load_model(model_dir: str, framework: str, pool: str = "cls") -> Any:
    """The encoder of the checkpoint in `model_dir`, in `framework`, ready for inference.

    A checkpoint whose architecture `vit` provides under that name (for example a CLIP vision tower with a
    projection, for `image_embeds`) is loaded with that class; any other (ViTModel, a classifier, MIM) as the
    bare encoder. The pooler is built only for `pool="pooler"`, and must then come from the checkpoint.
    """
    import vit

    from .config import ViTConfig

    if framework not in PREFIX:
        raise ViTError(f"framework must be one of {', '.join(PREFIX)}, got {framework!r}.")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ViTError(f"No model in {model_dir!r} (no config.json); pass --model with an HF-format folder.")
    config = ViTConfig.from_pretrained(model_dir)
    architectures = [a for a in (config.extra.get("architectures") or [])
                     if a not in ("ViTModel", "ViTForImageClassification", "ViTForMaskedImageModeling")]
    klass = next((getattr(vit, PREFIX[framework] + a, None) for a in architectures
                  if getattr(vit, PREFIX[framework] + a, None) is not None), None)
    if klass is None:
        klass = getattr(vit, PREFIX[framework] + "ViTModel")
        model = klass.from_pretrained(model_dir, add_pooling_layer=pool == "pooler")
    else:
        model = klass.from_pretrained(model_dir)
    fresh = sorted(getattr(getattr(model, "load_report", None), "initialised", []) or [])
    if fresh:
        # A freshly initialised pooler or projection would give random embeddings without any error.
        raise ViTError(f"The checkpoint in {model_dir} lacks {', '.join(fresh)}, so --pool {pool} would give "
                       "random numbers; choose --pool cls or --pool mean.")
    return model.eval() if framework == "pt" else model


def load_processor(model_dir: str, config: Any) -> Any:
    from .processor import PROCESSOR_NAME, ViTImageProcessor

    if os.path.isfile(os.path.join(model_dir, PROCESSOR_NAME)):
        return ViTImageProcessor.from_pretrained(model_dir)
    return ViTImageProcessor(size=dict(zip(("height", "width"), config.image_hw, strict=True)))


def model_identity(model_dir: str) -> tuple[str, str]:
    """(model id, revision) of a local model folder.

    A snapshot of the Hugging Face cache (`models--org--name/snapshots/SHA`) is `org/name` at `SHA`; a folder
    made by `huggingface-cli download --local-dir` has its commit in `.cache/huggingface/download/`. Any other
    folder is identified by its absolute path, and its revision is the SHA-256 of its config and weights, so
    embeddings from different weights are never mixed.
    """
    from .checkpoint import find_weights_file

    folder = os.path.abspath(model_dir)
    parts = folder.split(os.sep)
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3][len("models--"):].replace("--", "/"), parts[-1]
    weights = find_weights_file(folder)
    metadata = os.path.join(folder, ".cache", "huggingface", "download", os.path.basename(weights) + ".metadata")
    if os.path.isfile(metadata):
        with open(metadata, encoding="utf-8") as f:
            commit = f.readline().strip()
        if commit:
            return folder, commit
    files = [os.path.join(folder, "config.json"), weights]
    if weights.endswith(".json"):  # a sharded checkpoint's index: hash the shards too
        with open(weights, encoding="utf-8") as f:
            files += sorted({os.path.join(folder, v) for v in json.load(f).get("weight_map", {}).values()})
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return folder, "sha256:" + digest.hexdigest()[:16]


class Embedder:
    """Loads a model once and turns images into one embedding each.

    Example:
        >>> from vit.cli import demo_model_dir
        >>> from vit.embed import Embedder
        >>> from PIL import Image
        >>> embedder = Embedder(demo_model_dir(), "pt", "cls")
        >>> pixels, size = embedder.decode(Image.new("L", (40, 30), 128))
        >>> embedder.embed(pixels[None]).shape, size
        ((1, 64), (40, 30))
    """

    def __init__(self, model_dir: str, framework: str = "pt", pool: str = "cls", batch_size: int = 32) -> None:
        if pool not in POOLS:
            raise ViTError(f"--pool must be one of {', '.join(POOLS)}, got {pool!r}.")
        self.model_dir, self.framework, self.pool, self.batch_size = model_dir, framework, pool, max(1, batch_size)
        self.model = load_model(model_dir, framework, pool)
        self.config = self.model.config
        self.processor = load_processor(model_dir, self.config)
        if pool == "cls" and not getattr(self.config, "class_token", True):
            raise ViTError("--pool cls needs a class token, and this model has none; use --pool mean.")

    def decode(self, image: Any) -> tuple[np.ndarray, tuple[int, int]]:
        """(pixel values (C, H, W), original (width, height)) of a path or an image; raises ImageError."""
        from PIL import Image

        if isinstance(image, (str, os.PathLike)):
            image = self.processor._open(image)
        if isinstance(image, Image.Image):
            width, height = image.size
            if self.processor.apply_exif_orientation and image.getexif().get(0x0112) in (5, 6, 7, 8):
                width, height = height, width  # rotated by a quarter turn when shown
        else:
            array = np.asarray(image)
            height, width = array.shape[:2]
        try:
            pixels = self.processor(image, return_tensors="np").pixel_values[0]
        except ImageError:
            raise
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageError(f"cannot decode the image: {err}") from err
        return pixels, (int(width), int(height))

    def embed(self, pixel_values: np.ndarray) -> np.ndarray:
        """(batch, dim) float32 embeddings of processed images."""
        from .explain import forward

        count = len(pixel_values)
        if self.framework == "flax" and count < self.batch_size:
            # One compiled shape: pad the last batch instead of compiling again for its size.
            pad = np.zeros((self.batch_size - count, *pixel_values.shape[1:]), pixel_values.dtype)
            pixel_values = np.concatenate([pixel_values, pad])
        outputs = forward(self.model, pixel_values)
        return self._pool(outputs, pixel_values.shape)[:count]

    def _pool(self, outputs: Any, pixel_shape: tuple[int, ...]) -> np.ndarray:
        from .explain import to_numpy, token_layout

        if self.pool in ("pooler", "image_embeds"):
            value = getattr(outputs, "pooler_output" if self.pool == "pooler" else "image_embeds", None)
            if value is None:
                raise ViTError(f"{type(self.model).__name__} has no {self.pool!r} output; --pool image_embeds needs "
                               "a model with a projection (a CLIP vision tower); use --pool cls, mean or pooler.")
            return to_numpy(value)
        sequence = to_numpy(outputs.last_hidden_state)
        if self.pool == "cls":
            return sequence[:, 0]
        if self.config.pooling == "mean" and hasattr(self.model, "pool"):
            return self._model_pool(outputs.last_hidden_state)  # the model's own mean: fc_norm, registers
        layout = token_layout(self.config, pixel_shape, sequence.shape[1])
        return sequence[:, layout.num_prefix:].mean(axis=1)

    def _model_pool(self, sequence: Any) -> np.ndarray:
        from .explain import to_numpy

        if self.framework == "pt":
            import torch

            with torch.inference_mode():
                return to_numpy(self.model.pool(sequence))
        return to_numpy(self.model.pool(sequence))


# ------------------------------------------------------------------------------------ shards
@dataclass
class Plan:
    """What a run embeds: the sorted image list cut into shards, and how."""

    out: str
    paths: list[str]
    shard_size: int
    manifest: dict[str, Any]
    shards: list[list[str]] = field(init=False)

    def __post_init__(self) -> None:
        self.shards = [self.paths[i:i + self.shard_size] for i in range(0, len(self.paths), self.shard_size)]


def _schema(dim: int) -> Any:
    import pyarrow as pa

    return pa.schema([
        ("path", pa.string()), ("embedding", pa.list_(pa.float32(), dim)), ("model", pa.string()),
        ("revision", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ])


def _shard_table(rows: list[tuple[str, np.ndarray, int, int]], dim: int, model_id: str, revision: str,
                 shard: int, failures: list[tuple[str, str]]) -> Any:
    import pyarrow as pa

    schema = _schema(dim)
    flat = np.concatenate([r[1] for r in rows]).astype(np.float32) if rows else np.zeros(0, np.float32)
    table = pa.table({
        "path": pa.array([r[0] for r in rows], pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(flat), dim),
        "model": pa.array([model_id] * len(rows), pa.string()),
        "revision": pa.array([revision] * len(rows), pa.string()),
        "width": pa.array([r[2] for r in rows], pa.int32()),
        "height": pa.array([r[3] for r in rows], pa.int32()),
    }, schema=schema)
    meta = {"shard": shard, "failures": [list(f) for f in failures]}
    return table.replace_schema_metadata({SHARD_METADATA_KEY: json.dumps(meta).encode()})


def _write_shard(out: str, table: Any) -> None:
    import pyarrow.parquet as pq

    from .files import atomic_path

    shard = json.loads(table.schema.metadata[SHARD_METADATA_KEY])["shard"]
    with atomic_path(os.path.join(out, shard_name(shard))) as tmp:
        pq.write_table(table, tmp)


def _shard_record(out: str, index: int) -> tuple[list[str], list[tuple[str, str]]] | None:
    """(paths written, failures) of a finished shard file, or None if it is missing or unreadable."""
    import pyarrow.parquet as pq

    path = os.path.join(out, shard_name(index))
    if not os.path.isfile(path):
        return None
    try:
        file = pq.ParquetFile(path)
        meta = json.loads((file.schema_arrow.metadata or {})[SHARD_METADATA_KEY])
        written = file.read(columns=["path"]).column("path").to_pylist()
    except Exception:  # a damaged file is simply redone
        return None
    return written, [tuple(f) for f in meta.get("failures", [])]


def _shard_done(out: str, index: int, expected: list[str]) -> bool:
    record = _shard_record(out, index)
    if record is None:
        return False
    written, failures = record
    return sorted(written + [p for p, _ in failures]) == sorted(expected)


def _prepare(source_paths: list[str], out: str, manifest: dict[str, Any], shard_size: int, resume: bool,
             overwrite: bool) -> Plan:
    from .files import atomic_write_text

    if os.path.exists(out) and not os.path.isdir(out):
        raise ViTError(f"{out!r} exists and is a file; the output is a folder of Parquet shards. Choose another --out.")
    existing = os.path.join(out, MANIFEST)
    if os.path.isdir(out) and os.listdir(out):
        if overwrite:
            shutil.rmtree(out)
        elif not resume:
            raise ViTError(f"{out!r} already holds a run; pass --resume to continue it, or remove the folder.")
        elif not os.path.isfile(existing):
            raise ViTError(f"{out!r} is not empty and holds no {MANIFEST}; it is not a vit embed output.")
        else:
            with open(existing, encoding="utf-8") as f:
                previous = json.load(f)
            changed = [k for k in manifest if previous.get(k) != manifest[k]]
            if changed:
                raise ViTError(f"--resume: this run differs from the one in {out!r} in {', '.join(changed)} "
                               f"({', '.join(f'{k}: {previous.get(k)!r} -> {manifest[k]!r}' for k in changed)}); "
                               "resume with the same options, or write to another --out.")
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):
        if name.startswith(".") and name.endswith(".tmp"):  # a shard whose write a kill interrupted
            os.unlink(os.path.join(out, name))
    atomic_write_text(existing, json.dumps(manifest, indent=2))
    return Plan(out, source_paths, shard_size, manifest)


def _finish(plan: Plan) -> dict[str, Any]:
    """Write the failures sidecar and return the run's summary."""
    from .files import atomic_write_text

    rows, failures, missing = 0, [], []
    for index in range(len(plan.shards)):
        record = _shard_record(plan.out, index)
        if record is None:
            missing.append(index)
            continue
        rows += len(record[0])
        failures += record[1]
    text = "path\treason\n" + "".join(f"{p}\t{' '.join(r.split())}\n" for p, r in failures)
    atomic_write_text(os.path.join(plan.out, FAILURES), text)
    if missing:
        raise ViTError(f"Shards {missing} of {plan.out!r} were not written; run again with --resume.")
    return {"out": plan.out, "images": len(plan.paths), "rows": rows, "failures": len(failures),
            "shards": len(plan.shards)}


def _manifest(paths: list[str], model_id: str, revision: str, pool: str, shard_size: int) -> dict[str, Any]:
    listing = hashlib.sha256("\n".join(paths).encode("utf-8", "surrogateescape")).hexdigest()
    return {"format": 1, "model": model_id, "revision": revision, "pool": pool, "shard_size": shard_size,
            "images": len(paths), "paths_sha256": listing}


# ------------------------------------------------------------------------------------ engines
def embed_images(
    source: str,
    out: str,
    model: str,
    pool: str = "cls",
    batch_size: int = 32,
    framework: str = "pt",
    engine: str = "local",
    resume: bool = False,
    overwrite: bool = False,
    shard_size: int = 1024,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
    progress: bool | None = None,
    on_shard: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Embed every image of `source` into the Parquet folder `out`; return a summary (rows, failures, ...).

    `engine="local"` decodes on a thread pool while the model runs; `engine="ray"` runs an actor pool on the
    Ray cluster of `RAY_ADDRESS` (or a local one). `on_shard(k)` is called after shard `k` is written
    (local engine).
    """
    if engine not in ENGINES:
        raise ViTError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}.")
    if pool not in POOLS:
        raise ViTError(f"--pool must be one of {', '.join(POOLS)}, got {pool!r}.")
    if batch_size < 1 or shard_size < 1:
        raise ViTError("--batch-size and --shard-size must be positive.")
    model_id, revision = model_identity(model)
    if engine == "ray" and not (os.path.isdir(source) or os.path.isfile(source)):
        if resume:
            raise ViTError("--resume needs a folder or a list of paths as SOURCE, so that shards are known up front.")
        return _ray_read_images(source, out, model, model_id, revision, pool, batch_size, framework, workers,
                                gpus_per_worker, overwrite)
    paths = list_sources(source)
    plan = _prepare(paths, out, _manifest(paths, model_id, revision, pool, shard_size), shard_size, resume, overwrite)
    if engine == "ray":
        _ray_engine(plan, model, model_id, revision, pool, batch_size, framework, workers, gpus_per_worker)
    else:
        _local_engine(plan, model, model_id, revision, pool, batch_size, framework, progress, on_shard)
    return _finish(plan)


def _decode_or_reason(embedder: Embedder, path: str) -> tuple[np.ndarray, tuple[int, int]] | str:
    try:
        return embedder.decode(path)
    except (ImageError, OSError, ValueError) as err:
        return str(err)


def _local_engine(plan: Plan, model_dir: str, model_id: str, revision: str, pool: str, batch_size: int,
                  framework: str, progress: bool | None, on_shard: Callable[[int], None] | None) -> None:
    from tqdm import tqdm

    pending = [k for k, shard in enumerate(plan.shards) if not _shard_done(plan.out, k, shard)]
    if not pending:
        return
    embedder = Embedder(model_dir, framework, pool, batch_size)
    bar = tqdm(total=sum(len(plan.shards[k]) for k in pending), unit="img", file=sys.stderr, desc="embedding",
               disable=None if progress is None else not progress, dynamic_ncols=True)
    workers = min(8, os.cpu_count() or 1)
    # A bounded window of decodes in flight: the next batches decode while the model runs, memory stays flat.
    window = 2 * batch_size + workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vit-embed-decode") as pool_:
        stream = ((k, path) for k in pending for path in plan.shards[k])
        in_flight: deque[tuple[int, str, Future]] = deque()

        def refill() -> None:
            while len(in_flight) < window:
                item = next(stream, None)
                if item is None:
                    return
                in_flight.append((*item, pool_.submit(_decode_or_reason, embedder, item[1])))

        refill()
        for k in pending:
            rows: list[tuple[str, np.ndarray, int, int]] = []
            failures: list[tuple[str, str]] = []
            batch: list[tuple[str, np.ndarray, tuple[int, int]]] = []
            remaining = len(plan.shards[k])

            while remaining:
                shard, path, future = in_flight.popleft()
                refill()
                remaining -= 1
                result = future.result()
                if isinstance(result, str):
                    failures.append((path, result))
                    bar.update(1)
                else:
                    batch.append((path, *result))
                    if len(batch) == batch_size:
                        _embed_batch(embedder, batch, rows, bar)
            _embed_batch(embedder, batch, rows, bar)
            dim = rows[0][1].shape[0] if rows else _embedding_dim(embedder)
            _write_shard(plan.out, _shard_table(rows, dim, model_id, revision, k, failures))
            if on_shard is not None:
                on_shard(k)
    bar.close()


def _embed_batch(embedder: Embedder, batch: list, rows: list, bar: Any) -> None:
    """Embed the decoded images in `batch` into `rows` (path, vector, width, height), then empty it."""
    if batch:
        vectors = embedder.embed(np.stack([b[1] for b in batch]))
        rows.extend((path, v, size[0], size[1]) for (path, _, size), v in zip(batch, vectors, strict=True))
        bar.update(len(batch))
        batch.clear()


def _embedding_dim(embedder: Embedder) -> int:
    config = embedder.config
    channels = config.num_channels
    h, w = config.image_hw
    return int(embedder.embed(np.zeros((1, channels, h, w), np.float32)).shape[1])


# ------------------------------------------------------------------------------------ Ray
def _ray_init(workers: int | None) -> Any:
    try:
        import ray
    except ImportError as err:
        raise ViTError("--engine ray needs Ray: pip install 'vit[embed]' (or pip install 'ray[data]').") from err
    if not ray.is_initialized():
        # RAY_ADDRESS, when set, makes this join that cluster; otherwise it starts a local instance.
        ray.init(log_to_driver=False, **({} if os.environ.get("RAY_ADDRESS") else {"num_cpus": workers}))
    return ray


class _RayShardEmbedder:
    """A Ray Data actor: loads the model once, then embeds whole shards (one input row = one shard)."""

    def __init__(self, model_dir: str, framework: str, pool: str, batch_size: int, model_id: str,
                 revision: str) -> None:
        self.embedder = Embedder(model_dir, framework, pool, batch_size)
        self.model_id, self.revision = model_id, revision
        self.dim = _embedding_dim(self.embedder)
        self.decoder = ThreadPoolExecutor(max_workers=4, thread_name_prefix="vit-embed-decode")

    def _decoded_chunks(self, paths: list[str]) -> Any:
        """Batches of (path, decoded or failure reason); the next batch decodes while this one is embedded, so
        an actor holds two batches of pixels at most, whatever the shard size."""
        size = self.embedder.batch_size
        chunks = [paths[i:i + size] for i in range(0, len(paths), size)]
        ahead = None
        for index, chunk in enumerate(chunks):
            futures = ahead or [self.decoder.submit(_decode_or_reason, self.embedder, p) for p in chunk]
            following = chunks[index + 1] if index + 1 < len(chunks) else []
            ahead = [self.decoder.submit(_decode_or_reason, self.embedder, p) for p in following]
            yield list(zip(chunk, (f.result() for f in futures), strict=True))

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        tables = []
        for shard, paths_json in zip(batch.column("shard").to_pylist(), batch.column("paths").to_pylist(), strict=True):
            rows, failures = [], []
            for chunk in self._decoded_chunks(json.loads(paths_json)):
                good = [(p, d) for p, d in chunk if not isinstance(d, str)]
                failures += [(p, d) for p, d in chunk if isinstance(d, str)]
                if good:
                    vectors = self.embedder.embed(np.stack([d[0] for _, d in good]))
                    rows.extend((p, v, d[1][0], d[1][1]) for (p, d), v in zip(good, vectors, strict=True))
            table = _shard_table(rows, self.dim, self.model_id, self.revision, shard, failures)
            # Ray Data keeps columns, not schema metadata: the shard number goes in a column, and one marker row
            # (path null) per shard carries its row count and failures.
            table = table.replace_schema_metadata(None)
            table = table.append_column("shard", pa.array([shard] * len(rows), pa.int32()))
            table = table.append_column("shard_meta", pa.array([""] * len(rows), pa.string()))
            meta_row = pa.table({
                "path": pa.array([None], pa.string()),
                "embedding": pa.nulls(1, pa.list_(pa.float32(), self.dim)),
                "model": [self.model_id], "revision": [self.revision],
                "width": pa.array([None], pa.int32()), "height": pa.array([None], pa.int32()),
                "shard": pa.array([shard], pa.int32()),
                "shard_meta": [json.dumps({"shard": shard, "rows": len(rows), "failures": failures})],
            }, schema=table.schema)
            tables += [table, meta_row]
        return pa.concat_tables(tables)


def _ray_engine(plan: Plan, model_dir: str, model_id: str, revision: str, pool: str, batch_size: int,
                framework: str, workers: int | None, gpus_per_worker: float) -> None:
    staging = os.path.join(plan.out, RAY_STAGING)
    _promote_staged(plan, staging)  # shards a previous, interrupted run finished
    pending = [k for k, shard in enumerate(plan.shards) if not _shard_done(plan.out, k, shard)]
    if not pending:
        return
    ray = _ray_init(workers)
    if workers is None:
        resource = "GPU" if gpus_per_worker else "CPU"
        workers = max(1, int(ray.cluster_resources().get(resource, 1) / (gpus_per_worker or 1)))
    items = [{"shard": k, "paths": json.dumps(plan.shards[k])} for k in pending]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    embedded = dataset.map_batches(
        _RayShardEmbedder, batch_size=1, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=min(workers, len(items))),
        num_cpus=1, num_gpus=gpus_per_worker or None,
        fn_constructor_args=(os.path.abspath(model_dir), framework, pool, batch_size, model_id, revision),
    )
    # Writing is I/O: it must not wait for a CPU that the embedding actors hold.
    embedded.write_parquet(staging, ray_remote_args={"num_cpus": 0})
    _promote_staged(plan, staging)


def _promote_staged(plan: Plan, staging: str) -> None:
    """Turn the complete shards Ray wrote into `part-K.parquet` files (atomically), then drop the staging."""
    import pyarrow.parquet as pq

    if not os.path.isdir(staging):
        return
    pieces: dict[int, list[Any]] = {}
    metas: dict[int, dict[str, Any]] = {}
    for name in sorted(os.listdir(staging)):
        try:
            table = pq.read_table(os.path.join(staging, name))
        except Exception:  # a file cut short by an interruption: its shards are redone
            continue
        for shard in set(table.column("shard").to_pylist()):
            if not 0 <= shard < len(plan.shards):
                continue
            part = table.filter(table.column("shard").to_numpy() == shard)
            markers = [m for m in part.column("shard_meta").to_pylist() if m]
            if markers:
                metas[shard] = json.loads(markers[0])
            pieces.setdefault(shard, []).append(part.filter(part.column("path").is_valid()))
    for shard, meta in metas.items():
        import pyarrow as pa

        rows = pa.concat_tables(pieces.get(shard, []))
        keep, seen = [], set()
        for i, path in enumerate(rows.column("path").to_pylist()):  # a retried task may have written twice
            if path not in seen:
                seen.add(path)
                keep.append(i)
        rows = rows.take(keep).drop_columns(["shard", "shard_meta"])
        failures = [tuple(f) for f in meta["failures"]]
        if sorted(rows.column("path").to_pylist() + [p for p, _ in failures]) != sorted(plan.shards[shard]):
            continue
        table = rows.replace_schema_metadata(
            {SHARD_METADATA_KEY: json.dumps({"shard": shard, "failures": [list(f) for f in failures]}).encode()})
        if not _shard_done(plan.out, shard, plan.shards[shard]):
            _write_shard(plan.out, table)
    shutil.rmtree(staging, ignore_errors=True)


def _ray_read_images(source: str, out: str, model_dir: str, model_id: str, revision: str, pool: str,
                     batch_size: int, framework: str, workers: int | None, gpus_per_worker: float,
                     overwrite: bool) -> dict[str, Any]:
    """Any source `ray.data.read_images` reads (s3://, gs://, globs): one pass, written by `write_parquet`."""
    from .config import ViTConfig

    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise ViTError(f"{out!r} already exists; remove it first.")
        shutil.rmtree(out)
    ray = _ray_init(workers)
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("GPU" if gpus_per_worker else "CPU", 1)))
    mode = "L" if ViTConfig.from_pretrained(model_dir).num_channels == 1 else "RGB"
    # Reading and writing reserve no CPU: otherwise the actors, holding every CPU, would starve them.
    images = ray.data.read_images(source, include_paths=True, mode=mode, ray_remote_args={"num_cpus": 0})
    embedded = images.map_batches(
        _RayArrayEmbedder, batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1,
        num_gpus=gpus_per_worker or None,
        fn_constructor_args=(os.path.abspath(model_dir), framework, pool, batch_size, model_id, revision),
    )
    embedded.write_parquet(out, ray_remote_args={"num_cpus": 0})
    return {"out": out, "rows": pq_rows(out), "failures": 0}


def pq_rows(out: str) -> int:
    import pyarrow.parquet as pq

    return pq.read_table(out, columns=["path"]).num_rows


class _RayArrayEmbedder:
    """A Ray Data actor for decoded images from `read_images`: the processor runs here, in the worker."""

    def __init__(self, model_dir: str, framework: str, pool: str, batch_size: int, model_id: str,
                 revision: str) -> None:
        self.embedder = Embedder(model_dir, framework, pool, batch_size)
        self.model_id, self.revision = model_id, revision

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        decoded = [self.embedder.decode(image) for image in batch["image"]]
        vectors = self.embedder.embed(np.stack([d[0] for d in decoded]))
        rows = [(p, v, d[1][0], d[1][1]) for p, d, v in zip(batch["path"], decoded, vectors, strict=True)]
        return _shard_table(rows, vectors.shape[1], self.model_id, self.revision, 0, []).replace_schema_metadata(None)


# ------------------------------------------------------------------------------------ search
def read_embeddings(index: str) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """(paths, embeddings (n, dim) float32, manifest) of an `embed_images` output."""
    import pyarrow.parquet as pq

    if not os.path.exists(index):
        raise ViTError(f"No index at {index!r}; make one with `vit embed SOURCE --out {index}`.")
    table = pq.read_table(index, columns=["path", "embedding"])
    if table.num_rows == 0:
        raise ViTError(f"The index {index!r} holds no embeddings.")
    embedding = table.column("embedding").combine_chunks()
    vectors = embedding.flatten().to_numpy(zero_copy_only=False).reshape(table.num_rows, -1).astype(np.float32)
    manifest: dict[str, Any] = {}
    manifest_path = os.path.join(index, MANIFEST)
    if os.path.isfile(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
    return table.column("path").to_pylist(), vectors, manifest


def nearest(query: np.ndarray, vectors: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The `k` rows of `vectors` nearest to `query` by cosine similarity: [(row, similarity)], best first."""
    q = np.asarray(query, np.float64).ravel()
    v = np.asarray(vectors, np.float64)
    norms = np.linalg.norm(v, axis=1) * max(np.linalg.norm(q), 1e-30)
    scores = (v @ q) / np.where(norms > 0, norms, 1e-30)
    order = np.argsort(-scores, kind="stable")[:max(1, k)]
    return [(int(i), float(scores[i])) for i in order]


def neighbours(query_image: str, index: str, k: int = 10, model: str | None = None,
               framework: str = "pt") -> list[tuple[str, float]]:
    """The `k` images of `index` most similar to `query_image`, embedded with the index's model and pooling."""
    paths, vectors, manifest = read_embeddings(index)
    model_dir = model or manifest.get("model")
    if not model_dir or not os.path.isdir(model_dir):
        raise ViTError(f"The index does not name a local model folder ({model_dir!r}); pass --model.")
    embedder = Embedder(model_dir, framework, manifest.get("pool", "cls"))
    try:
        pixels, _ = embedder.decode(query_image)
    except (ImageError, OSError) as err:
        raise ViTError(f"Cannot read the query image {query_image!r}: {err}") from err
    query = embedder.embed(pixels[None])[0]
    if query.shape[0] != vectors.shape[1]:
        raise ViTError(f"The query embedding has {query.shape[0]} dimensions and the index {vectors.shape[1]}; "
                       "pass the --model the index was made with.")
    return [(paths[i], score) for i, score in nearest(query, vectors, k)]
