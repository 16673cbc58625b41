"""Saves are atomic: a save that fails halfway leaves the previous checkpoint intact and no partial files, and
two processes saving to one folder never leave a mixed checkpoint behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from frameworks import build, load

ROOT = Path(__file__).parent.parent.parent


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("failing", ["config", "weights"])
def test_a_save_that_fails_halfway_changes_nothing(framework, tiny_config, tmp_path, monkeypatch, failing):
    import vit.checkpoint as ckpt

    build(framework, "classification", tiny_config).save_pretrained(tmp_path)
    before = listing(tmp_path)
    target = "_write_text" if failing == "config" else "_write_safetensors"
    real = getattr(ckpt, target)

    def write_half_then_fail(*args):
        real(*args)  # the temporary file is written completely ...
        raise OSError("No space left on device")  # ... and then the save fails

    monkeypatch.setattr(ckpt, target, write_half_then_fail)
    other = build(framework, "classification", tiny_config.copy(num_labels=4))
    with pytest.raises(OSError, match="No space left"):
        other.save_pretrained(tmp_path)
    assert listing(tmp_path) == before
    load(framework, "classification", tmp_path)  # the old checkpoint still loads


SAVER = """
import sys, numpy as np
from vit import ViTConfig, ViTForImageClassification
folder, labels = sys.argv[1], int(sys.argv[2])
config = ViTConfig(image_size=16, patch_size=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=16, num_labels=labels)
model = ViTForImageClassification(config)
for _ in range(15):
    model.save_pretrained(folder)
"""


def test_two_processes_saving_to_one_folder_never_mix(tmp_path):
    pytest.importorskip("torch")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    procs = [subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path), str(n)], env=env) for n in (3, 5)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0
    from safetensors.numpy import load_file

    labels = json.loads((tmp_path / "config.json").read_text())["id2label"]
    weights = load_file(str(tmp_path / "model.safetensors"))
    assert weights["classifier.weight"].shape[0] == len(labels)  # config and weights come from one save
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_saving_into_a_folder_that_is_a_file_fails_cleanly(tiny_config, tmp_path):
    pytest.importorskip("torch")
    blocker = tmp_path / "model"
    blocker.write_text("not a folder")
    with pytest.raises((FileExistsError, NotADirectoryError, OSError)):
        build("pt", "classification", tiny_config).save_pretrained(blocker)
    assert blocker.read_text() == "not a folder"
    np.testing.assert_equal(sorted(p.name for p in tmp_path.iterdir()), ["model"])


def test_saved_files_are_readable_by_others_and_no_lock_file_is_left(tiny_config, tmp_path):
    pytest.importorskip("torch")
    build("pt", "classification", tiny_config).save_pretrained(tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    for path in tmp_path.iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
