"""`make bench`'s issue-15 sections: the report of today's peers, DINOv2 and the resolution sweep (from a synthetic
results dict), and the worker protocol that runs a side in its own process (its output is the model's)."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report():
    return load("report")


PEAKS = {"torch (MKL)": 100.0, "torch (oneDNN)": 200.0, "tensorflow (XLA)": 150.0, "jax": 120.0}


def base_results() -> dict:
    return {"date": "2026-11-25", "quick": False, "seconds": 1.0, "peers": {},
            "machine": {"cpu": "test cpu", "cores": 2, "torch": "t", "tensorflow": "t", "jax": "j"},
            "matmul GFLOP/s (2048x2048 fp32)": PEAKS, "inference": {}}


def test_today_peers_rows_give_the_ratio_and_the_diff_of_each_peer(report):
    results = base_results()
    results[report.PEERS_KEY] = {
        "S/16": {
            "batch": 8,
            "pytorch": {"images/s": {"ours": 20.0, "HF 4.57 SDPA": 10.0, "HF 5.x SDPA": 8.0},
                        "max |diff| vs ours": {"HF 4.57 SDPA": 2e-6, "HF 5.x SDPA": 3e-6}},
            "keras-hub jax": {"images/s": {"ours (flax)": 9.0, "keras-hub ViTBackbone (jax)": 12.0},
                              "max |diff| vs ours (flax)": {"keras-hub ViTBackbone (jax)": 9e-4},
                              "max |diff| vs ours (flax) with config.json's layer_norm_eps":
                                  {"keras-hub ViTBackbone (jax)": 3e-6}},
            "keras-hub tensorflow": {"images/s": {"ours (tf)": 5.0},
                                     "errors": {"keras-hub ViTBackbone (tensorflow)": "RuntimeError: boom"}},
        },
        "seconds": 3.0,
    }
    rows = report.today_peer_rows(results)
    text = "\n".join(rows)
    assert "| ViT-S/16 | pytorch | 20.0 | HF 4.57 SDPA | 10.0 | 2.00 | 2.0e-06 |" in rows
    assert "| ViT-S/16 | pytorch | 20.0 | HF 5.x SDPA | 8.0 | 2.50 | 3.0e-06 |" in rows
    assert "| ViT-S/16 | jax | 9.0 | keras-hub ViTBackbone (jax) | 12.0 | 0.75 | 9.0e-04 |" in rows
    # the diff with the checkpoint's eps is a note, not the table's number (users get the converter's eps)
    assert "Rebuilt with the checkpoint's eps, its max abs diff vs ours is 3.0e-06." in text
    # a side that failed is said, never dropped silently
    assert "keras-hub ViTBackbone (tensorflow) not measured (RuntimeError: boom)" in text
    assert "Today's peers" in report.summarise(results)


def test_dinov2_rows_give_each_side_and_the_ratios_of_the_same_run(report):
    results = base_results()
    results[report.DINOV2_KEY] = {
        "images/s": {"ours PyTorch": 12.0, "HF 4.57 PyTorch SDPA": 6.0, "HF 5.x PyTorch SDPA": 4.0, "ours Flax jit": 9.0,
                     "HF 4.57 Flax jit": 10.0},
        "max |diff| vs ours PyTorch": {"HF 4.57 PyTorch SDPA": 1e-6, "HF 5.x PyTorch SDPA": 1e-6, "ours Flax jit": 2e-6,
                                       "HF 4.57 Flax jit": 0.5},
    }
    rows = report.dinov2_rows(results)
    assert "| ours PyTorch | 12.0 | — |" in rows
    assert "| HF 4.57 Flax jit | 10.0 | 5.0e-01 |" in rows
    assert rows[-1] == ("Ratios from the same alternating run: ours PyTorch / HF 4.57 PyTorch SDPA = 2.00; "
                        "ours PyTorch / HF 5.x PyTorch SDPA = 3.00; ours Flax jit / HF 4.57 Flax jit = 0.90.")


def test_sweep_rows_give_mfu_against_the_frameworks_best_matmul_and_the_peak_memory(report):
    results = base_results()
    results[report.SWEEP_KEY] = {
        "attention": {"flax ours": "materialised"},
        "points": {"ViT-S/14 518": {
            "model": "ViT-S/14", "image size": 518, "batch": 2, "tokens": 1370, "GFLOPs per image": 10.0,
            "pytorch": {"images/s": {"ours": 10.0, "HF 4.57": 5.0}, "peak RSS MiB": {"ours": 900.0, "HF 4.57": 1500.0},
                        "RSS after loading MiB": {"ours": 400.0, "HF 4.57": 1100.0}},
            "flax": {"images/s": {"ours": 6.0}, "peak RSS MiB": {"ours": 700.0},
                     "errors": {"HF 4.57": "RuntimeError: out of memory"}},
        }},
    }
    rows = report.sweep_rows(results)
    # PyTorch's peak is the better of MKL and oneDNN: 10 img/s x 10 GFLOPs / 200 GFLOP/s = 0.50
    # peak RSS, and in brackets what the forward added to the loaded process
    assert "| ViT-S/14 | 518 | 1370 | 2 | pytorch | 10.0 | 0.50 | 5.0 | 0.25 | 2.00 | 900 (+500) | 1500 (+400) |" in rows
    assert "| ViT-S/14 | 518 | 1370 | 2 | flax | 6.0 | 0.50 | n/a | n/a | n/a | 700 | n/a |" in rows
    text = "\n".join(rows)
    assert "HF 4.57 not measured (RuntimeError: out of memory)" in text and "flax ours: materialised" in text


def test_a_section_that_failed_says_so(report):
    results = base_results()
    results[report.SWEEP_KEY] = {"error": "RuntimeError: worker died", "seconds": 1.0}
    assert report.sweep_rows(results) == ["The resolution sweep was not measured: RuntimeError: worker died"]


def test_a_run_without_the_new_sections_reports_as_before(report):
    results = base_results()
    assert report.new_sections(results) == []
    assert "Today's peers" not in report.summarise(results)


def test_a_partial_run_says_which_sections_it_ran(report):
    results = base_results()
    results["partial"] = ["dinov2"]
    results[report.DINOV2_KEY] = {"images/s": {"ours PyTorch": 12.0}}
    text = report.summarise(results)
    assert "partial run (dinov2)" in text and "full run" not in text
    assert "| ours PyTorch | 12.0 | — |" in text


def test_a_ratio_just_below_its_target_does_not_read_as_the_target(report):
    """0.998 against a target of 1.0 used to read "1.00 ✗ (missed)": the miss shows its third decimal now."""
    results = {"inference": {"S/16": {"pytorch": {"batch 8": {"ours": 9.98, "HF SDPA": 10.0}}},
                             "B/16": {"pytorch": {"batch 8": {"ours": 10.0, "HF SDPA": 10.0}}}}}
    rows = report.target_rows(results)
    assert "| PyTorch eager, default | ViT-S/16 | 10.0 | 10.0 | 0.998 | ≥ 1.0 ✗ (missed) |" in rows
    assert "| PyTorch eager, default | ViT-B/16 | 10.0 | 10.0 | 1.00 | ≥ 1.0 ✓ |" in rows


def test_markdown_table_gives_the_header_the_rule_and_one_line_per_row(report):
    import doctest

    assert report.markdown_table(["model", "img/s", "target"], [["ViT-S/16", 41.2, ""], ["ViT-B/16", "9.0", "≥ 1"]]) == [
        "| model | img/s | target |", "|---|---|---|", "| ViT-S/16 | 41.2 |  |", "| ViT-B/16 | 9.0 | ≥ 1 |"]
    assert report.markdown_table(["DINOv2"], []) == ["| DINOv2 |", "|---|"]
    result = doctest.testmod(report)  # the docstring's example
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------------------------------ worker protocol
@pytest.fixture(scope="module")
def saved_tiny_model(tmp_path_factory):
    pytest.importorskip("torch")
    import torch

    from vit import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, encoder_stride=8, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=64, num_labels=10)
    folder = tmp_path_factory.mktemp("bench-worker")
    model = ViTForImageClassification(config).eval()
    model.save_pretrained(folder)
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    np.save(folder / "input.npy", x)
    with torch.inference_mode():
        logits = model(torch.from_numpy(x)).logits.numpy()
    return folder, logits


def test_a_worker_runs_the_model_on_the_given_input_and_reports_its_peak(framework, saved_tiny_model, monkeypatch):
    folder, logits = saved_tiny_model
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = load("bench")
    worker = bench.PeerWorker(sys.executable, f"ours-{framework}", "vit", str(folder), str(folder / "input.npy"))
    try:
        worker.wait_ready()
        assert worker.round(calls=2) > 0
        np.testing.assert_allclose(worker.output(), logits, atol=1e-5)
        assert worker.ask(op="peak")["peak RSS MiB"] > 0
    finally:
        worker.close()
    assert worker.process.returncode == 0


def test_a_worker_that_cannot_start_names_the_problem(saved_tiny_model, monkeypatch):
    folder, _ = saved_tiny_model
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = load("bench")
    worker = bench.PeerWorker(sys.executable, "nobody", "vit", str(folder), str(folder / "input.npy"))
    try:
        with pytest.raises(RuntimeError, match="usage: peer_worker.py .*ours-pt"):
            worker.wait_ready()
    finally:
        worker.close()


def test_keras_hubs_worker_answers_with_the_checkpoints_layer_norm_eps(saved_tiny_model, monkeypatch, tmp_path):
    """keras-hub's HF converter keeps its own LayerNorm eps (1e-6); the "config eps" output rebuilds the backbone
    with config.json's, so it must match our model where the converter's output does not."""
    pytest.importorskip("keras_hub")
    pytest.importorskip("jax")
    import json

    import torch

    from vit import ViTConfig, ViTModel

    torch.manual_seed(0)  # LayerNorm inputs of a few channels, where eps 1e-6 against 1e-12 shows
    config = ViTConfig(image_size=32, patch_size=8, encoder_stride=8, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=64, num_labels=10, initializer_range=1e-3)
    from vit import ViTForImageClassification

    ViTForImageClassification(config).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["layer_norm_eps"] == 1e-12
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "input.npy", x)
    with torch.inference_mode():
        ours = ViTModel.from_pretrained(tmp_path, add_pooling_layer=False)(torch.from_numpy(x)).last_hidden_state.numpy()
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = load("bench")
    worker = bench.PeerWorker(sys.executable, "keras-hub", "vit-backbone", str(tmp_path), str(tmp_path / "input.npy"),
                              env={"KERAS_BACKEND": "jax"}, timeout=300)
    try:
        worker.wait_ready()
        as_converted, with_config_eps = worker.output(), worker.output(variant="config eps")
    finally:
        worker.close()
    np.testing.assert_allclose(with_config_eps, ours, atol=1e-4)
    assert np.abs(as_converted - ours).max() > 10 * np.abs(with_config_eps - ours).max()


def test_low_precision_lines_name_the_cpus_instructions_and_each_ratio(report):
    results = base_results()
    results["low precision (batch 8)"] = {"S/16": {
        "cpu low-precision instructions": {"avx2": True, "avx512_bf16": False, "avx512_vnni": False},
        "torch CPU capability": "AVX2",
        "matmul GFLOP/s (1576x384 @ 384x1536)": {"torch fp32": 100.0, "torch bf16": 20.0},
        "images/s (batch 8)": {"pytorch fp32": 10.0, "pytorch int8 dynamic": 16.5, "flax fp32": 10.0,
                               "flax int8 dynamic": 11.0},
        "ratios": {"pytorch int8 dynamic / pytorch fp32": 1.65, "flax int8 dynamic / flax fp32": 1.1},
    }}
    text = report.summarise(results)
    assert "The CPU has avx2; it lacks avx512_bf16, avx512_vnni (torch: AVX2)" in text
    # the int8 rows side by side, in bench_low_precision's order
    assert "| pytorch int8 dynamic / pytorch fp32 | 1.65 |\n| flax int8 dynamic / flax fp32 | 1.10 |" in text
    assert "(1576x384 @ 384x1536), GFLOP/s: torch fp32 100, torch bf16 20." in text
    assert "bf16 and int8" not in report.summarise(base_results())


def test_training_lines_give_the_ratios_and_mfu_of_each_step(report):
    results = base_results()
    results["inference"] = {"S/16": {"GFLOPs per image": 10.0}}
    results["training step (ViT-S/16, batch 8)"] = {"PyTorch (ours)": 2.0, "PyTorch (HF)": 1.6,
                                                     "TensorFlow XLA (ours)": 3.0, "Flax jit (ours)": 1.0}
    text = "\n".join(report.training_lines(results))
    assert "| PyTorch (ours) | 2.00 | 1.25 | 1.00 | 0.30 |" in text  # 3 x 10 GFLOPs x 2 img/s / 200 GF/s
    assert "| TensorFlow XLA (ours) | 3.00 | 1.88 | 1.50 | 0.60 |" in text  # peak 150
    assert "| Flax jit (ours) | 1.00 | 0.62 | 0.50 | 0.25 |" in text  # peak 120
    assert report.training_lines(base_results()) == []


def test_bf16_training_steps_get_their_own_table(report):
    """bf16 mixed-precision steps are compared with their framework's fp32 step and HF's, not given an fp32 MFU."""
    results = base_results()
    results[report.TRAINING_GFLOPS_KEY] = 10.0
    results["training step (ViT-S/16, batch 8)"] = {
        "PyTorch (ours)": 2.0, "PyTorch (HF)": 1.6, "PyTorch (HF), bf16 autocast": 4.0,
        "PyTorch (ours), bf16 autocast": 4.4, "Flax jit (ours)": 1.0, "Flax jit (ours), bf16 compute": 3.0}
    text = "\n".join(report.training_lines(results))
    assert "| PyTorch (ours), bf16 autocast | 4.40 | 2.20 | 2.75 | 1.10 | 1.00 |" in text
    assert "| Flax jit (ours), bf16 compute | 3.00 | 3.00 | 1.88 | 0.75 | 0.68 |" in text
    assert "| PyTorch (HF), bf16 autocast | 4.00 | 2.50 | 2.50 | 1.00 | 0.91 |" in text
    assert text.count("bf16 compute |") == 1  # not in the fp32 table


def test_a_training_only_run_gives_mfu_and_the_pytorch_time_shares(report):
    """A partial run (--only training) has no inference section: MFU uses the forward FLOPs the run stored."""
    results = base_results()
    results["training step (ViT-S/16, batch 8)"] = {"PyTorch (ours)": 2.0, "PyTorch (HF)": 1.6}
    results[report.TRAINING_GFLOPS_KEY] = 10.0
    results[report.TRAINING_SHARES_KEY] = {"GEMM (mm, addmm, bmm)": 0.74, "everything else": 0.26}
    text = "\n".join(report.training_lines(results))
    assert "| PyTorch (ours) | 2.00 | 1.25 | 1.00 | 0.30 |" in text
    assert "CPU time by kind (torch.profiler self time): GEMM (mm, addmm, bmm) 74%, everything else 26%." in text


def test_training_phases_split_each_step_into_forward_backward_and_optimizer(report):
    results = base_results()
    results[report.TRAINING_GFLOPS_KEY] = 10.0
    results["training step (ViT-S/16, batch 8)"] = {"Flax jit (ours)": 1.0}
    results[report.TRAINING_PHASES_KEY] = {"Flax jit (ours)": {"forward": 700.0, "forward+backward": 2800.0,
                                                                "optimizer": 40.0, "step": 3000.0}}
    results[report.ATTENTION_MATMUL_KEY] = {"torch (bmm)": 80.0, "jax": 40.0, "jax, pinned to one core": 41.0}
    text = "\n".join(report.training_lines(results))
    assert "| Flax jit (ours) | 700 | 2100 | 40 | 3000 | 3.00 |" in text  # backward 2800 - 700
    assert "GFLOP/s: torch (bmm) 80, jax 40, jax, pinned to one core 41." in text
    del results[report.TRAINING_PHASES_KEY]
    assert "Where each of our steps' time goes" not in "\n".join(report.training_lines(results))


def test_every_variant_follows_several_others_across_rounds():
    """A variant that runs right after another runs in the wake of that one's spinning thread pools, so across a
    bench's rounds each variant must follow several others. A rotated fixed order kept nearly every predecessor:
    our Flax training step, always right after TensorFlow's, read 4.3 img/s there and 5.9 in its own rounds."""
    bench = load("bench")
    names = [f"variant {i}" for i in range(9)]  # as many as the training step has
    orders = bench.round_orders(names, 4)  # make bench's rounds
    assert [sorted(order) for order in orders] == [sorted(names)] * 4
    sequence = [name for order in orders for name in order]
    predecessors = {name: {a for a, b in itertools.pairwise(sequence) if b == name} for name in names}
    assert min(len(p) for p in predecessors.values()) >= 3, predecessors
