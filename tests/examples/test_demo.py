"""`make demo`: the embedded model reaches >= 95% on held-out digits with identical predictions everywhere."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent


def test_demo_model_is_small_and_accurate_in_every_framework():
    folder = ROOT / "src" / "vit" / "demo_model"
    assert sum(p.stat().st_size for p in folder.iterdir()) < 1024 * 1024
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py")], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    accuracies = [float(a) for a in re.findall(r"accuracy (\d+\.\d)%", result.stdout)]
    assert len(accuracies) == 3 and min(accuracies) >= 95.0
    assert "identical predictions in all three frameworks: True" in result.stdout
    worst = float(re.search(r"largest logit difference between frameworks: (\S+)", result.stdout).group(1))
    assert worst < 1e-5
