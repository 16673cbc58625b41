"""The `vit` command: classify, info, convert, export, bench; --help everywhere; errors on stderr."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, HF
from PIL import Image

VIT = Path(sys.executable).parent / "vit"


def vit(*args: str) -> subprocess.CompletedProcess:
    command = [str(VIT)] if VIT.exists() else [sys.executable, "-m", "vit.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A folder of digit scans (PNG, nested) and one photo (JPEG)."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
    from digits import digits_split

    _, _, images, labels = digits_split()
    root = tmp_path_factory.mktemp("digits")
    (root / "more").mkdir()
    for i in range(12):
        Image.fromarray(images[i]).save(root / ("more" if i % 2 else "") / f"digit_{i}_is_{labels[i]}.png")
    (root / "photo.jpg").write_bytes((FIXTURES / "image_processor" / "images" / "rocket.jpg").read_bytes())
    return root


@pytest.mark.parametrize("command", [[], ["classify"], ["convert"], ["export"], ["info"], ["bench"]])
def test_help_everywhere(command):
    result = vit(*command, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout


def test_classify_a_folder_with_the_demo_model(digits):
    result = vit("classify", str(digits), "--top-k", "3", "--progress")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 13  # every image, nested folders included
    assert "classifying" in result.stderr and "img" in result.stderr  # the progress bar
    hits = [line for line in lines if "_is_" in line]
    correct = sum(line.split("_is_")[1][0] == line.split()[1] for line in hits)
    assert correct >= 10


def test_classify_formats_and_frameworks_agree(digits):
    out = {fw: json.loads(vit("classify", str(digits), "--framework", fw, "--format", "json", "--batch-size", "5").stdout)
           for fw in ("pt", "tf", "flax")}
    tops = {fw: [entry["predictions"][0]["label"] for entry in rows] for fw, rows in out.items()}
    assert tops["pt"] == tops["tf"] == tops["flax"] and len(tops["pt"]) == 13
    rows = list(csv.reader(io.StringIO(vit("classify", str(digits), "--format", "csv", "--top-k", "2").stdout)))
    assert rows[0] == ["path", "rank", "label", "score"] and len(rows) == 1 + 13 * 2


def test_classify_with_a_model_folder():
    photo = str(FIXTURES / "image_processor" / "images" / "astronaut.png")
    result = vit("classify", photo, "--model", str(HF / "classification" / "safetensors"), "--top-k", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("LABEL_") == 2


def test_info_describes_a_folder():
    result = vit("info", str(HF / "classification" / "safetensors"), "--json")
    info = json.loads(result.stdout)
    assert info["architecture"] == "ViTForImageClassification" and info["num_labels"] == 10
    assert info["weight_formats"] == ["model.safetensors"] and info["parameters"] > 0


def test_convert_and_export(tmp_path):
    result = vit("convert", str(FIXTURES / "timm-vit-tiny-p8-32" / "model.safetensors"), str(tmp_path / "out"),
                 "--num-attention-heads", "4", "--pooling", "cls")
    assert result.returncode == 0, result.stderr
    result = vit("export", "jax", str(tmp_path / "out"), str(tmp_path / "model.npz"))
    assert result.returncode == 0 and np.load(tmp_path / "model.npz")["cls"].shape == (1, 1, 32)


def test_errors_go_to_stderr_with_a_non_zero_exit(tmp_path):
    result = vit("info", str(tmp_path / "missing"))
    assert result.returncode != 0 and "error" in result.stderr and not result.stdout
    result = vit("classify", "x.png", "--framework", "caffe")
    assert result.returncode == 2 and "invalid choice" in result.stderr


# ---- issue 11 item 13: classify says what the default model is, and fails in one line
def test_demo_model_is_announced_and_non_digits_are_warned_about(digits):
    result = vit("classify", str(digits))
    assert result.returncode == 0, result.stderr
    assert "demo model" in result.stderr and "handwritten digits" in result.stderr and "--model" in result.stderr
    assert "1 of 13 images are not digit scans" in result.stderr and "photo.jpg" in result.stderr
    only_scans = vit("classify", *[str(p) for p in sorted(digits.rglob("*.png"))])
    assert only_scans.returncode == 0 and "not digit scans" not in only_scans.stderr
    with_model = vit("classify", str(digits / "photo.jpg"), "--model", str(HF / "classification" / "safetensors"))
    assert with_model.returncode == 0 and "demo model" not in with_model.stderr and "digit" not in with_model.stderr


def test_a_large_grayscale_image_is_not_a_digit_scan(tmp_path):
    from vit.cli import looks_like_digit_scan

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "scan.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).convert("RGB").save(tmp_path / "grey_rgb.png")
    Image.fromarray(np.zeros((200, 200), np.uint8)).save(tmp_path / "page.png")
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour).save(tmp_path / "red.png")
    assert looks_like_digit_scan(str(tmp_path / "scan.png")) and looks_like_digit_scan(str(tmp_path / "grey_rgb.png"))
    assert not looks_like_digit_scan(str(tmp_path / "page.png")) and not looks_like_digit_scan(str(tmp_path / "red.png"))


@pytest.mark.parametrize("flag", ["--batch-size", "--top-k"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_non_positive_counts_are_argparse_errors(digits, flag, value):
    result = vit("classify", str(digits), flag, value)
    assert result.returncode == 2 and f"argument {flag}: must be at least 1" in result.stderr and not result.stdout


def test_a_folder_without_a_classifier_is_refused(framework):
    result = vit("classify", str(FIXTURES / "image_processor" / "images" / "rocket.jpg"), "--framework", framework,
                 "--model", str(HF / "base" / "safetensors"))
    assert result.returncode != 0 and "this model has no classifier" in result.stderr and not result.stdout
    assert "Traceback" not in result.stderr


def test_a_full_disk_behind_stdout_is_a_one_line_error(digits):
    command = [str(VIT)] if VIT.exists() else [sys.executable, "-m", "vit.cli"]
    with open("/dev/full", "w") as full:
        result = subprocess.run([*command, "classify", str(digits)], stdout=full, stderr=subprocess.PIPE, text=True,
                                timeout=600)
    assert result.returncode == 1 and "No space left on device" in result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied", "/read-only/out/config.json"),
                                   OSError(28, "No space left on device", "/full/out/model.safetensors")])
def test_unwritable_targets_are_one_line_errors(tmp_path, monkeypatch, capsys, error):
    """A read-only target or a full disk (simulated: the tests may run as root, which ignores permissions)."""
    import vit.convert
    from vit.cli import main

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(vit.convert, "save_checkpoint", fail)
    code = main(["convert", str(HF / "classification" / "safetensors"), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and error.strerror in err and error.filename in err


def test_a_missing_framework_is_a_one_line_error(tmp_path):
    """TensorFlow made unimportable by a module that shadows it, as when vit is installed without [tf]."""
    shadow = tmp_path / "shadow" / "tensorflow"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'tensorflow'\", name='tensorflow')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "vit.cli", "classify", str(FIXTURES / "image_processor" / "images"),
                             "--framework", "tf"], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode != 0 and "TensorFlow" in result.stderr and "not installed" in result.stderr
    assert "Traceback" not in result.stderr


# ---- issue 11 item 18: vit bench writes outside the source tree and says what is missing
@pytest.mark.parametrize("given", [False, True])
def test_bench_writes_to_a_temporary_folder_or_out(monkeypatch, tmp_path, given):
    import subprocess as subprocess_module

    from vit.cli import main

    calls = []
    monkeypatch.setattr(subprocess_module, "call", lambda command: calls.append(command) or 0)
    assert main(["bench", *(["--out", str(tmp_path)] if given else [])]) == 0
    command = calls[0]
    out = Path(command[command.index("--out") + 1])
    assert "--quick" in command and out.is_dir()
    assert out == tmp_path if given else Path(__file__).parent.parent.resolve() not in out.resolve().parents


def test_bench_without_transformers_says_what_is_missing():
    results = {
        "peers": {"transformers": "not importable: ModuleNotFoundError: No module named 'transformers'",
                  "tf_keras": "available", "timm": "available"},
        "matmul GFLOP/s (2048x2048 fp32)": {"torch (MKL)": 100.0, "torch (oneDNN)": 90.0, "tensorflow (XLA)": 80.0,
                                            "jax": 85.0},
        "inference": {"S/16": {"GFLOPs per image": 9.2, "pytorch": {"batch 8": {"ours": 5.0}},
                               "tensorflow": {"batch 8": {"ours XLA": 4.0}}, "flax": {"batch 8": {"ours jit": 4.5}}}},
    }
    bench = Path(__file__).parent.parent / "benchmarks"
    script = f"import json, sys; sys.path.insert(0, {str(bench)!r}); from bench import comparison; " \
             f"print(comparison(json.loads(sys.argv[1])))"
    result = subprocess.run([sys.executable, "-c", script, json.dumps(results)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert "No comparison with HF transformers" in result.stdout and "No module named 'transformers'" in result.stdout
    assert "pip install" in result.stdout and "| comparison (batch 8)" not in result.stdout
    assert "| ViT-S/16 | pytorch (ours) | 5.0 |" in result.stdout
