"""The example training scripts, in every framework: the loss goes down, and an interrupted run that resumes
from its checkpoint ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

ROOT = Path(__file__).parent.parent.parent
sys.path.insert(0, str(ROOT / "examples"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from data import make_tiny_folder

    return make_tiny_folder(str(tmp_path_factory.mktemp("images")))


def train(framework: str, data: str, out: Path, *extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, str(ROOT / "examples" / f"train_{framework}.py"), "--data", data, "--out", str(out),
           "--epochs", "4", "--save-every", "3", *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def mean(values):
    return float(np.mean(values))


@pytest.mark.parametrize("task", ["classify", "simmim"])
def test_loss_goes_down(framework, folder, tmp_path, task):
    summary = train(framework, folder, tmp_path / "run", "--task", task, "--lr", "2e-3")
    losses = summary["losses"]
    assert len(losses) == 16
    assert mean(losses[-4:]) < mean(losses[:4])
    assert (tmp_path / "run" / "model.safetensors").is_file() and (tmp_path / "run" / "preprocessor_config.json").is_file()


def test_resume_after_interruption_gives_the_same_result(framework, folder, tmp_path):
    train(framework, folder, tmp_path / "straight", "--max-steps", "9")
    train(framework, folder, tmp_path / "interrupted", "--max-steps", "6")
    train(framework, folder, tmp_path / "interrupted", "--max-steps", "9", "--resume")
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "interrupted" / "model.safetensors"))
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)


def test_mixed_precision_runs(framework, folder, tmp_path):
    summary = train(framework, folder, tmp_path / "bf16", "--mixed-precision", "bf16", "--max-steps", "6")
    assert len(summary["losses"]) == 6 and np.isfinite(summary["losses"]).all()


@pytest.mark.parametrize("framework_name", ["pt", "tf", "flax"])
def test_two_workers_on_half_batches_equal_one_worker(framework_name, folder, tmp_path):
    """Data parallelism: two workers (torchrun processes, MirroredStrategy replicas, or JAX devices) on half of
    each batch end with the same losses and weights as one worker on whole batches (the last batch is odd)."""
    pytest.importorskip({"pt": "torch", "tf": "tensorflow", "flax": "jax"}[framework_name])
    single = train(framework_name, folder, tmp_path / "one", "--max-steps", "4")
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
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)
