"""benchmarks/report.py prints what bench_onnxruntime and bench_embed measured, from a synthetic results dict."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import report  # noqa: E402


def onnxruntime_entry(eager: float, fp32: float, int8: float) -> dict:
    """What bench_onnxruntime returns: export records, then per batch the rates, differences and agreements."""
    cell = {"PyTorch eager (ours)": eager, "onnxruntime fp32": fp32, "onnxruntime int8": int8,
            "max |logits diff| fp32 vs PyTorch": 2.5e-6, "top-1 agreement fp32 vs PyTorch": 1.0,
            "max |logits diff| int8 vs PyTorch": 0.031, "top-1 agreement int8 vs PyTorch": 0.875}
    return {"export fp32": {"seconds": 21.0, "max |diff| in the check": 3e-6, "file MiB": 84.2},
            "export int8": {"seconds": 25.0, "max |diff| in the check": 0.02, "file MiB": 21.4},
            "batch 1": dict(cell), "batch 8": {**cell, "onnxruntime fp32": fp32 * 2}}


@pytest.fixture
def results() -> dict:
    return {
        "date": "2026-11-25", "quick": False, "seconds": 700.0,
        "machine": {"cpu": "Test CPU", "cores": 2, "torch": "2.13.0", "tensorflow": "2.21.0", "jax": "0.10.0"},
        "peers": {"transformers": "available"},
        "matmul GFLOP/s (2048x2048 fp32)": {"torch (MKL)": 100.0, "torch (oneDNN)": 90.0, "tensorflow (XLA)": 95.0,
                                            "jax": 97.0},
        "inference": {
            "S/16": {"GFLOPs per image": 4.6, "pytorch": {"batch 8": {"ours": 40.0, "HF SDPA": 38.0}},
                     "onnxruntime": onnxruntime_entry(50.0, 60.0, 80.0)},
            "B/16": {"GFLOPs per image": 17.6, "pytorch": {"batch 8": {"ours": 12.0, "HF SDPA": 11.5}},
                     "onnxruntime": onnxruntime_entry(10.0, 12.5, 20.0)},
        },
        "vit embed (ViT-S/16, 224)": {"images": 96, "batch": 32, "ratio engine / loop": 1.109,
                                      "images/s": {"vit embed (local engine)": 9.2, "plain loop": 8.3}},
    }


def test_onnxruntime_table_has_every_model_and_batch(results):
    rows = report.onnxruntime_rows(results)
    assert rows[0].startswith("| model | batch | PyTorch eager img/s | onnxruntime fp32")
    body = rows[2:]
    assert [r.split(" | ")[:2] for r in body] == [["| ViT-S/16", "1"], ["| ViT-S/16", "8"], ["| ViT-B/16", "1"],
                                                 ["| ViT-B/16", "8"]]
    # ViT-S/16 batch 1: eager 50, fp32 60 (1.20x), int8 80 (1.60x), with the differences and agreements
    assert body[0] == ("| ViT-S/16 | 1 | 50.0 | 60.0 (1.20×) | 2.5e-06 | 1.00 | 80.0 (1.60×) | 3.1e-02 | 0.88 |")
    assert "| 120.0 (2.40×) |" in body[1]  # batch 8's own numbers, not batch 1's
    assert all(r.count("|") == rows[0].count("|") - 4 for r in body)  # the header's escaped \| are 4 extra bars


def test_export_note_and_embed_ratio(results):
    note = report.onnx_export_note(results)
    assert note == ("Exported files (with the export's own parity check): ViT-S/16 fp32 84 MiB in 21 s; "
                    "ViT-S/16 int8 21 MiB in 25 s; ViT-B/16 fp32 84 MiB in 21 s; ViT-B/16 int8 21 MiB in 25 s.")
    line = report.embed_line(results)
    assert "the local engine 9.2 img/s" in line and "plain processor + model loop 8.3 img/s" in line
    assert line.endswith("ratio engine / loop 1.11.")


def test_summarise_prints_both_sections(results):
    text = report.summarise(results)
    assert "`vit export onnx` under onnxruntime" in text and "| ViT-B/16 | 8 | 10.0 |" in text
    assert "ratio engine / loop 1.11" in text


def test_a_run_without_them_prints_neither(results):
    """A quick run has no onnxruntime entry, and an embed run that failed its ratio has none: nothing is printed."""
    for entry in results["inference"].values():
        del entry["onnxruntime"]
    results["vit embed (ViT-S/16, 224)"]["ratio engine / loop"] = None
    assert report.onnxruntime_rows(results) == [] and report.onnx_export_note(results) is None
    assert report.export_and_embed_lines(results) == []
    assert "onnxruntime" not in report.summarise(results) and "vit embed" not in report.summarise(results)
