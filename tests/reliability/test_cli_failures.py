"""`vit classify` on a folder with unreadable files classifies the rest, reports each failure, exits 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

VIT = Path(sys.executable).parent / "vit"


def test_unreadable_files_are_reported_and_the_rest_classified(tmp_path):
    Image.new("L", (8, 8), 255).save(tmp_path / "good.png")
    Image.new("L", (8, 8), 0).save(tmp_path / "also_good.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 20)
    (tmp_path / "notes.txt").write_text("not an image")
    command = [str(VIT)] if VIT.exists() else [sys.executable, "-m", "vit.cli"]
    result = subprocess.run([*command, "classify", str(tmp_path), str(tmp_path / "missing.png")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "good.png" in result.stdout and "also_good.png" in result.stdout
    for name in ("empty.png", "truncated.jpg", "missing.png"):
        assert f"failed: {tmp_path / name}" in result.stderr
    assert "notes.txt" in result.stderr  # skipped, but said so
