"""vit.embed and `vit embed` / `vit neighbours`: sharded Parquet, local and Ray engines, resume, failures."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import MAP_ATOL, PHOTOS
from PIL import Image

from vit.cli import demo_model_dir
from vit.embed import FAILURES, MANIFEST, embed_images, load_model, load_processor, neighbours, shard_name
from vit.errors import ViTError

pa = pytest.importorskip("pyarrow")
pytest.importorskip("pyarrow.compute")
pq = pytest.importorskip("pyarrow.parquet")
SHARD_SIZE = 5


def vit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vit.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """12 digit scans in nested folders, the four photos, and one file that is not an image: 17 entries."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
    from digits import digits_split

    _, _, images, labels = digits_split()
    root = tmp_path_factory.mktemp("collection")
    (root / "nested" / "deeper").mkdir(parents=True)
    for i in range(12):
        folder = root / ("nested" if i % 3 == 1 else "nested/deeper" if i % 3 == 2 else "")
        Image.fromarray(images[i]).resize((24, 16)).save(folder / f"digit_{i:02d}_is_{labels[i]}.png")
    for photo in PHOTOS.iterdir():
        (root / photo.name).write_bytes(photo.read_bytes())
    (root / "nested" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


def read_sorted(out: Path):
    return pq.read_table(out).sort_by("path")


def embeddings_of(table) -> np.ndarray:
    return np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)


def direct_cls_embeddings(paths: list[str]) -> np.ndarray:
    """What the embeddings must be: the class token of the final sequence, computed without vit.embed."""
    import torch

    model = load_model(demo_model_dir(), "pt")
    pixels = load_processor(demo_model_dir(), model.config)(paths, return_tensors="pt").pixel_values
    with torch.no_grad():
        return model(pixels).last_hidden_state[:, 0].numpy()


@pytest.fixture(scope="module")
def local_run(collection, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "embeddings.parquet"
    summary = embed_images(str(collection), str(out), demo_model_dir(), batch_size=3, shard_size=SHARD_SIZE)
    assert summary == {"out": str(out), "images": 17, "rows": 16, "failures": 1, "shards": 4}
    return out


def test_one_row_per_image_with_its_embedding_model_and_size(local_run, collection):
    table = read_sorted(local_run)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 64)
    assert [f.name for f in table.schema] == ["path", "embedding", "model", "revision", "width", "height"]
    paths = table.column("path").to_pylist()
    assert len(paths) == len(set(paths)) == 16 and not any("broken" in p for p in paths)
    np.testing.assert_allclose(embeddings_of(table), direct_cls_embeddings(paths), atol=MAP_ATOL, rtol=0)
    sizes = dict(zip(paths, zip(table.column("width").to_pylist(), table.column("height").to_pylist(), strict=True),
                     strict=True))
    assert all(sizes[p] == (24, 16) for p in paths if "digit_" in p)
    assert sizes[str(collection / "rocket.jpg")] == Image.open(PHOTOS / "rocket.jpg").size
    assert set(table.column("model").to_pylist()) == {os.path.abspath(demo_model_dir())}
    assert table.column("revision")[0].as_py().startswith("sha256:")
    assert sorted(p.name for p in local_run.iterdir() if p.name.startswith("part-")) == [shard_name(k) for k in range(4)]


def test_unreadable_images_are_listed_with_the_reason(local_run, collection):
    lines = (local_run / FAILURES).read_text().splitlines()
    assert lines[0] == "path\treason"
    assert len(lines) == 2 and lines[1].startswith(str(collection / "nested" / "broken.jpg") + "\t")
    assert "corrupt, truncated or not an image" in lines[1]


def test_every_framework_writes_the_same_embeddings(framework, local_run, collection, tmp_path):
    out = tmp_path / "out.parquet"
    embed_images(str(collection), str(out), demo_model_dir(), framework=framework, batch_size=4, shard_size=7)
    ours, reference = read_sorted(out), read_sorted(local_run)
    assert ours.column("path").to_pylist() == reference.column("path").to_pylist()
    np.testing.assert_allclose(embeddings_of(ours), embeddings_of(reference), atol=MAP_ATOL, rtol=0)


def test_ray_engine_writes_the_same_rows_and_embeddings(local_run, collection, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        out = tmp_path / "ray.parquet"
        summary = embed_images(str(collection), str(out), demo_model_dir(), engine="ray", workers=2, batch_size=3,
                               shard_size=SHARD_SIZE)
        # Any source ray.data.read_images reads (here a local:// URI) goes through the same actors in one pass.
        photos = tmp_path / "photos"
        photos.mkdir()
        for name in ("astronaut.png", "camera.png"):  # RGB and grey: Ray's decoding converts them as PIL does
            (photos / name).write_bytes((collection / name).read_bytes())
        read = embed_images(f"local://{photos}", str(tmp_path / "read_images.parquet"), demo_model_dir(),
                            engine="ray", workers=2)
    finally:
        ray.shutdown()
    assert summary["rows"] == 16 and summary["failures"] == 1
    ours, reference = read_sorted(out), read_sorted(local_run)
    assert ours.schema.remove_metadata() == reference.schema.remove_metadata()
    for column in ("path", "model", "revision", "width", "height"):
        assert ours.column(column).to_pylist() == reference.column(column).to_pylist(), column
    np.testing.assert_allclose(embeddings_of(ours), embeddings_of(reference), atol=MAP_ATOL, rtol=0)
    assert (out / FAILURES).read_text() == (local_run / FAILURES).read_text()
    assert not (out / "_ray_staging").exists()
    assert read["rows"] == 2
    from_uri = read_sorted(tmp_path / "read_images.parquet")
    wanted = [str(collection / name) for name in ("astronaut.png", "camera.png")]
    reference = reference.filter(pa.compute.is_in(reference.column("path"), pa.array(wanted)))
    assert from_uri.column("path").to_pylist() == [str(photos / "astronaut.png"), str(photos / "camera.png")]
    assert from_uri.column("width").to_pylist() == reference.column("width").to_pylist()
    np.testing.assert_allclose(embeddings_of(from_uri), embeddings_of(reference), atol=MAP_ATOL, rtol=0)


KILLED_RUN = """
import os, signal, sys
from vit.cli import demo_model_dir
from vit.embed import embed_images

def die_after_shard(k):
    if k == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, as with a power cut or the OOM killer

embed_images(sys.argv[1], sys.argv[2], demo_model_dir(), batch_size=2, shard_size=4, on_shard=die_after_shard)
"""


def test_resume_after_a_killed_run_gives_every_image_exactly_once(local_run, collection, tmp_path):
    out = tmp_path / "resumed.parquet"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, str(collection), str(out), "1"], env=env,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("part-")) == [shard_name(0), shard_name(1)]
    # A kill in the middle of a later shard's write leaves a temporary file; a damaged shard must be redone.
    (out / f".{shard_name(2)}.abc123.tmp").write_bytes(b"half a parquet file")
    (out / shard_name(1)).write_bytes((out / shard_name(1)).read_bytes()[:-20])
    with pytest.raises(ViTError, match="--resume"):
        embed_images(str(collection), str(out), demo_model_dir(), batch_size=2, shard_size=4)
    written: list[int] = []
    summary = embed_images(str(collection), str(out), demo_model_dir(), batch_size=2, shard_size=4, resume=True,
                           on_shard=written.append)
    assert written == [1, 2, 3, 4]  # shard 0 was kept, the damaged shard 1 redone
    assert summary["rows"] == 16 and summary["shards"] == math.ceil(17 / 4)
    ours, reference = read_sorted(out), read_sorted(local_run)
    assert ours.column("path").to_pylist() == reference.column("path").to_pylist()  # each image exactly once
    np.testing.assert_allclose(embeddings_of(ours), embeddings_of(reference), atol=MAP_ATOL, rtol=0)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert len((out / FAILURES).read_text().splitlines()) == 2
    again: list[int] = []
    embed_images(str(collection), str(out), demo_model_dir(), batch_size=2, shard_size=4, resume=True,
                 on_shard=again.append)
    assert again == []  # nothing left to do


def test_resume_refuses_a_different_run(local_run, collection):
    with pytest.raises(ViTError, match="pool"):
        embed_images(str(collection), str(local_run), demo_model_dir(), pool="mean", shard_size=SHARD_SIZE,
                     resume=True)
    with pytest.raises(ViTError, match="shard_size"):
        embed_images(str(collection), str(local_run), demo_model_dir(), shard_size=SHARD_SIZE + 1, resume=True)


def test_pools(collection, tmp_path):
    import torch

    out = tmp_path / "mean.parquet"
    embed_images(str(collection), str(out), demo_model_dir(), pool="mean", shard_size=100)
    table = read_sorted(out)
    model = load_model(demo_model_dir(), "pt")
    pixels = load_processor(demo_model_dir(), model.config)(table.column("path").to_pylist(), return_tensors="pt")
    with torch.no_grad():
        expected = model(pixels.pixel_values).last_hidden_state[:, 1:].mean(1).numpy()
    np.testing.assert_allclose(embeddings_of(table), expected, atol=MAP_ATOL, rtol=0)
    with pytest.raises(ViTError, match="lacks pooler.dense"):
        embed_images(str(collection), str(tmp_path / "p"), demo_model_dir(), pool="pooler")
    with pytest.raises(ViTError, match="image_embeds"):
        embed_images(str(collection), str(tmp_path / "e"), demo_model_dir(), pool="image_embeds")


def test_a_text_file_of_paths_is_a_source(collection, tmp_path):
    listing = tmp_path / "list.txt"
    relative = os.path.relpath(collection / "rocket.jpg", tmp_path)
    listing.write_text(f"# photos\n{relative}\n\n{collection / 'camera.png'}\n{tmp_path / 'missing.png'}\n")
    summary = embed_images(str(listing), str(tmp_path / "out"), demo_model_dir())
    assert summary["rows"] == 2 and summary["failures"] == 1
    assert "missing.png" in (tmp_path / "out" / FAILURES).read_text()
    with pytest.raises(ViTError, match="neither a folder nor a text file"):
        embed_images(str(tmp_path / "nowhere"), str(tmp_path / "out2"), demo_model_dir())


def test_neighbours_finds_the_query_itself_first(local_run, collection):
    query = str(collection / "nested" / sorted(os.listdir(collection / "nested"))[-1])
    found = neighbours(query, str(local_run), k=3)
    assert len(found) == 3 and found[0][0] == query and found[0][1] == pytest.approx(1.0, abs=1e-6)
    assert found[0][1] >= found[1][1] >= found[2][1]


def test_vit_embed_and_neighbours_commands(collection, tmp_path):
    out = tmp_path / "cli.parquet"
    result = vit("embed", str(collection), "--out", str(out), "--shard-size", "6", "--batch-size", "4",
                 "--framework", "tf", "--progress")
    assert result.returncode == 0, result.stderr
    assert "wrote 16 embeddings" in result.stdout and "1 unreadable" in result.stdout
    assert "img/s" in result.stderr  # the progress bar shows the rate (and the ETA)
    assert (out / MANIFEST).is_file()
    again = vit("embed", str(collection), "--out", str(out))
    assert again.returncode == 2 and "--resume" in again.stderr
    query = str(collection / "rocket.jpg")
    found = vit("neighbours", query, "--index", str(out), "-k", "2")
    assert found.returncode == 0, found.stderr
    lines = found.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].split()[0] == "1" and lines[0].endswith(query)


def test_an_interrupted_ray_run_keeps_its_complete_shards(local_run, collection, tmp_path):
    """What the Ray actors wrote before an interruption: whole shards are kept, a file cut short is redone."""
    import json

    from vit.embed import (
        RAY_STAGING,
        _manifest,
        _prepare,
        _promote_staged,
        _RayShardEmbedder,
        list_sources,
        model_identity,
    )

    paths = list_sources(str(collection))
    model_id, revision = model_identity(demo_model_dir())
    out = tmp_path / "ray.parquet"
    plan = _prepare(paths, str(out), _manifest(paths, model_id, revision, "cls", SHARD_SIZE), SHARD_SIZE, False, False)
    actor = _RayShardEmbedder(demo_model_dir(), "pt", "cls", 3, model_id, revision)
    staging = out / RAY_STAGING
    staging.mkdir()
    shards = pa.table({"shard": [0, 2], "paths": [json.dumps(plan.shards[0]), json.dumps(plan.shards[2])]})
    pq.write_table(actor(shards), staging / "whole.parquet")
    pq.write_table(actor(pa.table({"shard": [1], "paths": [json.dumps(plan.shards[1])]})), staging / "cut.parquet")
    (staging / "cut.parquet").write_bytes((staging / "cut.parquet").read_bytes()[:-30])
    _promote_staged(plan, str(staging))
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("part-")) == [shard_name(0), shard_name(2)]
    assert not staging.exists()
    for k in (0, 2):
        ours, reference = pq.read_table(out / shard_name(k)), pq.read_table(local_run / shard_name(k))
        assert ours.column("path").to_pylist() == reference.column("path").to_pylist()
        np.testing.assert_allclose(embeddings_of(ours), embeddings_of(reference), atol=MAP_ATOL, rtol=0)
        assert ours.schema.metadata == reference.schema.metadata  # the shard's failures travel with it


def test_the_local_engine_keeps_a_bounded_window_of_images_in_flight(collection, tmp_path, monkeypatch):
    """Decoding runs ahead of the model, but only by a bounded number of images: memory stays flat."""
    import vit.embed as embed_module

    decoded, embedded, ahead = [0], [0], []
    decode, embed = embed_module._decode_or_reason, embed_module.Embedder.embed

    def counting_decode(embedder, path):
        decoded[0] += 1
        return decode(embedder, path)

    def counting_embed(self, pixels):
        ahead.append(decoded[0] - embedded[0])
        embedded[0] += len(pixels)
        return embed(self, pixels)

    monkeypatch.setattr(embed_module, "_decode_or_reason", counting_decode)
    monkeypatch.setattr(embed_module.Embedder, "embed", counting_embed)
    many = tmp_path / "many"
    many.mkdir()
    for i in range(60):
        Image.new("L", (8, 8), i * 4).save(many / f"{i:03d}.png")
    embed_images(str(many), str(tmp_path / "out"), demo_model_dir(), batch_size=2, shard_size=100)
    window = 2 * 2 + min(8, os.cpu_count() or 1)
    assert decoded[0] == 60 and max(ahead) <= window + 2


def test_mean_pooling_models_pool_as_the_model_does(framework, tiny_config, tmp_path):
    """A timm-style model (no class token, mean pooling, fc_norm): --pool mean is the model's own pool."""
    from frameworks import build, run

    config = tiny_config.copy(class_token=False, pooling="mean", use_fc_norm=True)
    model = build(framework, "base", config, add_pooling_layer=False)
    model.save_pretrained(tmp_path / "model")
    images = tmp_path / "images"
    images.mkdir()
    for photo in PHOTOS.iterdir():
        (images / photo.name).write_bytes(photo.read_bytes())
    embed_images(str(images), str(tmp_path / "out"), str(tmp_path / "model"), pool="mean", framework=framework)
    table = read_sorted(tmp_path / "out")
    pixels = load_processor(str(tmp_path / "model"), config)(table.column("path").to_pylist()).pixel_values
    sequence = run(framework, model, pixels)["last_hidden_state"]
    mean = sequence.mean(axis=1)
    expected = (mean - mean.mean(-1, keepdims=True)) / np.sqrt(mean.var(-1, keepdims=True) + config.layer_norm_eps)
    np.testing.assert_allclose(embeddings_of(table), expected, atol=1e-4, rtol=0)  # fc_norm starts as identity
    with pytest.raises(ViTError, match="class token"):
        embed_images(str(images), str(tmp_path / "cls"), str(tmp_path / "model"), pool="cls", framework=framework)
