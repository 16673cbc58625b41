"""The example training scripts, in every framework: the loss goes down, and an interrupted run that resumes
from its checkpoint ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

ROOT = Path(__file__).parent.parent.parent
sys.path.insert(0, str(ROOT / "examples"))
# Tests share script runs and a JAX compilation cache per module; keep the module on one xdist worker so each run
# is made (and each step compiled) once.
pytestmark = pytest.mark.xdist_group("training-scripts")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from data import make_tiny_folder

    return make_tiny_folder(str(tmp_path_factory.mktemp("images")))


@pytest.fixture(scope="module", autouse=True)
def jax_compilation_cache(tmp_path_factory):
    """One persistent JAX compilation cache for the module's script runs: most Flax runs jit the same step
    for the same shapes, and compiling it took most of each run (12 s -> 3.5 s a run). XLA returns the same
    executable, so the numbers are those of an uncached run."""
    cache = {"JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax-cache")),
             "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in cache.items():
            patch.setenv(name, value)
        yield


def train(framework: str, data: str, out: Path, *extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, str(ROOT / "examples" / f"train_{framework}.py"), "--data", data, "--out", str(out),
           "--epochs", "4", "--save-every", "3", *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(folder, tmp_path_factory):
    """Runs that several tests start from or compare with, each trained once per module (a script run is mostly
    its start-up: 5-18 s): runs(framework, max_steps) -> (output folder, summary) of `train(framework, folder,
    out, "--max-steps", max_steps)`. A test that resumes one copies it first (`copy_of`)."""
    made: dict[tuple[str, int], tuple[Path, dict]] = {}

    def get(framework: str, max_steps: int) -> tuple[Path, dict]:
        if (framework, max_steps) not in made:
            out = tmp_path_factory.mktemp(f"{framework}-{max_steps}-steps") / "run"
            made[framework, max_steps] = out, train(framework, folder, out, "--max-steps", str(max_steps))
        return made[framework, max_steps]

    return get


def copy_of(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def mean(values):
    return float(np.mean(values))


@pytest.mark.parametrize("task", ["classify", "simmim"])
def test_loss_goes_down(framework, folder, tmp_path, task):
    summary = train(framework, folder, tmp_path / "run", "--task", task, "--lr", "2e-3")
    losses = summary["losses"]
    assert len(losses) == 16
    assert mean(losses[-4:]) < mean(losses[:4])
    assert (tmp_path / "run" / "model.safetensors").is_file() and (tmp_path / "run" / "preprocessor_config.json").is_file()


def test_resume_after_interruption_gives_the_same_result(framework, folder, runs, tmp_path):
    straight, _ = runs(framework, 8)
    train(framework, folder, tmp_path / "interrupted", "--max-steps", "6")
    train(framework, folder, tmp_path / "interrupted", "--max-steps", "8", "--resume")
    a = load_file(str(straight / "model.safetensors"))
    b = load_file(str(tmp_path / "interrupted" / "model.safetensors"))
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)


def test_mixed_precision_runs(framework, folder, tmp_path):
    summary = train(framework, folder, tmp_path / "bf16", "--mixed-precision", "bf16", "--max-steps", "6")
    assert len(summary["losses"]) == 6 and np.isfinite(summary["losses"]).all()


@pytest.mark.parametrize("framework_name", ["pt", "tf", "flax"])
def test_two_workers_on_half_batches_equal_one_worker(framework_name, folder, runs, tmp_path):
    """Data parallelism: two workers (torchrun processes, MirroredStrategy replicas, or JAX devices) on half of
    each batch end with the same losses and weights as one worker on whole batches (the last batch is odd)."""
    pytest.importorskip({"pt": "torch", "tf": "tensorflow", "flax": "jax"}[framework_name])
    one, single = runs(framework_name, 4)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    script = [str(ROOT / "examples" / f"train_{framework_name}.py"), "--data", folder, "--out", str(tmp_path / "two"),
              "--epochs", "4", "--save-every", "3", "--max-steps", "4"]
    if framework_name == "pt":
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", *script]
    else:
        command = [sys.executable, *script, "--data-parallel"]
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    double = json.loads(result.stdout.strip().splitlines()[-1])
    if framework_name != "pt":
        assert double["devices"] == 2
    np.testing.assert_allclose(double["losses"], single["losses"], atol=1e-5)
    a = load_file(str(one / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    for name in a:
        if name.endswith("attention.key.bias"):
            # The key bias's true gradient is exactly zero (it adds the same q.b to every score of a softmax row),
            # so its trained value is round-off that Adam scales up to step size: it only has to stay tiny.
            assert np.abs(a[name]).max() < 1e-3 and np.abs(b[name]).max() < 1e-3, name
            continue
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)


# ---- issue 11 items 15 and 6: the scripts with --model, bad data, and resuming from a partial chunk
def run_script(framework: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, str(ROOT / "examples" / f"train_{framework}.py"), *args],
                          capture_output=True, text=True, env=env, timeout=600)


def test_resume_when_max_steps_is_not_a_multiple_of_save_every(framework, folder, runs, tmp_path):
    """An interrupted run whose last checkpoint came from a short chunk (4 steps, saving every 3) resumes at
    step 4, not at the next whole chunk; resuming a finished run keeps its trained weights."""
    straight, _ = runs(framework, 8)
    four_steps, _ = runs(framework, 4)
    first = load_file(str(four_steps / "model.safetensors"))
    interrupted = copy_of(four_steps, tmp_path / "interrupted")
    train(framework, folder, interrupted, "--max-steps", "8", "--resume")
    a = load_file(str(straight / "model.safetensors"))
    b = load_file(str(interrupted / "model.safetensors"))
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)
    finished = copy_of(four_steps, tmp_path / "finished")
    train(framework, folder, finished, "--max-steps", "4", "--resume")
    again = load_file(str(finished / "model.safetensors"))
    for name in first:
        np.testing.assert_allclose(again[name], first[name], atol=1e-6, err_msg=name)


@pytest.fixture(scope="module")
def model_48px(tmp_path_factory):
    """An HF classification folder at 48 px (not the scripts' 32) with its own processor recipe and 10 labels."""
    from vit import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = tmp_path_factory.mktemp("model48")
    config = ViTConfig(image_size=48, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                       intermediate_size=64, num_labels=10)
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size=48, resample=3, image_mean=[0.3, 0.4, 0.5], image_std=[0.2, 0.25, 0.3]).save_pretrained(folder)
    return folder


def test_model_folder_gives_the_size_the_recipe_and_integer_labels(framework, folder, model_48px, tmp_path):
    train(framework, folder, tmp_path / "run", "--model", str(model_48px), "--max-steps", "2")
    saved = json.loads((tmp_path / "run" / "preprocessor_config.json").read_text())
    source = json.loads((model_48px / "preprocessor_config.json").read_text())
    assert saved == source  # the model's own size, resample, mean and std
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["image_size"] == 48
    assert config["id2label"] == {"0": "class_0", "1": "class_1", "2": "class_2"}
    assert config["label2id"] == {"class_0": 0, "class_1": 1, "class_2": 2}


def test_image_size_with_a_model_folder_resizes_it(folder, model_48px, tmp_path):
    train("pt", folder, tmp_path / "run", "--model", str(model_48px), "--max-steps", "1", "--image-size", "40")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["image_size"] == 40
    assert json.loads((tmp_path / "run" / "preprocessor_config.json").read_text())["size"] == {"height": 40, "width": 40}


def test_a_missing_data_folder_is_a_clear_error(framework, tmp_path):
    result = run_script(framework, "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert result.returncode != 0 and "no such folder" in result.stderr and "Traceback" not in result.stderr


def test_a_one_class_folder_is_refused_for_classification(framework, folder, tmp_path):
    """One label would be HF's regression problem type: a classifier that learns the label index."""
    one_class = tmp_path / "data"
    (one_class / "cats").mkdir(parents=True)
    for image in sorted(Path(folder, "class_0").iterdir())[:4]:
        (one_class / "cats" / image.name).write_bytes(image.read_bytes())
    result = run_script(framework, "--data", str(one_class), "--out", str(tmp_path / "out"))
    assert result.returncode != 0 and "at least 2" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()
