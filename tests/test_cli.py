"""The `vit` command: classify, info, convert, export, bench; --help everywhere; errors on stderr."""

from __future__ import annotations

import csv
import io
import json
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
