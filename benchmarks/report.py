"""Turn a `make bench` result into the README's performance section and a chart.

    python benchmarks/report.py [benchmarks/results/<date>.json]   # default: the newest full run

The README section between `<!-- bench:start -->` and `<!-- bench:end -->` is rewritten from the JSON, so the
numbers there are always the ones a run produced.
"""

from __future__ import annotations

import json
import sys
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


def target_rows(results: dict) -> list[str]:
    rows = ["| comparison (batch 8) | model | ours img/s | peer img/s | ratio | target |", "|---|---|---|---|---|---|"]
    for label, entry in results["inference"].items():
        for framework, ours, peer, target, title in TARGETS:
            cell = entry.get(framework, {}).get("batch 8", {})
            if ours not in cell or peer not in cell:
                continue
            r = cell[ours] / cell[peer]
            verdict = "" if target is None else (f"≥ {target} ✓" if r >= target else f"≥ {target} ✗ (missed)")
            rows.append(f"| {title} | ViT-{label} | {cell[ours]:.1f} | {cell[peer]:.1f} | {r:.2f} | {verdict} |")
    proc = results.get("image processor (to 224)", {}).get("images/s", {})
    if "HF" in proc:
        r = proc["ours"] / proc["HF"]
        rows.append(f"| Image processor, {results['image processor (to 224)']['images']} photos to 224 | — | "
                    f"{proc['ours']:.0f} | {proc['HF']:.0f} | {r:.2f} | ≥ 3 {'✓' if r >= 3 else '✗ (missed)'} |")
    return rows


def mfu_rows(results: dict) -> list[str]:
    peaks = results["matmul GFLOP/s (2048x2048 fp32)"]
    rows = ["| model, batch 8 | framework | img/s | achieved GFLOP/s | matmul peak GFLOP/s | MFU |", "|---|---|---|---|---|---|"]
    for label, entry in results["inference"].items():
        flops = entry["GFLOPs per image"]
        for framework, key in OURS.items():
            cell = entry.get(framework, {}).get("batch 8", {})
            if key not in cell:
                continue
            peak = max(peaks[k] for k in PEAK_KEY[framework])
            achieved = cell[key] * flops
            rows.append(f"| ViT-{label} | {framework} ({key}) | {cell[key]:.1f} | {achieved:.0f} | {peak:.0f} | {achieved / peak:.2f} |")
    return rows


def all_rows(results: dict) -> list[str]:
    rows = ["| model | framework | batch | " + " | ".join(["variant: img/s"]) + " |", "|---|---|---|---|"]
    for label, entry in results["inference"].items():
        for framework in ("pytorch", "tensorflow", "flax"):
            for batch_key, cell in entry.get(framework, {}).items():
                if not batch_key.startswith("batch"):
                    continue
                parts = ", ".join(f"{k} {v:.1f}" if "diff" not in k else f"{k} {v:.1e}" for k, v in cell.items())
                rows.append(f"| ViT-{label} | {framework} | {batch_key[6:]} | {parts} |")
    return rows


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
            parts = []
            for variant in ORT_VARIANTS:
                rate = cell.get(f"onnxruntime {variant}")
                if rate is None:
                    continue
                parts.append(f"{rate:.1f} ({rate / eager:.2f}×) | {cell[f'max |logits diff| {variant} vs PyTorch']:.1e} | "
                             f"{cell[f'top-1 agreement {variant} vs PyTorch']:.2f}")
            if len(parts) == len(ORT_VARIANTS):
                rows.append(f"| ViT-{label} | {batch_key[6:]} | {eager:.1f} | " + " | ".join(parts) + " |")
    if not rows:
        return []
    header = ["| model | batch | PyTorch eager img/s | onnxruntime fp32 img/s (× eager) | fp32 max \\|logit diff\\| | "
              "fp32 top-1 agreement | onnxruntime int8 img/s (× eager) | int8 max \\|logit diff\\| | int8 top-1 agreement |",
              "|---|---|---|---|---|---|---|---|---|"]
    return header + rows


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


def summarise(results: dict) -> str:
    m = results["machine"]
    lines = [
        f"Measured {results['date']} on {m['cpu']}, {m['cores']} cores (torch {m['torch']}, TensorFlow {m['tensorflow']}, "
        f"JAX {m['jax']}); {'quick run' if results['quick'] else 'full run'}, {results['seconds']:.0f} s. "
        "Ratios are ours / peer measured side by side in the same run.",
        "",
        *target_rows(results),
        "",
        "Model FLOP utilisation (images/s × FLOPs per image ÷ the best fp32 2048² matmul the framework reaches here):",
        "",
        *mfu_rows(results),
    ]
    lines += export_and_embed_lines(results)
    peers = results.get("peers", {})
    missing = [f"{k}: {v}" for k, v in peers.items() if v != "available"]
    if missing:
        lines += ["", "Peers not measured: " + "; ".join(missing) + "."]
    return "\n".join(lines)


def details(results: dict) -> str:
    lines = ["<details><summary>Every measurement</summary>", "", *all_rows(results), ""]
    if "fast paths (batch 8)" in results["inference"].get("B/16", {}).get("pytorch", {}):
        fp = results["inference"]["B/16"]["pytorch"]["fast paths (batch 8)"]
        lines += ["PyTorch ViT-B/16 batch 8 optional fast paths: " + ", ".join(
            f"{k} {v:.1f} img/s" for k, v in fp["images/s"].items()) + "; max |logit diff| vs fp32: " + ", ".join(
            f"{k} {v:.3f}" for k, v in fp["max |logits diff| vs fp32"].items()) + f" (logits up to {fp['logits scale (max |fp32 logit|)']:.1f}); "
            "top-1 agreement: " + ", ".join(f"{k} {v:.2f}" for k, v in fp["top-1 agreement vs fp32"].items()) + "."]
    if "training step (ViT-S/16, batch 8)" in results:
        lines += ["", "Training step, ViT-S/16 batch 8 (img/s): " + ", ".join(
            f"{k} {v:.1f}" for k, v in results["training step (ViT-S/16, batch 8)"].items()) + "."]
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
        path = sorted(p for p in RESULTS.glob("*.json") if "quick" not in p.name)[-1]
    results = json.loads(path.read_text())
    chart_path = path.with_suffix(".png")
    chart(results, chart_path)
    if not results["quick"]:
        update_readme(results, chart_path)
    print(summarise(results))


if __name__ == "__main__":
    main(sys.argv[1:])
