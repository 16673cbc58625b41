"""Turn a `make bench` result into the README's performance section and a chart.

    python benchmarks/report.py [benchmarks/results/<date>.json]   # default: the newest full run

The README section between `<!-- bench:start -->` and `<!-- bench:end -->` is rewritten from the JSON, so the
numbers there are always the ones a run produced.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).parent.parent
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"

# (framework key, ours, peer, target ratio)
TARGETS = [
    ("pytorch", "ours", "HF SDPA", 1.0, "PyTorch eager, default"),
    ("pytorch", "ours optimize_for_inference", "HF SDPA", 1.15, "PyTorch optimize_for_inference()"),
    ("pytorch", "ours optimize_for_inference (again)", "HF torch.compile", 1.0, "PyTorch optimize_for_inference() vs HF torch.compile"),
    ("tensorflow", "ours XLA", "HF XLA", 1.15, "TensorFlow XLA"),
    ("tensorflow", "ours eager", "HF eager", None, "TensorFlow eager"),
    ("flax", "ours jit", "HF jit", 1.15, "Flax jit"),
]
PEAK_KEY = {"pytorch": ("torch (MKL)", "torch (oneDNN)"), "tensorflow": ("tensorflow (XLA)",), "flax": ("jax",)}
OURS = {"pytorch": "ours", "tensorflow": "ours XLA", "flax": "ours jit"}


def fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def verdict(ratio: float, target: float) -> tuple[str, str]:
    """(the ratio, the target's cell): the ratio gets a third decimal where two would round a miss up to the target.

    >>> verdict(0.998, 1.0)
    ('0.998', '≥ 1.0 ✗ (missed)')
    >>> verdict(3.14, 3)
    ('3.14', '≥ 3 ✓')
    """
    digits = 3 if ratio < target <= round(ratio, 2) else 2
    return fmt(ratio, digits), f"≥ {target} ✓" if ratio >= target else f"≥ {target} ✗ (missed)"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """A Markdown table's lines: the header, the rule, then one line per row of already formatted cells.

    >>> markdown_table(["model", "img/s"], [["ViT-S/16", "41.2"]])
    ['| model | img/s |', '|---|---|', '| ViT-S/16 | 41.2 |']
    """

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(cell) for cell in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(row) for row in rows)]


def target_rows(results: dict) -> list[str]:
    rows = []
    for label, entry in results["inference"].items():
        for framework, ours, peer, target, title in TARGETS:
            cell = entry.get(framework, {}).get("batch 8", {})
            if ours not in cell or peer not in cell:
                continue
            r = cell[ours] / cell[peer]
            ratio, target_cell = (f"{r:.2f}", "") if target is None else verdict(r, target)
            rows.append([title, f"ViT-{label}", f"{cell[ours]:.1f}", f"{cell[peer]:.1f}", ratio, target_cell])
    proc = results.get("image processor (to 224)", {}).get("images/s", {})
    if "HF" in proc:
        r = proc["ours"] / proc["HF"]
        rows.append([f"Image processor, {results['image processor (to 224)']['images']} photos to 224", "—",
                     f"{proc['ours']:.0f}", f"{proc['HF']:.0f}", *verdict(r, 3)])
    return markdown_table(["comparison (batch 8)", "model", "ours img/s", "peer img/s", "ratio", "target"], rows)


def mfu_rows(results: dict) -> list[str]:
    peaks = results["matmul GFLOP/s (2048x2048 fp32)"]
    rows = []
    for label, entry in results["inference"].items():
        flops = entry["GFLOPs per image"]
        for framework, key in OURS.items():
            cell = entry.get(framework, {}).get("batch 8", {})
            if key not in cell:
                continue
            peak = max(peaks[k] for k in PEAK_KEY[framework])
            achieved = cell[key] * flops
            rows.append([f"ViT-{label}", f"{framework} ({key})", f"{cell[key]:.1f}", f"{achieved:.0f}", f"{peak:.0f}",
                         f"{achieved / peak:.2f}"])
    return markdown_table(["model, batch 8", "framework", "img/s", "achieved GFLOP/s", "matmul peak GFLOP/s", "MFU"], rows)


def all_rows(results: dict) -> list[str]:
    rows = []
    for label, entry in results["inference"].items():
        for framework in ("pytorch", "tensorflow", "flax"):
            for batch_key, cell in entry.get(framework, {}).items():
                if not batch_key.startswith("batch"):
                    continue
                parts = ", ".join(f"{k} {v:.1f}" if "diff" not in k else f"{k} {v:.1e}" for k, v in cell.items())
                rows.append([f"ViT-{label}", framework, batch_key[6:], parts])
    return markdown_table(["model", "framework", "batch", "variant: img/s"], rows)


EAGER = "PyTorch eager (ours)"
ORT_VARIANTS = ("fp32", "int8")


def onnxruntime_rows(results: dict) -> list[str]:
    """`vit export onnx` under onnxruntime (fp32 and int8) against PyTorch eager, from bench_onnxruntime's entries."""
    rows = []
    for label, entry in results.get("inference", {}).items():
        ort = entry.get("onnxruntime")
        if not ort:
            continue
        for batch_key, cell in ort.items():
            if not batch_key.startswith("batch") or EAGER not in cell:
                continue
            eager = cell[EAGER]
            cells = [f"ViT-{label}", batch_key[6:], f"{eager:.1f}"]
            for variant in ORT_VARIANTS:
                rate = cell.get(f"onnxruntime {variant}")
                if rate is None:
                    break
                cells += [f"{rate:.1f} ({rate / eager:.2f}×)", f"{cell[f'max |logits diff| {variant} vs PyTorch']:.1e}",
                          f"{cell[f'top-1 agreement {variant} vs PyTorch']:.2f}"]
            else:
                rows.append(cells)
    if not rows:
        return []
    header = ["model", "batch", "PyTorch eager img/s"]
    for variant in ORT_VARIANTS:
        header += [f"onnxruntime {variant} img/s (× eager)", f"{variant} max \\|logit diff\\|", f"{variant} top-1 agreement"]
    return markdown_table(header, rows)


def onnx_export_note(results: dict) -> str | None:
    """The exported files' sizes and export times, one clause per model and variant."""
    clauses = []
    for label, entry in results.get("inference", {}).items():
        for variant in ORT_VARIANTS:
            export = entry.get("onnxruntime", {}).get(f"export {variant}")
            if export:
                clauses.append(f"ViT-{label} {variant} {export['file MiB']:.0f} MiB in {export['seconds']:.0f} s")
    return ("Exported files (with the export's own parity check): " + "; ".join(clauses) + ".") if clauses else None


def embed_line(results: dict) -> str | None:
    """`vit embed`'s engine against the plain loop (bench_embed)."""
    embed = results.get("vit embed (ViT-S/16, 224)")
    if not embed or embed.get("ratio engine / loop") is None:
        return None
    rates = embed["images/s"]
    return (f"`vit embed` (ViT-S/16, 224, {embed['images']} JPEG photos, batch {embed['batch']}): the local engine "
            f"{rates['vit embed (local engine)']:.1f} img/s, a plain processor + model loop {rates['plain loop']:.1f} "
            f"img/s, ratio engine / loop {embed['ratio engine / loop']:.2f}.")


def export_and_embed_lines(results: dict) -> list[str]:
    """The onnxruntime table and the `vit embed` ratio, for summarise(); nothing for a run without them."""
    lines: list[str] = []
    rows = onnxruntime_rows(results)
    if rows:
        lines += ["", "`vit export onnx` under onnxruntime (CPU provider), against our PyTorch eager model on the same "
                  "input; the int8 file is onnxruntime's dynamic quantisation, and its differences are on random "
                  "weights (small logits):", "", *rows]
        note = onnx_export_note(results)
        if note:
            lines += ["", note]
    embed = embed_line(results)
    if embed:
        lines += ["", embed]
    return lines


# ------------------------------------------------------- today's peers, DINOv2, cost as inputs grow (issue 15)
PEERS_KEY, DINOV2_KEY, SWEEP_KEY = ("today's peers (224, batch 8)", "DINOv2-S/14 at 224 (batch 8)",
                                    "cost as inputs grow")
# (section of a model's peer entry, our side, the peer sides)
PEER_PAIRS = [
    ("pytorch", "ours", ("HF 4.57 SDPA", "HF 5.x SDPA")),
    ("keras-hub jax", "ours (flax)", ("keras-hub ViTBackbone (jax)",)),
    ("keras-hub tensorflow", "ours (tf)", ("keras-hub ViTBackbone (tensorflow)",)),
]
DINOV2_PAIRS = [("ours PyTorch", "HF 4.57 PyTorch SDPA"), ("ours PyTorch", "HF 5.x PyTorch SDPA"),
                ("ours Flax jit", "HF 4.57 Flax jit")]


EPS_FIXED = "with config.json's layer_norm_eps"


def _diff(entry: dict, side: str, eps_fixed: bool = False) -> float | None:
    """A side's max |diff| against the entry's reference side, whatever the reference is called; with eps_fixed,
    keras-hub's backbone rebuilt with the checkpoint's layer_norm_eps (its converter keeps 1e-6)."""
    for key, diffs in entry.items():
        if key.startswith("max |diff| vs ") and key.endswith(EPS_FIXED) == eps_fixed and side in diffs:
            return diffs[side]
    return None


def _errors(entry: dict, where: str) -> list[str]:
    return [f"{where}: {name} not measured ({error})" for name, error in entry.get("errors", {}).items()]


def today_peer_rows(results: dict) -> list[str]:
    """Ours against HF 4.57, HF 5.x (PyTorch) and keras-hub's ViTBackbone (JAX, TF), one alternating run each."""
    section = results.get(PEERS_KEY)
    if not section:
        return []
    if "error" in section:
        return [f"Today's peers were not measured: {section['error']}"]
    rows = []
    notes: list[str] = []
    for label, entry in section.items():
        if not isinstance(entry, dict):
            continue
        for part, ours, peers in PEER_PAIRS:
            cell = entry.get(part, {})
            rates = cell.get("images/s", {})
            notes += _errors(cell, f"ViT-{label} {part}")
            for peer in peers:
                if ours not in rates or peer not in rates:
                    continue
                diff, eps_fixed = _diff(cell, peer), _diff(cell, peer, eps_fixed=True)
                rows.append([f"ViT-{label}", part.replace("keras-hub ", ""), f"{rates[ours]:.1f}", peer,
                             f"{rates[peer]:.1f}", f"{rates[ours] / rates[peer]:.2f}", "—" if diff is None else f"{diff:.1e}"])
                if eps_fixed is not None:
                    notes.append(f"ViT-{label}, {peer}: keras-hub's HF converter ignores config.json's layer_norm_eps "
                                 f"(its backbone keeps 1e-6; the checkpoint says 1e-12). Rebuilt with the checkpoint's "
                                 f"eps, its max abs diff vs ours is {eps_fixed:.1e}.")
    table = markdown_table(["model, batch 8, 224²", "framework", "ours img/s", "peer", "peer img/s", "ours / peer",
                            "max abs diff vs ours"], rows)
    return table + ([""] + notes if notes else [])


def dinov2_rows(results: dict) -> list[str]:
    """DINOv2-S/14 (a 518 checkpoint) at 224: ours in three frameworks against HF 4.57 and HF 5.x."""
    entry = results.get(DINOV2_KEY)
    if not entry:
        return []
    if "error" in entry:
        return [f"DINOv2 was not measured: {entry['error']}"]
    rates = entry.get("images/s", {})
    rows = []
    for side, rate in rates.items():
        diff = _diff(entry, side)
        rows.append([side, f"{rate:.1f}", "—" if diff is None else f"{diff:.1e}"])
    rows = markdown_table(["DINOv2-S/14 at 224, batch 8", "img/s", "max abs diff vs ours PyTorch"], rows)
    ratios = [f"{ours} / {peer} = {rates[ours] / rates[peer]:.2f}" for ours, peer in DINOV2_PAIRS
              if ours in rates and peer in rates]
    if ratios:
        rows += ["", "Ratios from the same alternating run: " + "; ".join(ratios) + "."]
    return rows + _errors(entry, "DINOv2")


def sweep_rows(results: dict) -> list[str]:
    """img/s, MFU and each process's peak memory as the resolution (and the token count) grows."""
    section = results.get(SWEEP_KEY)
    if not section:
        return []
    if "error" in section:
        return [f"The resolution sweep was not measured: {section['error']}"]
    peaks = results["matmul GFLOP/s (2048x2048 fp32)"]
    rows = []
    notes: list[str] = []
    for point in section.get("points", {}).values():
        for framework in PEAK_KEY:
            cell = point.get(framework)
            if not cell:
                continue
            notes += _errors(cell, f"{point['model']} {point['image size']} {framework}")
            rates, memory, loaded = cell.get("images/s", {}), cell.get("peak RSS MiB", {}), cell.get("RSS after loading MiB", {})
            # the process's peak, and in brackets what the forward added to the loaded process
            peak_rss = {side: f"{rss:.0f}" + (f" (+{rss - loaded[side]:.0f})" if side in loaded else "")
                        for side, rss in memory.items()}
            peak = max(peaks[k] for k in PEAK_KEY[framework])
            mfu = {side: rate * point["GFLOPs per image"] / peak for side, rate in rates.items()}
            ours, hf = rates.get("ours"), rates.get("HF 4.57")
            rows.append([point["model"], point["image size"], point["tokens"], point["batch"], framework, fmt(ours, 1),
                         fmt(mfu.get("ours")), fmt(hf, 1), fmt(mfu.get("HF 4.57")), fmt(ours / hf if ours and hf else None),
                         peak_rss.get("ours", "n/a"), peak_rss.get("HF 4.57", "n/a")])
    attention = section.get("attention", {})
    notes += ["", "Peak memory includes the interpreter and every library the side imports (importing HF 4.57's "
                  "PyTorch classes also imports TensorFlow and JAX when they are installed); the bracket is what the "
                  "compiled forward added after loading."]
    if attention:
        notes += ["", "Attention at long sequences: " + "; ".join(f"{k}: {v}" for k, v in attention.items()) + "."]
    table = markdown_table(["model", "size", "tokens", "batch", "framework", "ours img/s", "ours MFU", "HF 4.57 img/s",
                            "HF MFU", "ours / HF", "ours peak MiB (forward)", "HF peak MiB (forward)"], rows)
    return table + ([""] + notes if notes else [])


def new_sections(results: dict) -> list[str]:
    """The issue-15 sections that a run has, each under its own heading."""
    lines: list[str] = []
    for title, rows in (("Today's peers: HF transformers 5.x (PyTorch) and keras-hub's ViTBackbone", today_peer_rows(results)),
                        ("DINOv2-S/14 at 224", dinov2_rows(results)),
                        ("Cost as inputs grow (MFU against the framework's fp32 matmul peak; peak RSS of a fresh "
                         "process per framework, side and size)", sweep_rows(results))):
        if rows:
            lines += ["", f"**{title}**", "", *rows]
    return lines


def low_precision_lines(results: dict) -> list[str]:
    """bf16 and int8 against fp32 per framework (`bench_low_precision`), with the CPU's instruction sets."""
    section = results.get("low precision (batch 8)")
    if not section:
        return []
    lines = ["", "bf16 and int8 against fp32 of the same framework (`bench_low_precision`), ratios of images/s:", ""]
    for label, entry in section.items():
        isa = entry["cpu low-precision instructions"]
        have = ", ".join(k for k, v in isa.items() if v) or "none of them"
        lacks = ", ".join(k for k, v in isa.items() if not v) or "nothing"
        lines += [f"ViT-{label}, batch 8. The CPU has {have}; it lacks {lacks} (torch: {entry['torch CPU capability']}).",
                  "", *markdown_table(["variant / baseline", "ratio"],
                                      [[name, f"{r:.2f}"] for name, r in entry["ratios"].items()])]
        matmul = next((v for k, v in entry.items() if k.startswith("matmul GFLOP/s")), {})
        if matmul:
            shape = next(k for k in entry if k.startswith("matmul GFLOP/s"))[len("matmul GFLOP/s "):]
            lines += ["", f"One MLP matmul {shape}, GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in matmul.items()) + "."]
        lines.append("")
    return lines


TRAINING_GFLOPS_KEY = "training step: forward GFLOPs per image"
TRAINING_SHARES_KEY = "PyTorch training step, share of CPU time"
TRAINING_PHASES_KEY = "training step phases, ms (ViT-S/16, batch 8)"
ATTENTION_MATMUL_KEY = "attention batched matmul GFLOP/s (48x197x64 @ 48x64x197)"


def training_lines(results: dict) -> list[str]:
    """One optimizer step of ViT-S/16 at batch 8 per framework: img/s, the ratios issue 15 asks for, and MFU (the
    step's FLOPs, 3x the forward's, over the framework's best fp32 matmul rate in the same run)."""
    steps = results.get("training step (ViT-S/16, batch 8)")
    forward = results.get("inference", {}).get("S/16", {}).get("GFLOPs per image") or results.get(TRAINING_GFLOPS_KEY)
    if not steps or forward is None:
        return []
    peaks = results["matmul GFLOP/s (2048x2048 fp32)"]
    peak_of = {"PyTorch": max(peaks[k] for k in PEAK_KEY["pytorch"]), "TensorFlow": peaks["tensorflow (XLA)"],
               "Flax": peaks["jax"]}
    pt = steps.get("PyTorch (ours)")
    hf = steps.get("PyTorch (HF)")
    rows = []
    for name, rate in steps.items():
        if is_bf16_step(name):
            continue
        peak = next(v for k, v in peak_of.items() if name.startswith(k))
        rows.append([name, f"{rate:.2f}", fmt(rate / hf if hf else None), fmt(rate / pt if pt else None),
                     f"{3 * forward * rate / peak:.2f}"])
    lines = ["", "Training step (forward, backward, AdamW), ViT-S/16 at batch 8:", "",
             *markdown_table(["variant", "img/s", "vs PyTorch (HF)", "vs PyTorch (ours)", "MFU"], rows)]
    lines += bf16_training_lines(steps)
    shares = results.get(TRAINING_SHARES_KEY)
    if shares:
        lines += ["", "Our PyTorch step's CPU time by kind (torch.profiler self time): "
                  + ", ".join(f"{kind} {share:.0%}" for kind, share in shares.items()) + "."]
    return lines + training_phase_lines(results)


def is_bf16_step(name: str) -> bool:
    return "bf16" in name or "bfloat16" in name


def bf16_training_lines(steps: dict[str, float]) -> list[str]:
    """The bf16 mixed-precision steps (float32 weights and AdamW, bf16 compute) of the same alternating run, against
    the same framework's float32 step and HF's steps."""
    bf16 = {name: rate for name, rate in steps.items() if is_bf16_step(name)}
    if not bf16:
        return []
    hf, hf_bf16 = steps.get("PyTorch (HF)"), steps.get("PyTorch (HF), bf16 autocast")
    ours_bf16 = steps.get("PyTorch (ours), bf16 autocast")
    rows = []
    for name, rate in bf16.items():
        fp32 = steps.get(name.split(",")[0])
        rows.append([name, f"{rate:.2f}", fmt(rate / fp32 if fp32 else None), fmt(rate / hf if hf else None),
                     fmt(rate / hf_bf16 if hf_bf16 else None), fmt(rate / ours_bf16 if ours_bf16 else None)])
    return ["", "The same step in bf16 mixed precision (float32 weights and AdamW, bf16 compute), same run:", "",
            *markdown_table(["variant", "img/s", "vs its framework's fp32 step", "vs PyTorch (HF) fp32",
                             "vs PyTorch (HF) bf16", "vs PyTorch (ours) bf16"], rows)]


def training_phase_lines(results: dict) -> list[str]:
    """Where our steps' time goes: forward, backward (forward+backward minus forward), the optimizer alone and
    the whole step, and attention's batched matmul rate in each framework."""
    phases = results.get(TRAINING_PHASES_KEY)
    if not phases:
        return []
    rows = []
    for name, ms in phases.items():
        backward = ms["forward+backward"] - ms["forward"]
        rows.append([name, f"{ms['forward']:.0f}", f"{backward:.0f}", f"{ms['optimizer']:.0f}", f"{ms['step']:.0f}",
                     f"{backward / ms['forward']:.2f}"])
    lines = ["", "Where each of our steps' time goes (ms per batch of 8, phases alternated in their own rounds):", "",
             *markdown_table(["framework", "forward", "backward", "optimizer alone", "step", "backward / forward"], rows)]
    rates = results.get(ATTENTION_MATMUL_KEY)
    if rates:
        lines += ["", "Attention's batched matmul at ViT-S/16, batch 8 (q kᵀ, 48 x 197 x 64 by 48 x 64 x 197; the "
                  "backward pass has four of that size), GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items())
                  + "."]
    return lines


def summarise(results: dict) -> str:
    m = results["machine"]
    kind = "quick run" if results["quick"] else f"partial run ({', '.join(results['partial'])})" \
        if "partial" in results else "full run"
    lines = [
        f"Measured {results['date']} on {m['cpu']}, {m['cores']} cores (torch {m['torch']}, TensorFlow {m['tensorflow']}, "
        f"JAX {m['jax']}); {kind}, {results['seconds']:.0f} s. "
        "Ratios are ours / peer measured side by side in the same run.",
    ]
    if results["inference"]:  # a partial run of the new sections has none
        lines += [
            "",
            *target_rows(results),
            "",
            "Model FLOP utilisation (images/s × FLOPs per image ÷ the best fp32 2048² matmul the framework reaches here):",
            "",
            *mfu_rows(results),
        ]
    lines += export_and_embed_lines(results)
    lines += low_precision_lines(results)
    lines += training_lines(results)
    lines += new_sections(results)
    peers = results.get("peers", {})
    missing = [f"{k}: {v}" for k, v in peers.items() if v != "available"]
    if missing:
        lines += ["", "Peers not measured: " + "; ".join(missing) + "."]
    return "\n".join(lines)


def details(results: dict) -> str:
    lines = ["<details><summary>Every measurement</summary>", "", *all_rows(results), ""]
    if "loading (ViT-B/16)" in results:
        lines += ["", "Loading ViT-B/16 and one batch-8 forward, in a fresh process: " + "; ".join(
            f"{k}: {v['load seconds']:.2f} s, peak RSS {v['peak RSS MiB']:.0f} MiB" if "error" not in v else f"{k}: {v['error']}"
            for k, v in results["loading (ViT-B/16)"].items()) + "."]
    pt = results["inference"].get("S/16", {}).get("pytorch", {})
    if "optimize_for_inference_seconds" in pt:
        lines += ["", f"`optimize_for_inference()` took {pt['optimize_for_inference_seconds']:.2f} s (ViT-S/16); "
                      f"HF's torch.compile took {pt.get('HF torch.compile seconds', float('nan')):.1f} s."]
    lines += ["", "</details>"]
    return "\n".join(lines)


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, ours, peers = [], [], []
    for label, entry in results["inference"].items():
        for framework, key, peer in (("pytorch", "ours", "HF SDPA"), ("tensorflow", "ours XLA", "HF XLA"), ("flax", "ours jit", "HF jit")):
            cell = entry.get(framework, {}).get("batch 8", {})
            if key in cell:
                labels.append(f"ViT-{label}\n{framework}")
                ours.append(cell[key])
                peers.append(cell.get(peer, 0.0))
    fig, ax = plt.subplots(figsize=(9, 4))
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], ours, 0.4, label="vit")
    ax.bar([x + 0.2 for x in xs], peers, 0.4, label="HF transformers 4.57.6")
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("images / s (batch 8, 224²)")
    ax.set_title(f"Inference throughput, {results['machine']['cpu']}, {results['machine']['cores']} cores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def update_readme(results: dict, chart_path: Path) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    body = "\n".join([START, "", summarise(results), "", f"![throughput]({chart_path.relative_to(ROOT)})", "",
                      details(results), "", END])
    if START in text:
        text = text[: text.index(START)] + body + text[text.index(END) + len(END):]
    else:
        text += "\n## Performance\n\n`make bench` (about 12 minutes; `--quick` about one) measures:\n\n" + body + "\n"
    readme.write_text(text)


def main(argv: list[str]) -> None:
    if argv:
        path = Path(argv[0])
    else:
        path = sorted(p for p in RESULTS.glob("*.json") if "quick" not in p.name and "partial" not in p.name)[-1]
    results = json.loads(path.read_text())
    chart_path = path.with_suffix(".png")
    chart(results, chart_path)
    if not results["quick"] and "partial" not in results:
        update_readme(results, chart_path)
    print(summarise(results))


if __name__ == "__main__":
    main(sys.argv[1:])
