"""Hub ids through the real huggingface_hub client, against a loopback hub (tests/hub_server.py).

The client reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when it is imported, so each scenario runs in a
fresh Python process with those variables set, exactly as a user's environment would set them. The
loopback server logs every request, which shows what was fetched and that an offline load made no call.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, HF
from hub_server import FakeHub

CLS = HF / "classification"
TIMM = FIXTURES / "timm-vit-tiny-p8-32"
FORMAT_FILES = {"safetensors": "model.safetensors", "pytorch_bin": "pytorch_model.bin", "tf_h5": "tf_model.h5",
                "flax_msgpack": "flax_model.msgpack"}
CLASSES = {"pt": "ViTForImageClassification", "tf": "TFViTForImageClassification",
           "flax": "FlaxViTForImageClassification"}
TOKEN = "hf_loopback_secret"
TIMM_REPO = "timm/vit_tiny_p8_32.fixture"
# A fixed commit to pin to, as users pin a hub commit.
PINNED = "0123456789abcdef0123456789abcdef01234567"


def processor_json() -> bytes:
    from vit import ViTImageProcessor

    return ViTImageProcessor(size=32).to_json_string().encode()


def shifted_weights(tmp_path: Path, shift: float) -> Path:
    """The classification weights with `shift` added to the classifier bias: logits move by exactly `shift`."""
    from safetensors.numpy import load_file, save_file

    state = load_file(CLS / "safetensors" / "model.safetensors")
    state["classifier.bias"] = state["classifier.bias"] + np.float32(shift)
    path = tmp_path / f"shifted_{shift}.safetensors"
    save_file(state, path, metadata={"format": "pt"})
    return path


def sharded_files(tmp_path: Path) -> dict[str, Path | bytes]:
    """model.safetensors split into two shards with HF's index."""
    from safetensors.numpy import load_file, save_file

    state = load_file(CLS / "safetensors" / "model.safetensors")
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    files: dict[str, Path | bytes] = {"config.json": CLS / "safetensors" / "config.json"}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, tmp_path / shard, metadata={"format": "pt"})
        files[shard] = tmp_path / shard
    index = {"metadata": {"total_size": int(sum(a.nbytes for a in state.values()))},
             "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    files["model.safetensors.index.json"] = json.dumps(index).encode()
    return files


def timm_config() -> bytes:
    """config.json as timm's push_to_hub writes it."""
    args = json.loads((TIMM / "timm_args.json").read_text())["VisionTransformer_kwargs"]
    return json.dumps({
        "architecture": "vit_tiny_patch8_32", "num_classes": 10, "num_features": 32, "global_pool": "token",
        "model_args": {k: v for k, v in args.items() if k != "num_classes"},
        "pretrained_cfg": {"tag": "fixture", "input_size": [3, 32, 32], "interpolation": "bicubic",
                           "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "num_classes": 10},
    }).encode()


@pytest.fixture
def hub(tmp_path):
    """The loopback hub with one repo per weights format, and the other repos the tests use."""
    with FakeHub() as fake:
        for fmt in FORMAT_FILES:
            fake.commit_folder(f"org/tiny-{fmt}", CLS / fmt)
        fake.commit("org/tiny-all", {"config.json": CLS / "safetensors" / "config.json",
                                     **{name: CLS / fmt / name for fmt, name in FORMAT_FILES.items()}})
        fake.commit("org/tiny-sharded", sharded_files(tmp_path))
        fake.commit("org/vit-tiny", {"config.json": CLS / "safetensors" / "config.json",
                                     "model.safetensors": CLS / "safetensors" / "model.safetensors",
                                     "preprocessor_config.json": processor_json()}, refs=("main", "v1.0"))
        fake.commit("org/vit-tiny", {"config.json": CLS / "safetensors" / "config.json",
                                     "model.safetensors": shifted_weights(tmp_path, 1.0),
                                     "preprocessor_config.json": processor_json()}, refs=("dev",))
        fake.commit_folder("org/nested", CLS / "safetensors", prefix="models/classifier/")
        fake.commit("org/gated", {"config.json": CLS / "safetensors" / "config.json",
                                  "model.safetensors": CLS / "safetensors" / "model.safetensors"}, token=TOKEN)
        fake.commit("org/no-weights", {"config.json": CLS / "safetensors" / "config.json"})
        fake.commit(TIMM_REPO, {"config.json": timm_config(), "model.safetensors": TIMM / "model.safetensors"})
        fake.commit("timm/vit_broken.fixture", {"config.json": timm_config(),
                                                "model.safetensors": CLS / "safetensors" / "model.safetensors"})
        yield fake


def hub_env(hub: FakeHub, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                        "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_ENABLE_HF_TRANSFER")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(home), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
               HF_HUB_DISABLE_TELEMETRY="1", TF_CPP_MIN_LOG_LEVEL="3", **extra)
    return env


PRELUDE = """
import json, sys, warnings
import numpy as np
sys.path.insert(0, {tests!r})
import vit
from frameworks import model_class, run
warnings.simplefilter("ignore")
EXPECTED = np.load({expected!r})

def max_diff(framework, repo, expected=EXPECTED["logits"], pixels=EXPECTED["pixel_values"], **kwargs):
    model = model_class(framework, "classification").from_pretrained(repo, **kwargs)
    return float(np.abs(run(framework, model, pixels)["logits"] - expected).max())

def error(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except vit.HubError as err:
        return str(err)
    return None

out = {{}}
"""


def in_hub_env(hub: FakeHub, home: Path, body: str, **env: str) -> dict:
    """Run `body` in a fresh process pointed at the loopback hub; it fills `out`, which comes back."""
    code = PRELUDE.format(tests=str(Path(__file__).parent), expected=str(CLS / "expected.npz"))
    code += textwrap.dedent(body) + "\nprint('RESULT ' + json.dumps(out))\n"
    result = subprocess.run([sys.executable, "-c", code], env=hub_env(hub, home, **env), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.split("RESULT ", 1)[1])


def blobs(home: Path, repo_id: str) -> list[str]:
    folder = home / "hub" / ("models--" + repo_id.replace("/", "--")) / "blobs"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# -------------------------------------------------------------------------------------------------- loading
@pytest.mark.parametrize("framework", ["pt", "tf", "flax"])
def test_every_weights_format_and_sharded_loads_in_every_framework(hub, tmp_path, framework):
    pytest.importorskip({"pt": "torch", "tf": "tensorflow", "flax": "flax"}[framework])
    out = in_hub_env(hub, tmp_path / "home", f"""
        for repo in {[f"org/tiny-{fmt}" for fmt in FORMAT_FILES] + ["org/tiny-all", "org/tiny-sharded"]!r}:
            out[repo] = max_diff({framework!r}, repo)
    """)
    assert all(diff <= 1e-5 for diff in out.values()), out
    # Only config.json and the best weights file are downloaded: never every format, never the processor.
    for fmt, name in FORMAT_FILES.items():
        assert hub.downloads(f"org/tiny-{fmt}") == ["config.json", name]
    assert hub.downloads("org/tiny-all") == ["config.json", "model.safetensors"]
    assert hub.downloads("org/tiny-sharded") == ["config.json", "model.safetensors.index.json",
                                                 "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


def test_config_processor_and_subfolder_from_hub_ids(hub, tmp_path):
    out = in_hub_env(hub, tmp_path / "home", f"""
        config = vit.ViTConfig.from_pretrained("org/vit-tiny")
        out["config"] = [config.hidden_size, config.num_labels]
        out["size"] = vit.ViTImageProcessor.from_pretrained("org/vit-tiny").size
        out["nested"] = max_diff("pt", "org/nested", subfolder="models/classifier")
        out["use_auth_token"] = max_diff("pt", "org/gated", use_auth_token={TOKEN!r})
    """)
    assert out["config"] == [32, 10]
    assert out["size"] == {"height": 32, "width": 32}
    assert out["nested"] <= 1e-5 and out["use_auth_token"] <= 1e-5
    assert hub.downloads("org/vit-tiny") == ["config.json", "preprocessor_config.json"]


def test_revision_pinning_by_branch_tag_and_commit_and_a_moving_branch(hub, tmp_path):
    home = tmp_path / "home"
    first, moved = hub.repos["org/vit-tiny"].refs["main"], hub.repos["org/vit-tiny"].refs["dev"]
    out = in_hub_env(hub, home, f"""
        for name, revision in [("main", None), ("tag", "v1.0"), ("branch", "dev"), ("commit", {moved!r}),
                               ("first_commit", {first!r})]:
            out[name] = max_diff("pt", "org/vit-tiny", revision=revision)
    """)
    # dev's classifier bias is the fixture's plus 1, so its logits are the expected ones plus 1.
    assert out["main"] <= 1e-5 and out["tag"] <= 1e-5 and out["first_commit"] <= 1e-5
    assert abs(out["branch"] - 1) <= 1e-5 and abs(out["commit"] - 1) <= 1e-5

    hub.repos["org/vit-tiny"].refs["main"] = moved  # someone pushes to main
    hub.requests.clear()
    out = in_hub_env(hub, home, """
        out["main"] = max_diff("pt", "org/vit-tiny")
        out["forced"] = max_diff("pt", "org/vit-tiny", revision="v1.0", force_download=True)
    """)
    assert abs(out["main"] - 1) <= 1e-5, "a moved branch must not be served from the old commit"
    assert out["forced"] <= 1e-5
    # The moved main was already cached (as dev): nothing is downloaded for it; force_download fetches the tag anew.
    assert hub.downloads("org/vit-tiny") == ["config.json", "model.safetensors"]
    out = in_hub_env(hub, home, 'out["main"] = max_diff("pt", "org/vit-tiny")', HF_HUB_OFFLINE="1")
    assert abs(out["main"] - 1) <= 1e-5, "offline, main is the commit it was last seen at"


def test_revision_that_is_a_commit_hash_and_cached_needs_no_network(hub, tmp_path):
    home = tmp_path / "home"
    commit = hub.repos["org/vit-tiny"].refs["main"]
    in_hub_env(hub, home, f'out["x"] = max_diff("pt", "org/vit-tiny", revision={commit!r})')
    hub.requests.clear()
    out = in_hub_env(hub, home, f'out["x"] = max_diff("pt", "org/vit-tiny", revision={commit!r})')
    assert out["x"] <= 1e-5 and hub.requests == []


# -------------------------------------------------------------------------------------------------- offline
def test_offline_cache_hit_makes_no_network_call(hub, tmp_path):
    home = tmp_path / "home"
    in_hub_env(hub, home, """
        out["x"] = max_diff("pt", "org/tiny-pytorch_bin")
        vit.ViTImageProcessor.from_pretrained("org/vit-tiny")
        import vit.hub
        vit.hub.resolve("org/tiny-pytorch_bin", processor="optional")  # the repo has none: the cache learns that
    """)
    hub.requests.clear()
    body = """
        out["bin"] = max_diff("pt", "org/tiny-pytorch_bin", **KW)
        out["size"] = vit.ViTImageProcessor.from_pretrained("org/vit-tiny", **KW).size
        out["config"] = vit.ViTConfig.from_pretrained("org/vit-tiny", **KW).num_labels
        out["missing"] = error(max_diff, "pt", "org/tiny-safetensors", **KW)
        import os, vit.hub
        folder = vit.hub.resolve("org/tiny-pytorch_bin", vit.hub.HubOptions(**KW), processor="optional")
        out["optional"] = sorted(os.listdir(folder))
        out["forced"] = error(max_diff, "pt", "org/tiny-pytorch_bin", force_download=True, **KW)
    """
    for kwargs, env in (({}, {"HF_HUB_OFFLINE": "1"}), ({"local_files_only": True}, {})):
        out = in_hub_env(hub, home, f"KW = {kwargs!r}\n" + textwrap.dedent(body), **env)
        assert out["bin"] <= 1e-5 and out["size"] == {"height": 32, "width": 32} and out["config"] == 10
        why = "HF_HUB_OFFLINE=1" if env else "local_files_only=True"
        assert "'org/tiny-safetensors'" in out["missing"] and "not in the cache" in out["missing"]
        assert why in out["missing"] and "network access" in out["missing"]
        assert out["optional"] == ["config.json", "pytorch_model.bin"], "a processor the repo lacks is no error"
        assert "'org/tiny-pytorch_bin'" in out["forced"] and "force_download" in out["forced"]
        assert hub.requests == [], f"{why}: the cache must serve without any request"


def test_offline_miss_is_one_clear_error(hub, tmp_path):
    out = in_hub_env(hub, tmp_path / "home", """
        out["model"] = error(max_diff, "pt", "org/tiny-safetensors")
        out["timm"] = error(max_diff, "pt", "hf-hub:timm/vit_tiny_p8_32.fixture")
    """, HF_HUB_OFFLINE="1")
    for repo, message in (("org/tiny-safetensors", out["model"]), (TIMM_REPO, out["timm"])):
        assert f"'{repo}'" in message and "'config.json'" in message and "not in the cache" in message
        assert str(tmp_path / "home" / "hub") in message and "HF_HUB_OFFLINE=1" in message
    assert hub.requests == []


# ----------------------------------------------------------------------------------------- interrupted download
def test_interrupted_download_is_never_taken_for_complete_and_resumes(hub, tmp_path):
    home = tmp_path / "home"
    hub.cut_once.add("model.safetensors")
    out = in_hub_env(hub, home, """
        try:
            out["first"] = max_diff("pt", "org/tiny-safetensors")
        except vit.HubError as err:
            out["interrupted"] = str(err)
        out["offline"] = error(max_diff, "pt", "org/tiny-safetensors", local_files_only=True)
    """)
    cdn_gets = [r.headers.get("Range") for r in hub.requests if r.method == "GET" and r.path.startswith("/cdn/")]
    if "first" in out:  # huggingface_hub >= 1.0 retries a broken stream itself, resuming within the same call
        assert out["first"] <= 1e-5 and out["offline"] is None and len(cdn_gets) == 2
        assert not [b for b in blobs(home, "org/tiny-safetensors") if b.endswith(".incomplete")]
        return
    assert "'model.safetensors'" in out["interrupted"] and "'org/tiny-safetensors'" in out["interrupted"]
    assert "interrupted" in out["interrupted"] and "again" in out["interrupted"]
    # The half file is kept apart, as .incomplete; no snapshot entry points at it, so nothing reads it.
    partial = [b for b in blobs(home, "org/tiny-safetensors") if b.endswith(".incomplete")]
    assert len(partial) == 1
    partial_size = (home / "hub" / "models--org--tiny-safetensors" / "blobs" / partial[0]).stat().st_size
    assert not [b for b in blobs(home, "org/tiny-safetensors") if b == partial[0].removesuffix(".incomplete")]
    snapshots = list((home / "hub" / "models--org--tiny-safetensors" / "snapshots").rglob("model.safetensors"))
    assert snapshots == []
    assert "not in the cache" in out["offline"]

    hub.requests.clear()
    out = in_hub_env(hub, home, 'out["x"] = max_diff("pt", "org/tiny-safetensors")')
    assert out["x"] <= 1e-5
    # The client resumes from the bytes it kept (it may keep none: it writes in 10 MB chunks).
    ranges = [r.headers.get("Range") for r in hub.requests if r.method == "GET" and r.path.startswith("/cdn/")]
    assert ranges == [f"bytes={partial_size}-" if partial_size else None]
    assert not [b for b in blobs(home, "org/tiny-safetensors") if b.endswith(".incomplete")]


# --------------------------------------------------------------------------------------------------- errors
def test_gated_repo_asks_for_a_token_and_loads_with_one(hub, tmp_path):
    home = tmp_path / "home"
    out = in_hub_env(hub, home, f"""
        out["none"] = error(max_diff, "pt", "org/gated")
        out["wrong"] = error(max_diff, "pt", "org/gated", token="hf_wrong")
        out["right"] = max_diff("pt", "org/gated", token={TOKEN!r})
    """)
    assert "'org/gated'" in out["none"] and "gated or private" in out["none"] and "HF_TOKEN" in out["none"]
    assert "token=" in out["none"] and f"{hub.url}/org/gated" in out["none"]
    assert "not accepted" in out["wrong"]
    assert out["right"] <= 1e-5
    out = in_hub_env(hub, tmp_path / "home2", 'out["env"] = max_diff("pt", "org/gated")', HF_TOKEN=TOKEN)
    assert out["env"] <= 1e-5


def test_missing_repo_revision_and_file_errors_name_them(hub, tmp_path):
    out = in_hub_env(hub, tmp_path / "home", """
        out["repo"] = error(max_diff, "pt", "org/no-such-model")
        out["revision"] = error(max_diff, "pt", "org/vit-tiny", revision="v9.9")
        out["processor"] = error(vit.ViTImageProcessor.from_pretrained, "org/tiny-safetensors")
        out["weights"] = error(max_diff, "pt", "org/no-weights")
        out["subfolder"] = error(max_diff, "pt", "org/nested", subfolder="models/other")
        out["pinned"] = error(max_diff, "pt", "hf-hub:org/vit-tiny@dev", revision="main")
    """)
    assert "'org/no-such-model'" in out["repo"] and hub.url in out["repo"] and "token=" in out["repo"]
    assert "'org/vit-tiny'" in out["revision"] and "'v9.9'" in out["revision"] and "revision=" in out["revision"]
    assert "'org/tiny-safetensors'" in out["processor"] and "'preprocessor_config.json'" in out["processor"]
    assert "ViTImageProcessor(size=" in out["processor"]
    assert "'org/no-weights'" in out["weights"] and "model.safetensors, " in out["weights"]
    assert "flax_model.msgpack" in out["weights"]
    assert "'models/other/config.json'" in out["subfolder"] and "subfolder=" in out["subfolder"]
    assert "'dev'" in out["pinned"] and "'main'" in out["pinned"]


def test_local_paths_are_never_sent_to_the_hub(tmp_path):
    from vit import CheckpointError, ViTConfig
    from vit.hub import looks_like_hub_id

    assert looks_like_hub_id("google/vit-base-patch16-224") and looks_like_hub_id("hf-hub:timm/vit_base")
    assert not looks_like_hub_id(str(CLS / "safetensors")) and not looks_like_hub_id("./model")
    assert not looks_like_hub_id(tmp_path) and not looks_like_hub_id("a/b/c")
    with pytest.raises(CheckpointError, match="No such folder: 'a/b/c'"):
        ViTConfig.from_pretrained("a/b/c")


# ----------------------------------------------------------------------------------------------------- timm
def test_timm_hub_id_is_converted_once_per_commit(hub, tmp_path):
    home = tmp_path / "home"
    out = in_hub_env(hub, home, f"""
        T = np.load({str(TIMM / "expected.npz")!r})
        out["timm"] = max_diff("pt", {TIMM_REPO!r}, expected=T["logits"], pixels=T["pixel_values"])
        out["hf-hub"] = max_diff("flax", "hf-hub:{TIMM_REPO}", expected=T["logits"], pixels=T["pixel_values"])
        processor = vit.ViTImageProcessor.from_pretrained({TIMM_REPO!r})
        out["processor"] = [processor.size, processor.resample, processor.image_mean]
        out["broken"] = None
        try:
            vit.ViTForImageClassification.from_pretrained("timm/vit_broken.fixture")
        except vit.CheckpointError as err:
            out["broken"] = str(err)
    """)
    assert out["timm"] <= 1e-5 and out["hf-hub"] <= 1e-5
    assert out["processor"] == [{"height": 32, "width": 32}, 3, [0.5, 0.5, 0.5]]
    assert "timm VisionTransformer" in out["broken"]
    commit = hub.repos[TIMM_REPO].refs["main"]
    converted = home / "vit" / "converted"
    folders = [p.relative_to(converted) for p in converted.glob("*/*")]
    assert len(folders) == 1 and folders[0].parts[0] == "models--timm--vit_tiny_p8_32.fixture"
    assert folders[0].name.startswith(commit + "-")
    assert sorted(p.name for p in (converted / folders[0]).iterdir()) == [
        "config.json", "model.safetensors", "preprocessor_config.json"]
    assert not list(converted.glob("*/.*")), "a failed conversion leaves no temporary folder"
    assert hub.downloads(TIMM_REPO) == ["config.json", "model.safetensors"]

    # Offline, the converted folder serves the model without the timm weights; a new commit converts anew.
    stamp = (converted / folders[0] / "model.safetensors").stat().st_mtime_ns
    out = in_hub_env(hub, home, f"""
        T = np.load({str(TIMM / "expected.npz")!r})
        out["x"] = max_diff("tf", {TIMM_REPO!r}, expected=T["logits"], pixels=T["pixel_values"])
    """, HF_HUB_OFFLINE="1")
    assert out["x"] <= 1e-5
    assert (converted / folders[0] / "model.safetensors").stat().st_mtime_ns == stamp, "converted once"
    hub.commit(TIMM_REPO, {"config.json": timm_config(), "model.safetensors": TIMM / "model.safetensors",
                           "README.md": b"new commit"})
    in_hub_env(hub, home, f'vit.ViTConfig.from_pretrained({TIMM_REPO!r})')
    assert len(list(converted.glob("*/*"))) == 2


# ------------------------------------------------------------------------------------------------------ CLI
def vit_cli(hub: FakeHub, home: Path, *args: str) -> subprocess.CompletedProcess:
    command = Path(sys.executable).parent / "vit"
    command = [str(command)] if command.exists() else [sys.executable, "-m", "vit.cli"]
    return subprocess.run([*command, *args], env=hub_env(hub, home), capture_output=True, text=True, timeout=600)


def test_cli_takes_hub_ids(hub, tmp_path):
    home = tmp_path / "home"
    info = vit_cli(hub, home, "info", "org/vit-tiny", "--json")
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["weight_formats"] == ["model.safetensors"] and described["processor"]["size"]["height"] == 32

    photo = str(FIXTURES / "image_processor" / "images" / "rocket.jpg")
    classify = vit_cli(hub, home, "classify", "--model", "org/vit-tiny", "--revision", "dev", photo, "--format", "json")
    assert classify.returncode == 0, classify.stderr
    assert len(json.loads(classify.stdout)[0]["predictions"]) == 5

    out_dir = tmp_path / "converted"
    convert = vit_cli(hub, home, "convert", TIMM_REPO, str(out_dir))
    assert convert.returncode == 0, convert.stderr
    assert "4 heads" in convert.stdout  # from timm's config.json model_args, which the weights do not reveal
    exported = tmp_path / "timm.safetensors"
    export = vit_cli(hub, home, "export", "timm", "org/tiny-pytorch_bin", str(exported))
    assert export.returncode == 0, export.stderr
    from safetensors.numpy import load_file

    assert "blocks.0.attn.qkv.weight" in load_file(exported)

    missing = vit_cli(hub, home, "info", "org/no-such-model")
    assert missing.returncode == 2 and "'org/no-such-model'" in missing.stderr and "Traceback" not in missing.stderr
