"""`make bench`: vit against its peers, side by side in one run, on this machine.

Every comparison runs ours and the peer on the same weights and the same input, alternating A B A B so that
drift on a shared machine cancels, and reports the median of several rounds and the ratio ours / peer.
Results go to benchmarks/results/<date>.json; `benchmarks/report.py` turns them into the README's table and
a chart.

    python benchmarks/bench.py            # the full run
    python benchmarks/bench.py --quick    # ViT-S/16 at batch 8 only, about a minute
    python benchmarks/bench.py --no-sweep # the full run without the cost-vs-resolution sweep
    python benchmarks/bench.py --only peers,dinov2,sweep --sweep-models S --sweep-sizes 224   # just those

The full run ends with issue 15's sections: today's peers (HF transformers 5.x PyTorch from its own venv,
keras-hub's ViTBackbone on JAX and TF), DINOv2-S/14 at 224, and the cost as inputs grow (224, 384, 518). Their
sides run in worker processes (benchmarks/peer_worker.py) that the main process drives in turn, so that one side
runs at a time and each process's peak memory is its own.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import importlib.util
import json
import math
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import warnings  # noqa: E402

import numpy as np  # noqa: E402

warnings.filterwarnings("ignore")
ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "src"))

MODELS = {"S/16": "vit-small-patch16-224", "B/16": "vit-base-patch16-224"}


# ---------------------------------------------------------------------------------------------- helpers
def timed_rounds(variants: dict[str, Callable[[], None]], images: int, rounds: int, min_seconds: float = 0.0) -> dict:
    """Alternate the variants round by round; the median images/s of each.

    Each round runs the variants in a different order (`round_orders`), so that no variant always runs right
    after the same other one: XLA's and TensorFlow's thread pools keep spinning for a while after a call, which
    slows whichever variant comes next (measured: our PyTorch training step 0.85x HF's in a fixed order, 1.00x
    alone). Rotating a fixed order did not do this: it keeps every variant's predecessor but one per round.
    """
    for run in variants.values():  # warm up (compilation, caches)
        run()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for order in round_orders(list(variants), rounds):
        for name in order:
            run = variants[name]
            calls, start = 0, time.perf_counter()
            while True:
                run()
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= min_seconds:
                    break
            samples[name].append(images * calls / elapsed)
    return {name: statistics.median(values) for name, values in samples.items()}


def round_orders(names: list[str], rounds: int) -> list[list[str]]:
    """The order of the variants in each round. Round r starts at variant r and steps through them by a stride
    coprime to their number, a different stride each round, so a variant follows a different one in every round
    where it is not first (strides 1, 2, 4, 5 for the training step's 9 variants)."""
    count = len(names)
    strides = [m for m in range(1, count) if math.gcd(m, count) == 1] or [1]
    return [[names[(r + j * strides[r % len(strides)]) % count] for j in range(count)] for r in range(rounds)]


def ratio(results: dict, ours: str, peer: str) -> float | None:
    if ours in results and peer in results and results[peer]:
        return results[ours] / results[peer]
    return None


def vit_flops(config) -> float:
    """Multiply-adds x 2 of one forward pass for one image."""
    d, mlp, n = config.hidden_size, config.intermediate_size, config.num_patches + config.num_prefix_tokens
    (ph, pw), c = config.patch_hw, config.num_channels
    per_layer = n * (4 * d * d + 2 * d * mlp) + 2 * n * n * d
    return 2.0 * (config.num_hidden_layers * per_layer + config.num_patches * ph * pw * c * d + d * config.num_labels)


def peer_status() -> dict[str, str]:
    status = {}
    for name, module in (("transformers", "transformers"), ("tf_keras", "tf_keras"), ("timm", "timm")):
        try:
            __import__(module)
            status[name] = "available"
        except Exception as err:  # timm's torchvision fails to load beside torch 2.13 CPU
            status[name] = f"not importable: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
    return status


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import jax
    import keras
    import tensorflow as tf
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "tensorflow": tf.__version__, "keras": keras.__version__, "jax": jax.__version__}


# ------------------------------------------------------------------------------------------- matmul peak
def matmul_peaks(n: int = 2048, rounds: int = 5) -> dict[str, float]:
    """fp32 GFLOP/s of a large square matmul in each framework (torch's MKL and oneDNN both)."""
    import jax
    import jax.numpy as jnp
    import tensorflow as tf
    import torch

    a = np.random.default_rng(0).normal(size=(n, n)).astype(np.float32)
    ta = torch.from_numpy(a)
    packed = torch.ops.mkldnn._reorder_linear_weight(ta)
    tfa = tf.constant(a)
    tf_mm = tf.function(lambda x: tf.matmul(x, x), jit_compile=True)
    ja = jnp.asarray(a)
    jax_mm = jax.jit(lambda x: x @ x)
    with torch.inference_mode():
        rates = timed_rounds({
            "torch (MKL)": lambda: torch.matmul(ta, ta),
            "torch (oneDNN)": lambda: torch.ops.mkldnn._linear_pointwise(ta, packed, None, "none", [], ""),
            "tensorflow (XLA)": lambda: tf_mm(tfa).numpy(),
            "jax": lambda: jax_mm(ja).block_until_ready(),
        }, images=1, rounds=rounds)
    return {k: v * 2 * n**3 / 1e9 for k, v in rates.items()}


# ---------------------------------------------------------------------------------------------- models
class Weights:
    """One random ViT saved once in every format, so ours and the peers load the same numbers."""

    def __init__(self, preset: str, **overrides) -> None:
        import torch

        from vit import ViTConfig, ViTForImageClassification

        torch.manual_seed(0)
        self.config = ViTConfig.from_preset(preset, num_labels=1000, **overrides)
        self.folder = tempfile.mkdtemp(prefix="vit-bench-")
        ViTForImageClassification(self.config).save_pretrained(self.folder, formats=("safetensors", "tf", "flax"))
        self.hf_folders = {}
        for fmt, name in (("pt", "model.safetensors"), ("tf", "tf_model.h5"), ("flax", "flax_model.msgpack")):
            folder = os.path.join(self.folder, fmt)
            os.makedirs(folder)
            os.link(os.path.join(self.folder, name), os.path.join(folder, name))
            os.link(os.path.join(self.folder, "config.json"), os.path.join(folder, "config.json"))
            self.hf_folders[fmt] = folder


def bench_pytorch(w: Weights, batches: list[int], rounds: int, have_hf: bool) -> dict:
    import torch

    from vit import ViTForImageClassification

    out: dict = {}
    ours = ViTForImageClassification.from_pretrained(w.folder).eval()
    start = time.perf_counter()
    fast = ours.optimize_for_inference()
    out["optimize_for_inference_seconds"] = time.perf_counter() - start
    hf = None
    if have_hf:
        import transformers

        hf = transformers.ViTForImageClassification.from_pretrained(w.hf_folders["pt"], attn_implementation="sdpa").eval()
    for batch in batches:
        x = torch.from_numpy(np.random.default_rng(batch).normal(size=(batch, 3, 224, 224)).astype(np.float32))
        variants = {"ours": lambda x=x: ours(x), "ours optimize_for_inference": lambda x=x: fast(x)}
        if hf is not None:
            variants["HF SDPA"] = lambda x=x: hf(x)
        with torch.inference_mode():
            res = timed_rounds(variants, batch, rounds)
            if hf is not None:
                res["max |logits diff|"] = float((ours(x).logits - hf(x).logits).abs().max())
        out[f"batch {batch}"] = res
    if hf is not None and 8 in batches:
        torch._dynamo.reset()
        x = torch.from_numpy(np.random.default_rng(8).normal(size=(8, 3, 224, 224)).astype(np.float32))
        with torch.inference_mode():
            start = time.perf_counter()
            compiled = torch.compile(hf)
            compiled(x)
            out["HF torch.compile seconds"] = time.perf_counter() - start
            out["batch 8"].update(timed_rounds({"HF torch.compile": lambda: compiled(x),
                                                "ours optimize_for_inference (again)": lambda: fast(x)}, 8, rounds))
    return out


def bench_onnxruntime(w: Weights, batches: list[int], rounds: int) -> dict:
    """`vit export onnx` in fp32 and int8 under onnxruntime, against our PyTorch eager model, same input."""
    import onnxruntime as ort
    import torch

    from vit import ViTForImageClassification
    from vit.export import export_onnx

    ours = ViTForImageClassification.from_pretrained(w.folder).eval()
    out: dict = {}
    sessions = {}
    for quantize in (None, "int8"):
        path = os.path.join(w.folder, f"model-{quantize or 'fp32'}.onnx")
        start = time.perf_counter()
        report = export_onnx(w.folder, path, quantize=quantize)
        out[f"export {quantize or 'fp32'}"] = {"seconds": time.perf_counter() - start, "max |diff| in the check": report.max_abs_diff,
                                               "file MiB": os.path.getsize(path) / 2**20}
        sessions[quantize or "fp32"] = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch in batches:
        x = np.random.default_rng(batch).normal(size=(batch, 3, 224, 224)).astype(np.float32)
        xt = torch.from_numpy(x)
        variants = {"PyTorch eager (ours)": lambda xt=xt: ours(xt)}
        variants.update({f"onnxruntime {name}": lambda s=s, x=x: s.run(None, {"pixel_values": x})
                         for name, s in sessions.items()})
        with torch.inference_mode():
            res = timed_rounds(variants, batch, rounds)
            ref = ours(xt).logits.numpy()
        for name, s in sessions.items():
            logits = s.run(None, {"pixel_values": x})[0]
            res[f"max |logits diff| {name} vs PyTorch"] = float(np.abs(logits - ref).max())
            res[f"top-1 agreement {name} vs PyTorch"] = float((logits.argmax(-1) == ref.argmax(-1)).mean())
        out[f"batch {batch}"] = res
    return out


def bench_tensorflow(w: Weights, batches: list[int], rounds: int, have_hf_tf: bool, eager: bool) -> dict:
    import tensorflow as tf

    from vit import TFViTForImageClassification

    out: dict = {}
    ours = TFViTForImageClassification.from_pretrained(w.folder)
    ours_xla = tf.function(lambda x: ours(x).logits, jit_compile=True)
    hf = hf_xla = None
    if have_hf_tf:
        import transformers

        hf = transformers.TFViTForImageClassification.from_pretrained(w.hf_folders["tf"])
        hf_xla = tf.function(lambda x: hf(x).logits, jit_compile=True)
    for batch in batches:
        x = tf.constant(np.random.default_rng(batch).normal(size=(batch, 3, 224, 224)).astype(np.float32))
        variants = {"ours XLA": lambda x=x: ours_xla(x).numpy()}
        if hf_xla is not None:
            variants["HF XLA"] = lambda x=x: hf_xla(x).numpy()
        if eager and batch == 8:  # eager TF is slow; one batch size tells the story
            variants["ours eager"] = lambda x=x: ours(x).logits.numpy()
            if hf is not None:
                variants["HF eager"] = lambda x=x: hf(x).logits.numpy()
        res = timed_rounds(variants, batch, rounds)
        if hf_xla is not None:
            res["max |logits diff|"] = float(np.max(np.abs(ours_xla(x).numpy() - hf_xla(x).numpy())))
        out[f"batch {batch}"] = res
    return out


def bench_flax(w: Weights, batches: list[int], rounds: int, have_hf: bool) -> dict:
    import jax
    import jax.numpy as jnp

    from vit import FlaxViTForImageClassification

    out: dict = {}
    ours = FlaxViTForImageClassification.from_pretrained(w.folder)
    hf = hf_jit = None
    if have_hf:
        import transformers

        hf = transformers.FlaxViTForImageClassification.from_pretrained(w.hf_folders["flax"])
        hf_jit = jax.jit(lambda p, x: hf(x, params=p).logits)
    for batch in batches:
        x = jnp.asarray(np.random.default_rng(batch).normal(size=(batch, 3, 224, 224)).astype(np.float32))
        variants = {"ours jit": lambda x=x: ours(x).logits.block_until_ready()}
        if hf_jit is not None:
            variants["HF jit"] = lambda x=x: hf_jit(hf.params, x).block_until_ready()
        res = timed_rounds(variants, batch, rounds)
        if hf_jit is not None:
            res["max |logits diff|"] = float(np.max(np.abs(np.asarray(ours(x).logits) - np.asarray(hf_jit(hf.params, x)))))
        out[f"batch {batch}"] = res
    return out


# -------------------------------------------------------------------------------------------- training
def bench_training(rounds: int, have_hf: bool) -> tuple[dict, dict]:
    """One optimizer step of ViT-S/16 at batch 8, in each framework (images/s), and where our steps' time goes.

    Returns (steps, phases): steps maps each variant to images/s of a whole step (forward, backward, AdamW);
    phases maps each of our frameworks to the milliseconds of its forward pass with the loss, of forward and
    backward (the gradients, no optimizer), of the optimizer alone (AdamW applying fixed gradients) and of the whole
    step, alternated in their own rounds.
    """
    import jax
    import keras
    import optax
    import tensorflow as tf
    import torch

    from vit import (
        FlaxViTForImageClassification,
        TFViTForImageClassification,
        ViTConfig,
        ViTForImageClassification,
    )

    config = ViTConfig.from_preset("vit-small-patch16-224", num_labels=1000)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3, 224, 224)).astype(np.float32)
    y = rng.integers(0, 1000, 8)
    variants: dict[str, Callable[[], None]] = {}
    phases: dict[str, dict[str, Callable[[], None]]] = {}

    pt = ViTForImageClassification(config).train()
    # Fused AdamW, as HF's Trainer uses with torch >= 2.8, for ours and HF's alike.
    pt_opt = torch.optim.AdamW(pt.parameters(), 1e-4, fused=True)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def pt_step(model=pt, opt=pt_opt, bf16=False):
        opt.zero_grad()
        # bf16 mixed precision as HF's Trainer does it (bf16=True): float32 weights and AdamW, bf16 autocast compute.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(xt, labels=yt).loss
        loss.backward()
        opt.step()

    def pt_forward():
        with torch.no_grad():
            pt(xt, labels=yt).loss.item()

    def pt_gradients():
        pt.zero_grad()
        pt(xt, labels=yt).loss.backward()

    def pt_optimizer():
        pt_opt.step()  # the gradients the last backward pass left

    variants["PyTorch (ours)"] = pt_step
    phases["PyTorch (ours)"] = {"forward": pt_forward, "forward+backward": pt_gradients, "optimizer": pt_optimizer,
                                "step": pt_step}
    if have_hf:
        import transformers

        hf = transformers.ViTForImageClassification(transformers.ViTConfig(num_labels=1000, hidden_size=384,
                                                                           num_attention_heads=6, intermediate_size=1536)).train()
        hf_opt = torch.optim.AdamW(hf.parameters(), 1e-4, fused=True)
        variants["PyTorch (HF)"] = lambda: pt_step(hf, hf_opt)
        variants["PyTorch (HF), bf16 autocast"] = lambda: pt_step(hf, hf_opt, bf16=True)
    variants["PyTorch (ours), bf16 autocast"] = lambda: pt_step(bf16=True)

    def tf_trainer(model):
        optimizer = keras.optimizers.AdamW(1e-4)

        @tf.function(jit_compile=True)
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = model(x, labels=y, training=True).loss
            optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
            return loss

        return step

    tfm = TFViTForImageClassification(config)
    tf_step = tf_trainer(tfm)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # what examples/train_tf.py --mixed-precision bf16 sets
    try:
        tf_mixed_step = tf_trainer(TFViTForImageClassification(config))
    finally:
        keras.mixed_precision.set_global_policy("float32")

    @tf.function(jit_compile=True)
    def tf_forward(x, y):
        return tfm(x, labels=y, training=True).loss

    @tf.function(jit_compile=True)
    def tf_gradients(x, y):
        with tf.GradientTape() as tape:
            loss = tfm(x, labels=y, training=True).loss
        return tape.gradient(loss, tfm.trainable_variables)

    tf_fixed_grads = [tf.fill(v.shape, 1e-3) for v in tfm.trainable_variables]
    tf_opt_alone = keras.optimizers.AdamW(1e-4)

    @tf.function(jit_compile=True)
    def tf_optimizer():
        tf_opt_alone.apply(tf_fixed_grads, tfm.trainable_variables)

    xtf, ytf = tf.constant(x), tf.constant(y)
    variants["TensorFlow XLA (ours)"] = lambda: tf_step(xtf, ytf).numpy()
    variants["TensorFlow XLA (ours), mixed_bfloat16"] = lambda: tf_mixed_step(xtf, ytf).numpy()
    phases["TensorFlow XLA (ours)"] = {"forward": lambda: tf_forward(xtf, ytf).numpy(),
                                       "forward+backward": lambda: [g.numpy() for g in tf_gradients(xtf, ytf)],
                                       "optimizer": lambda: (tf_optimizer(), tfm.trainable_variables[0].numpy()),
                                       "step": variants["TensorFlow XLA (ours)"]}

    fm = FlaxViTForImageClassification(config)
    # bf16 compute with float32 params, what examples/train_flax.py --mixed-precision bf16 builds
    fm_bf16 = FlaxViTForImageClassification(config, dtype=jax.numpy.bfloat16)
    fopt = optax.adamw(1e-4)

    def flax_loss(params, x, y, model=fm):
        return model(x, labels=y, params=params).loss

    # Our Flax step donates params and optimizer state, so XLA writes the new ones into their buffers, as
    # examples/train_flax.py does; the variant without donation shows what that is worth. Each trains its own copy.
    def flax_update(params, opt_state, x, y, model=fm):
        loss, grads = jax.value_and_grad(flax_loss)(params, x, y, model)
        updates, opt_state = fopt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    xj, yj = jax.numpy.asarray(x), jax.numpy.asarray(y)
    flax_forward, flax_gradients = jax.jit(flax_loss), jax.jit(jax.grad(flax_loss))

    def flax_runner(step: Callable) -> Callable[[], None]:
        params = jax.tree.map(jax.numpy.copy, fm.params)
        state = {"params": params, "opt": fopt.init(params)}

        def run():
            state["params"], state["opt"], loss = step(state["params"], state["opt"], xj, yj)
            loss.block_until_ready()

        return run

    run_flax = flax_runner(jax.jit(flax_update, donate_argnums=(0, 1)))
    variants["Flax jit (ours)"] = run_flax
    variants["Flax jit (ours), no buffer donation"] = flax_runner(jax.jit(flax_update))
    variants["Flax jit (ours), bf16 compute"] = flax_runner(jax.jit(functools.partial(flax_update, model=fm_bf16),
                                                                   donate_argnums=(0, 1)))

    def flax_apply(params, opt_state, grads):
        updates, opt_state = fopt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    flax_apply_jit = jax.jit(flax_apply, donate_argnums=(0, 1))
    flax_fixed_grads = jax.tree.map(lambda p: jax.numpy.full_like(p, 1e-3), fm.params)
    alone = {"params": jax.tree.map(jax.numpy.copy, fm.params)}
    alone["opt"] = fopt.init(alone["params"])

    def flax_optimizer():
        alone["params"], alone["opt"] = flax_apply_jit(alone["params"], alone["opt"], flax_fixed_grads)
        jax.block_until_ready(alone["params"])

    phases["Flax jit (ours)"] = {"forward": lambda: flax_forward(fm.params, xj, yj).block_until_ready(),
                                 "forward+backward": lambda: jax.block_until_ready(flax_gradients(fm.params, xj, yj)),
                                 "optimizer": flax_optimizer, "step": run_flax}
    steps = timed_rounds(variants, 8, rounds)
    flat = {f"{name} | {phase}": run for name, runs in phases.items() for phase, run in runs.items()}
    rates = timed_rounds(flat, 8, rounds)
    milliseconds = {name: {phase: 8000 / rates[f"{name} | {phase}"] for phase in runs} for name, runs in phases.items()}
    return steps, milliseconds


ATTENTION_MATMUL = (48, 197, 64)  # ViT-S/16 at batch 8: (images x heads, tokens, head size)


def attention_matmul_rates(rounds: int) -> dict[str, float]:
    """GFLOP/s of attention's batched matmul at ViT-S/16, batch 8: q kᵀ, (48, 197, 64) x (48, 64, 197), the
    shape of attention's two forward and four backward matmuls, in each framework, and JAX's again in a child
    process pinned to one core (where the two rates match, XLA ran it on one core)."""
    import jax
    import tensorflow as tf
    import torch

    batch, tokens, size = ATTENTION_MATMUL
    q, k = (np.random.default_rng(seed).normal(size=ATTENTION_MATMUL).astype(np.float32) for seed in (0, 1))
    qt, kt = torch.from_numpy(q), torch.from_numpy(k)
    tf_mm = tf.function(lambda a, b: tf.matmul(a, b, transpose_b=True), jit_compile=True)
    qtf, ktf = tf.constant(q), tf.constant(k)
    jax_mm = jax.jit(lambda a, b: a @ b.swapaxes(-1, -2))
    qj, kj = jax.numpy.asarray(q), jax.numpy.asarray(k)
    calls = 20  # one call is about 5 ms: time 20 at a time
    with torch.inference_mode():
        rates = timed_rounds({
            "torch (bmm)": lambda: [qt @ kt.transpose(1, 2) for _ in range(calls)],
            "tensorflow (XLA)": lambda: [tf_mm(qtf, ktf).numpy() for _ in range(calls)],
            "jax": lambda: [jax_mm(qj, kj).block_until_ready() for _ in range(calls)],
        }, images=calls, rounds=rounds)
    flops = 2 * batch * tokens * tokens * size
    out = {name: rate * flops / 1e9 for name, rate in rates.items()}
    pinned = subprocess.run([sys.executable, "-c", _PINNED_JAX_ATTENTION_MATMUL, str(rounds)], capture_output=True,
                            text=True, timeout=600)
    if pinned.returncode == 0:
        out["jax, pinned to one core"] = float(pinned.stdout.split()[-1])
    return out


_PINNED_JAX_ATTENTION_MATMUL = f"""
import os, sys, time
os.sched_setaffinity(0, {{0}})
import jax, numpy as np
shape = {ATTENTION_MATMUL}
q, k = (jax.numpy.asarray(np.random.default_rng(s).normal(size=shape).astype(np.float32)) for s in (0, 1))
mm = jax.jit(lambda a, b: a @ b.swapaxes(-1, -2))
mm(q, k).block_until_ready()
best = []
for _ in range(int(sys.argv[1])):
    start = time.perf_counter()
    for _ in range(20):
        mm(q, k).block_until_ready()
    best.append((time.perf_counter() - start) / 20)
print(2 * shape[0] * shape[1] ** 2 * shape[2] / sorted(best)[len(best) // 2] / 1e9)
"""


def pytorch_step_time_by_kind(steps: int = 3) -> dict[str, float]:
    """Where our PyTorch training step (ViT-S/16, batch 8, AdamW) spends its CPU time, by torch.profiler's self
    time: the GEMMs (forward and backward), SDPA attention (forward and backward) and everything else. The GEMMs
    are the same calls HF makes, so their share bounds how much faster than HF a float32 step can be."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from vit import ViTConfig, ViTForImageClassification

    model = ViTForImageClassification(ViTConfig.from_preset("vit-small-patch16-224", num_labels=1000)).train()
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4, fused=True)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(8, 3, 224, 224)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 1000, 8))

    def step():
        optimizer.zero_grad()
        model(x, labels=y).loss.backward()
        optimizer.step()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    kinds = {"GEMM (mm, addmm, bmm)": 0.0, "attention (SDPA forward and backward)": 0.0, "everything else": 0.0}
    for event in prof.key_averages():
        if event.key in ("aten::mm", "aten::addmm", "aten::bmm"):
            kinds["GEMM (mm, addmm, bmm)"] += event.self_cpu_time_total
        elif "scaled_dot_product" in event.key:
            kinds["attention (SDPA forward and backward)"] += event.self_cpu_time_total
        else:
            kinds["everything else"] += event.self_cpu_time_total
    total = sum(kinds.values())
    return {kind: value / total for kind, value in kinds.items()}


# ------------------------------------------------------------------------------------------- processor
def bench_processor(rounds: int, have_hf: bool) -> dict:
    from PIL import Image

    from vit import ViTImageProcessor

    folder = ROOT / "tests" / "fixtures" / "image_processor" / "images"
    photos = [Image.open(p).convert("RGB") for p in sorted(folder.iterdir())]
    for photo in photos:
        photo.load()
    batch = (photos * 8)[:32]
    ours = ViTImageProcessor()
    variants = {"ours": lambda: ours(batch, return_tensors="np")}
    out: dict = {"images": len(batch), "sizes": sorted({p.size for p in photos})}
    if have_hf:
        import transformers

        hf = transformers.ViTImageProcessor()
        variants["HF"] = lambda: hf(batch, return_tensors="np")
        out["max |diff|"] = float(np.max(np.abs(ours(batch, return_tensors="np")["pixel_values"]
                                                - hf(batch, return_tensors="np")["pixel_values"])))
    out["images/s"] = timed_rounds(variants, len(batch), rounds)
    return out


# ------------------------------------------------------------------------------------------ vit embed
def bench_embed(rounds: int, images: int = 96) -> dict:
    """`vit embed`'s local engine against the plain loop a user would write, folder in, embeddings out.

    ViT-S/16 at 224 on JPEG copies of the test photos. Both load the model and the processor, read every file
    and embed it with batches of 32; the engine overlaps decoding with the model and writes Parquet. The ratio
    engine / loop is what the overlap buys.
    """
    import shutil

    import torch
    from PIL import Image

    from vit import ViTConfig, ViTImageProcessor, ViTModel
    from vit.embed import embed_images

    torch.manual_seed(0)
    model_dir, source, out_root = (tempfile.mkdtemp(prefix=f"vit-bench-embed-{n}-") for n in ("model", "src", "out"))
    ViTModel(ViTConfig.from_preset("vit-small-patch16-224"), add_pooling_layer=False).save_pretrained(model_dir)
    ViTImageProcessor().save_pretrained(model_dir)
    photos = sorted((ROOT / "tests" / "fixtures" / "image_processor" / "images").iterdir())
    for i in range(images):
        Image.open(photos[i % len(photos)]).convert("RGB").save(os.path.join(source, f"{i:04d}.jpg"), quality=90)
    paths = sorted(os.path.join(source, n) for n in os.listdir(source))
    batch_size = 32

    def plain_loop() -> None:
        model = ViTModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
        processor = ViTImageProcessor.from_pretrained(model_dir)
        with torch.inference_mode():
            for start in range(0, len(paths), batch_size):
                pixels = processor(paths[start:start + batch_size], return_tensors="pt").pixel_values
                model(pixels).last_hidden_state[:, 0].numpy()

    def engine() -> None:
        embed_images(source, os.path.join(out_root, "out.parquet"), model_dir, batch_size=batch_size,
                     overwrite=True, progress=False)

    try:
        rates = timed_rounds({"vit embed (local engine)": engine, "plain loop": plain_loop}, images, rounds)
    finally:
        for folder in (model_dir, source, out_root):
            shutil.rmtree(folder, ignore_errors=True)
    return {"images": images, "batch": batch_size, "images/s": rates,
            "ratio engine / loop": ratio(rates, "vit embed (local engine)", "plain loop")}


# ------------------------------------------------------------------------------------ load time, memory
LOAD_SNIPPET = """
import os, sys, time, warnings
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
warnings.filterwarnings("ignore")
import numpy as np
framework, who, folder = sys.argv[1:4]
x = np.random.default_rng(0).normal(size=(8, 3, 224, 224)).astype(np.float32)
if framework == "pt":
    import torch
    if who == "ours":
        from vit import ViTForImageClassification as cls
    else:
        from transformers import ViTForImageClassification as cls
    start = time.perf_counter(); model = cls.from_pretrained(folder).eval(); load = time.perf_counter() - start
    with torch.inference_mode(): model(torch.from_numpy(x))
elif framework == "tf":
    if who == "ours":
        from vit import TFViTForImageClassification as cls
    else:
        from transformers import TFViTForImageClassification as cls
    start = time.perf_counter(); model = cls.from_pretrained(folder); load = time.perf_counter() - start
    model(x)
else:
    if who == "ours":
        from vit import FlaxViTForImageClassification as cls
    else:
        from transformers import FlaxViTForImageClassification as cls
    start = time.perf_counter(); model = cls.from_pretrained(folder); load = time.perf_counter() - start
    np.asarray(model(x).logits)
# VmHWM is this process's own peak (ru_maxrss can carry the parent's high-water mark across fork and exec).
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
print(load, peak)
"""


def bench_loading(w: Weights, have_hf: bool, have_hf_tf: bool) -> dict:
    """Checkpoint load time and the process's peak memory after loading ViT-B/16 and one batch-8 forward."""
    out = {}
    for framework, hf_ok in (("pt", have_hf), ("tf", have_hf_tf), ("flax", have_hf)):
        for who in ("ours", "HF") if hf_ok else ("ours",):
            folder = w.folder if who == "ours" else w.hf_folders[framework]
            result = subprocess.run([sys.executable, "-c", LOAD_SNIPPET, framework, who, folder],
                                    capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
            if result.returncode != 0:
                out[f"{framework} {who}"] = {"error": result.stderr.strip().splitlines()[-1][:200]}
                continue
            load, rss = map(float, result.stdout.split()[-2:])
            out[f"{framework} {who}"] = {"load seconds": load, "peak RSS MiB": rss}
    return out


# ----------------------------------------------------------------- peers in their own processes (issue 15)
WORKER = Path(__file__).parent / "peer_worker.py"
HF5_PYTHON = ROOT / ".venv-bench-hf5" / "bin" / "python"  # `make bench` creates it (transformers 5.x + torch 2.13)
# (side, KERAS_BACKEND) of keras-hub's ViTBackbone, each against our model in the same framework family
KERAS_HUB = {"jax": "ours-flax", "tensorflow": "ours-tf"}
PEER_ROUND_SECONDS = 1.0  # a round is at least this long, so one call's jitter does not decide it
# A pause between two sides' rounds: the thread pools of the side that just ran (OpenMP, Eigen, XLA) busy-wait
# a little before they sleep, and would take cores from the next side.
SETTLE_SECONDS = 0.3


class PeerWorker:
    """A model served by benchmarks/peer_worker.py in another interpreter; see its docstring for the protocol."""

    def __init__(self, python: str | Path, side: str, arch: str, folder: str, input_path: str,
                 env: dict[str, str] | None = None, timeout: float = 900.0) -> None:
        self.side, self.name = side, f"{side} ({Path(python).parent.parent.name})"
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [str(python), str(WORKER), side, arch, folder, input_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.stderr, text=True, bufsize=1,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})})
        self.timeout = timeout
        self.ready: dict = {}

    def wait_ready(self) -> None:
        """Loading and compiling are not timed, so every worker of a comparison starts at once and waits here."""
        self.ready = self._answer()

    def _answer(self) -> dict:
        # One line answers each request, so nothing is left in the pipe's buffer that select could not see.
        if not select.select([self.process.stdout], [], [], self.timeout)[0]:
            self.process.kill()
            raise RuntimeError(f"{self.name} gave no answer in {self.timeout:.0f} s")
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=self.timeout)
            self.stderr.seek(0)
            tail = [t for t in self.stderr.read().strip().splitlines() if t.strip()][-1:] or ["no output"]
            raise RuntimeError(f"{self.name} exited ({self.process.returncode}): {tail[0][:300]}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.name}: {answer['error']}")
        return answer

    def ask(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def round(self, calls: int, min_seconds: float = 0.0) -> float:
        return self.ask(op="round", calls=calls, min_seconds=min_seconds)["images/s"]

    def output(self, **variant) -> np.ndarray:
        fd, path = tempfile.mkstemp(suffix=".npy")
        os.close(fd)
        try:
            self.ask(op="output", path=path, **variant)
            return np.load(path)
        finally:
            os.unlink(path)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.stderr.close()


def alternate(workers: dict[str, PeerWorker], rounds: int, calls: int, min_seconds: float) -> dict[str, float]:
    """Round-robin the workers (A B C A B C ...): one side runs at a time; the median images/s of each."""
    samples: dict[str, list[float]] = {name: [] for name in workers}
    for _ in range(rounds):
        for name, worker in workers.items():
            time.sleep(SETTLE_SECONDS)
            samples[name].append(worker.round(calls, min_seconds))
    return {name: statistics.median(values) for name, values in samples.items()}


def start_workers(specs: dict[str, tuple], errors: dict[str, str]) -> dict[str, PeerWorker]:
    """Start each (python, side, arch, folder, input, env) worker; a side that fails is noted, not fatal."""
    started = {name: PeerWorker(*spec) for name, spec in specs.items()}
    workers = {}
    for name, worker in started.items():
        try:
            worker.wait_ready()
            workers[name] = worker
        except Exception as err:
            errors[name] = str(err)[:300]
            worker.close()
    return workers


def compare_groups(groups: dict[str, dict[str, tuple]], references: dict[str, str], rounds: int, calls: int = 1,
                   min_seconds: float = 0.0, memory: bool = False) -> dict[str, dict]:
    """Per group: time its sides alternately, then each side's max |diff| against the group's reference side.

    Every worker of every group starts at once (loading and compiling are not timed; idle workers wait on their
    stdin and take no CPU), then the groups are timed one after the other."""
    errors: dict[str, str] = {}
    flat = {(group, name): spec for group, specs in groups.items() for name, spec in specs.items()}
    started = start_workers({f"{group}\0{name}": spec for (group, name), spec in flat.items()}, errors)
    results: dict[str, dict] = {}
    try:
        for group in groups:
            workers = {key.split("\0", 1)[1]: w for key, w in started.items() if key.split("\0", 1)[0] == group}
            reference = references[group]
            out: dict = {"images/s": alternate(workers, rounds, calls, min_seconds) if workers else {}}
            if reference in workers:
                ref = workers[reference].output()
                out[f"max |diff| vs {reference}"] = {name: float(np.abs(w.output() - ref).max())
                                                     for name, w in workers.items() if name != reference}
                eps_fixed = {name: float(np.abs(w.output(variant="config eps") - ref).max())
                             for name, w in workers.items() if name != reference and w.side == "keras-hub"}
                if eps_fixed:
                    out[f"max |diff| vs {reference} with config.json's layer_norm_eps"] = eps_fixed
            out["versions"] = {name: w.ready["versions"] for name, w in workers.items()}
            if memory:
                out["peak RSS MiB"] = {name: w.ask(op="peak")["peak RSS MiB"] for name, w in workers.items()}
                out["RSS after loading MiB"] = {name: w.ready["peak RSS MiB after loading"] for name, w in workers.items()}
            group_errors = {key.split("\0", 1)[1]: e for key, e in errors.items() if key.split("\0", 1)[0] == group}
            if group_errors:
                out["errors"] = group_errors
            results[group] = out
    finally:
        for worker in started.values():
            worker.close()
    return results


def compare_workers(specs: dict[str, tuple], reference: str, rounds: int, calls: int = 1, min_seconds: float = 0.0,
                    memory: bool = False) -> dict:
    """One group of sides: see compare_groups."""
    return compare_groups({"": specs}, {"": reference}, rounds, calls, min_seconds, memory)[""]


def save_input(folder: str, batch: int, size: int, seed: int = 8) -> str:
    path = os.path.join(folder, f"input-{batch}x{size}.npy")
    np.save(path, np.random.default_rng(seed).normal(size=(batch, 3, size, size)).astype(np.float32))
    return path


def hf5_status(python: Path = HF5_PYTHON) -> str:
    if not Path(python).exists():
        return f"not installed: {python} is missing (make bench creates it)"
    probe = subprocess.run([str(python), "-c", "import transformers, torch; print(transformers.__version__)"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"not importable in {python}: {probe.stderr.strip().splitlines()[-1][:120]}"
    version = probe.stdout.strip()
    return "available" if version.startswith("5.") else f"wrong version {version} in {python} (want 5.x)"


def bench_today_peers(w: Weights, batch: int, rounds: int, have_hf: bool, hf5: Path | None, have_keras_hub: bool) -> dict:
    """Ours against the peers users have today, at 224: HF 5.x PyTorch beside HF 4.57 and ours (logits), and
    keras-hub's ViTBackbone on JAX and on TF beside our Flax and TF models (last_hidden_state: keras-hub has no
    classification head of HF's layout). keras-hub loads the same checkpoint through its own HF converter."""
    inputs = save_input(w.folder, batch, w.config.image_hw[0])
    py = sys.executable
    out: dict = {"batch": batch}
    pytorch = {"ours": (py, "ours-pt", "vit", w.folder, inputs, None)}
    if have_hf:
        pytorch["HF 4.57 SDPA"] = (py, "hf-pt", "vit", w.hf_folders["pt"], inputs, None)
    if hf5 is not None:  # the interpreter of the transformers 5.x venv
        pytorch["HF 5.x SDPA"] = (hf5, "hf-pt", "vit", w.hf_folders["pt"], inputs, None)
    groups, references = ({"pytorch": pytorch}, {"pytorch": "ours"}) if len(pytorch) > 1 else ({}, {})
    if have_keras_hub:
        for backend, ours_side in KERAS_HUB.items():
            ours = f"ours ({ours_side[5:]})"
            groups[f"keras-hub {backend}"] = {
                ours: (py, ours_side, "vit-backbone", w.folder, inputs, None),
                f"keras-hub ViTBackbone ({backend})": (py, "keras-hub", "vit-backbone", w.hf_folders["pt"], inputs,
                                                       {"KERAS_BACKEND": backend})}
            references[f"keras-hub {backend}"] = ours
    out.update(compare_groups(groups, references, rounds, min_seconds=PEER_ROUND_SECONDS))
    return out


def dinov2_weights(folder: str) -> str:
    """A random DINOv2-S/14 (518 checkpoint) written by HF 4.57's own Dinov2Model, so every side reads HF's layout."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4,
                                       image_size=518, patch_size=14)
    transformers.Dinov2Model(config).save_pretrained(folder)
    return folder


def bench_dinov2(rounds: int, have_hf: bool, hf5: Path | None, batch: int = 8, size: int = 224) -> dict:
    """DINOv2-S/14 from a 518 checkpoint at 224 (position embeddings resized, as users run it), batch 8."""
    import shutil

    if not have_hf:
        return {"error": "needs HF transformers 4.57 to write the checkpoint"}
    folder = tempfile.mkdtemp(prefix="vit-bench-dinov2-")
    try:
        dinov2_weights(folder)
        inputs = save_input(folder, batch, size)
        py = sys.executable
        specs = {"ours PyTorch": (py, "ours-pt", "dinov2", folder, inputs, None),
                 "HF 4.57 PyTorch SDPA": (py, "hf-pt", "dinov2", folder, inputs, None)}
        if hf5 is not None:
            specs["HF 5.x PyTorch SDPA"] = (hf5, "hf-pt", "dinov2", folder, inputs, None)
        specs["ours TF XLA"] = (py, "ours-tf", "dinov2", folder, inputs, None)
        specs["ours Flax jit"] = (py, "ours-flax", "dinov2", folder, inputs, None)
        specs["HF 4.57 Flax jit"] = (py, "hf-flax", "dinov2", folder, inputs, None)
        out = compare_workers(specs, "ours PyTorch", rounds, min_seconds=PEER_ROUND_SECONDS)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"model": "DINOv2-S/14, 518 checkpoint", "image size": size, "batch": batch, **out}


# The resolution sweep: (patch, image size, batch). 518 is DINOv2's size, a multiple of 14 and not of 16: the
# patch-14 point has 1,370 tokens. Batches shrink as the cost grows so that the sweep fits the full run; ViT-B at
# 518 runs one image (its GEMMs still have 1,370 rows), which alone keeps it near 3 minutes on 2 cores.
SWEEP_MODELS = {"S": "small", "B": "base"}
SWEEP_POINTS = [(16, 224, 4), (16, 384, 2), (14, 518, 2)]
SWEEP_BATCH_OVERRIDES = {("B", 518): 1}
SWEEP_SIDES = {"pytorch": ("ours-pt", "hf-pt", "pt"), "tensorflow": ("ours-tf", "hf-tf", "tf"),
               "flax": ("ours-flax", "hf-flax", "flax")}
ATTENTION = {  # what each side's attention does at long sequences (read from the code, reported beside the numbers)
    "pytorch ours": "F.scaled_dot_product_attention (fused flash-style CPU kernel, no N×N matrix kept)",
    "pytorch HF 4.57": "SDPA (same kernel)",
    "tensorflow ours": "explicit softmax(QKᵀ); from 384 tokens one (image, head) at a time, so one N×N score matrix "
                       "at a time stays in cache",
    "tensorflow HF 4.57": "explicit softmax(QKᵀ) under XLA: materialised",
    "flax ours": "explicit softmax(QKᵀ) under jit; from 384 tokens one (image, head) at a time (XLA CPU has no fused "
                 "attention kernel)",
    "flax HF 4.57": "explicit softmax(QKᵀ) under jit: materialised",
}


def bench_sweep(rounds: int, have_hf: bool, have_hf_tf: bool, models: list[str], sizes: list[int]) -> dict:
    """img/s, MFU inputs (GFLOPs per image) and peak memory as the resolution grows, ours beside HF 4.57, in every
    framework. Each (framework, side, size) is its own process, so its VmHWM is that size's peak."""
    import shutil

    out: dict = {"attention": ATTENTION, "points": {}}
    for model in models:
        for patch, size, batch in SWEEP_POINTS:
            if size not in sizes:
                continue
            batch = SWEEP_BATCH_OVERRIDES.get((model, size), batch)
            w = Weights(f"vit-{SWEEP_MODELS[model]}-patch{patch}-224", image_size=size)
            try:
                inputs = save_input(w.folder, batch, size)
                tokens = w.config.num_patches + w.config.num_prefix_tokens
                heads = w.config.num_attention_heads
                cell: dict = {"model": f"ViT-{model}/{patch}", "image size": size, "batch": batch, "tokens": tokens,
                              "GFLOPs per image": vit_flops(w.config) / 1e9,
                              "attention scores MiB per layer (if materialised)": batch * heads * tokens**2 * 4 / 2**20}
                print(f"sweep ViT-{model}/{patch} at {size} ...", flush=True)
                groups = {}
                for framework, (ours_side, hf_side, fmt) in SWEEP_SIDES.items():
                    groups[framework] = {"ours": (sys.executable, ours_side, "vit", w.folder, inputs, None)}
                    if have_hf and (framework != "tensorflow" or have_hf_tf):
                        groups[framework]["HF 4.57"] = (sys.executable, hf_side, "vit", w.hf_folders[fmt], inputs, None)
                cell.update(compare_groups(groups, dict.fromkeys(groups, "ours"), rounds, calls=1, memory=True))
                out["points"][f"ViT-{model}/{patch} {size}"] = cell
            finally:
                shutil.rmtree(w.folder, ignore_errors=True)
    return out


NEW_SECTIONS = ("peers", "dinov2", "sweep")
OTHER_PARTS = ("training", "low-precision")  # more parts --only can run
NEW_SECTION_ROUNDS = 3  # each side's round is one call or PEER_ROUND_SECONDS; 3 keeps the sweep near 8 minutes
PEERS_KEY, DINOV2_KEY, SWEEP_KEY = ("today's peers (224, batch 8)", "DINOv2-S/14 at 224 (batch 8)",
                                    "cost as inputs grow")


def today_peer_status(hf5_python: Path) -> dict[str, str]:
    keras_hub = "available" if importlib.util.find_spec("keras_hub") is not None else \
        "not installed: pip install -e '.[bench]'"
    return {"transformers 5.x": hf5_status(hf5_python), "keras_hub": keras_hub}


def run_new_sections(results: dict, sections: list[str], peers: dict, hf5_python: Path, peer_models: list[str],
                     sweep_models: list[str], sweep_sizes: list[int]) -> None:
    """Issue 15's peers and sweep and issue 12's DINOv2 entry, each in worker processes; a section that fails
    records its error and the run goes on."""
    have_hf = peers["transformers"] == "available"
    have_hf_tf = have_hf and peers["tf_keras"] == "available"
    hf5 = hf5_python if peers["transformers 5.x"] == "available" else None
    have_keras_hub = peers["keras_hub"] == "available"
    jobs = {
        "peers": (PEERS_KEY, lambda: {label: today_peers_for(preset, NEW_SECTION_ROUNDS, have_hf, hf5, have_keras_hub)
                                      for label, preset in MODELS.items() if label in peer_models}),
        "dinov2": (DINOV2_KEY, lambda: bench_dinov2(NEW_SECTION_ROUNDS, have_hf, hf5)),
        "sweep": (SWEEP_KEY, lambda: bench_sweep(NEW_SECTION_ROUNDS, have_hf, have_hf_tf, sweep_models, sweep_sizes)),
    }
    for name in sections:
        key, job = jobs[name]
        print(f"{key} ...", flush=True)
        start = time.perf_counter()
        try:
            results[key] = job()
        except Exception as err:
            results[key] = {"error": f"{type(err).__name__}: {err}"[:400]}
        results[key]["seconds"] = time.perf_counter() - start


def today_peers_for(preset: str, rounds: int, have_hf: bool, hf5: Path | None, have_keras_hub: bool) -> dict:
    import shutil

    w = Weights(preset)
    try:
        return bench_today_peers(w, 8, rounds, have_hf, hf5, have_keras_hub)
    finally:
        shutil.rmtree(w.folder, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ main
def bench_low_precision(w: Weights, rounds: int) -> dict:
    """bf16 and int8 against fp32 at batch 8, per framework, alternating in one process (issue 15).

    First the hardware ceiling: a ViT MLP-sized matmul in fp32, bf16 and int8 in each framework, and the CPU's
    low-precision instruction sets; then the whole model. Ratios are low precision / fp32 of the same framework.
    """
    import copy

    import jax
    import jax.numpy as jnp
    import tensorflow as tf
    import torch

    from vit import FlaxViTForImageClassification, TFViTForImageClassification, ViTForImageClassification
    from vit.cpu import cpu_flags
    from vit.flax.quantize import quantize as quantize_flax
    from vit.pt.quantize import quantize
    from vit.tf.quantize import quantize as quantize_tf

    flags = cpu_flags()
    out: dict = {"cpu low-precision instructions": {isa: isa in flags for isa in (
        "avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")},
        "torch CPU capability": torch.backends.cpu.get_cpu_capability()}

    # The ceiling: (tokens of batch 8) x hidden @ hidden x MLP width.
    m, k, n = 8 * (w.config.num_patches + 1), w.config.hidden_size, w.config.intermediate_size
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(m, k)).astype(np.float32), rng.normal(size=(k, n)).astype(np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    linear = torch.nn.Linear(k, n).eval()
    int8_linear = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(copy.deepcopy(linear)), {torch.nn.Linear})
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    ia, ib = jnp.asarray(rng.integers(-127, 128, (m, k)), jnp.int8), jnp.asarray(rng.integers(-127, 128, (k, n)), jnp.int8)
    jax_mm = jax.jit(lambda x, y: x @ y)
    # The form the models use in bf16 (vit.flax.modeling.dot, vit.tf.modeling._matmul32 under XLA): bf16 operands, a
    # float32 result. A bf16 result ("jax bf16", "tf bf16 XLA") is widened by XLA CPU and runs at the float32 rate.
    jax_mm32 = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    ja16, jb16 = ja.astype(jnp.bfloat16), jb.astype(jnp.bfloat16)
    jax_int8 = jax.jit(lambda x, y: jax.lax.dot_general(x, y, (((1,), (0,)), ((), ())), preferred_element_type=jnp.int32))
    tfa, tfb = tf.constant(a), tf.constant(b)
    tf_graph = tf.function(lambda x, y: tf.matmul(x, y))
    tf_xla = tf.function(lambda x, y: tf.matmul(x, y), jit_compile=True)
    tfa16, tfb16 = tf.cast(tfa, tf.bfloat16), tf.cast(tfb, tf.bfloat16)
    tf_xla32 = tf.function(lambda x, y: tf.raw_ops.BatchMatMulV3(x=x, y=y, Tout=tf.float32), jit_compile=True)
    tfi8a, tfi8b = tf.constant(np.asarray(ia)), tf.constant(np.asarray(ib))
    tf_int8 = tf.function(lambda x, y: tf.linalg.matmul(x, y, output_type=tf.int32), jit_compile=True)
    with torch.inference_mode():
        rates = timed_rounds({
            "torch fp32": lambda: linear(ta), "torch bf16": lambda: torch.matmul(ta.bfloat16(), tb.bfloat16()),
            "torch int8 (fbgemm dynamic)": lambda: int8_linear(ta),
            "jax fp32": lambda: jax_mm(ja, jb).block_until_ready(),
            "jax bf16": lambda: jax_mm(ja.astype(jnp.bfloat16), jb.astype(jnp.bfloat16)).block_until_ready(),
            "jax bf16 -> f32": lambda: jax_mm32(ja16, jb16).block_until_ready(),
            "jax int8 (dot_general -> int32)": lambda: jax_int8(ia, ib).block_until_ready(),
            "tf fp32 graph (oneDNN)": lambda: tf_graph(tfa, tfb).numpy(),
            "tf bf16 graph (oneDNN)": lambda: tf_graph(tfa16, tfb16).numpy(),
            "tf fp32 XLA": lambda: tf_xla(tfa, tfb).numpy(), "tf bf16 XLA": lambda: tf_xla(tfa16, tfb16).numpy(),
            "tf bf16 -> f32 XLA": lambda: tf_xla32(tfa16, tfb16).numpy(),
            "tf int8 XLA (-> int32)": lambda: tf_int8(tfi8a, tfi8b).numpy(),
        }, images=1, rounds=rounds, min_seconds=0.2)
    out[f"matmul GFLOP/s ({m}x{k} @ {k}x{n})"] = {name: rate * 2 * m * k * n / 1e9 for name, rate in rates.items()}

    x = np.random.default_rng(8).normal(size=(8, 3, 224, 224)).astype(np.float32)
    pt32 = ViTForImageClassification.from_pretrained(w.folder).eval()
    pt16 = ViTForImageClassification.from_pretrained(w.folder, dtype=torch.bfloat16).eval()
    pt8 = quantize(pt32, "dynamic")
    tx = torch.from_numpy(x)
    pt32_fast, pt16_fast = pt32.optimize_for_inference(), pt16.optimize_for_inference()
    variants = {"pytorch fp32": lambda: pt32(tx), "pytorch bf16": lambda: pt16(tx),
                "pytorch fp32 optimize_for_inference": lambda: pt32_fast(tx),
                "pytorch bf16 optimize_for_inference": lambda: pt16_fast(tx),
                "pytorch int8 dynamic": lambda: pt8(tx)}
    # torch.compile (inductor) of the pt2e graph: 1-3 minutes on a 2-core machine
    calibration = [torch.from_numpy(np.random.default_rng(i).normal(size=(8, 3, 224, 224)).astype(np.float32))
                   for i in range(2)]
    pt8s = quantize(pt32, "static", calibration=calibration)
    variants["pytorch int8 static (pt2e, compiled)"] = lambda: pt8s(tx)
    pt8d = quantize(pt32, "dynamic", flow="pt2e")
    variants["pytorch int8 dynamic (pt2e, compiled)"] = lambda: pt8d(tx)
    fx32 = FlaxViTForImageClassification.from_pretrained(w.folder)
    fx16 = FlaxViTForImageClassification.from_pretrained(w.folder, dtype="bfloat16")
    jx = jnp.asarray(x)
    variants["flax fp32"] = lambda: fx32(jx).logits.block_until_ready()
    variants["flax bf16"] = lambda: fx16(jx).logits.block_until_ready()
    fx8 = quantize_flax(fx32, "dynamic")
    variants["flax int8 dynamic"] = lambda: fx8(jx).logits.block_until_ready()
    fx8_bf16 = quantize_flax(fx32, "dynamic", attention_dtype=jnp.bfloat16)
    variants["flax int8 dynamic, bf16 attention"] = lambda: fx8_bf16(jx).logits.block_until_ready()
    tf32 = TFViTForImageClassification.from_pretrained(w.folder)
    tf16 = TFViTForImageClassification.from_pretrained(w.folder, dtype="bfloat16")
    tf32_xla = tf.function(lambda v: tf32(v).logits, jit_compile=True)
    tf16_xla = tf.function(lambda v: tf16(v).logits, jit_compile=True)
    tf16_graph = tf.function(lambda v: tf16(v).logits)
    tf32_graph = tf.function(lambda v: tf32(v).logits)
    tf8, tf8_bf16 = quantize_tf(tf32, "dynamic"), quantize_tf(tf32, "dynamic", attention_dtype=tf.bfloat16)
    tf8_xla = tf.function(lambda v: tf8(v).logits, jit_compile=True)
    tf8_bf16_xla = tf.function(lambda v: tf8_bf16(v).logits, jit_compile=True)
    tfx = tf.constant(x)
    variants.update({"tensorflow fp32 XLA": lambda: tf32_xla(tfx).numpy(), "tensorflow bf16 XLA": lambda: tf16_xla(tfx).numpy(),
                     "tensorflow fp32 graph": lambda: tf32_graph(tfx).numpy(),
                     "tensorflow bf16 graph": lambda: tf16_graph(tfx).numpy(),
                     "tensorflow int8 dynamic XLA": lambda: tf8_xla(tfx).numpy(),
                     "tensorflow int8 dynamic XLA, bf16 attention": lambda: tf8_bf16_xla(tfx).numpy()})
    if importlib.util.find_spec("ai_edge_litert") is not None:  # TensorFlow's int8 path: `vit export tflite`
        variants.update(litert_variants(w, x))
    with torch.inference_mode():
        model_rates = timed_rounds(variants, 8, rounds)
    out["images/s (batch 8)"] = model_rates
    out["ratios"] = {
        f"{name} / {base}": model_rates[name] / model_rates[base] for name, base in (
            ("pytorch bf16", "pytorch fp32"), ("pytorch int8 dynamic", "pytorch fp32"),
            ("flax int8 dynamic", "flax fp32"), ("flax int8 dynamic, bf16 attention", "flax fp32"),
            ("pytorch bf16 optimize_for_inference", "pytorch fp32"),
            ("pytorch bf16 optimize_for_inference", "pytorch fp32 optimize_for_inference"),
            ("pytorch int8 static (pt2e, compiled)", "pytorch fp32"),
            ("pytorch int8 dynamic (pt2e, compiled)", "pytorch fp32"), ("flax bf16", "flax fp32"),
            ("tensorflow bf16 XLA", "tensorflow fp32 XLA"), ("tensorflow bf16 graph", "tensorflow fp32 graph"),
            ("pytorch int8 dynamic", "pytorch fp32 optimize_for_inference"),
            ("pytorch int8 static (pt2e, compiled)", "pytorch fp32 optimize_for_inference"),
            ("tensorflow int8 dynamic XLA", "tensorflow fp32 XLA"),
            ("tensorflow int8 dynamic XLA, bf16 attention", "tensorflow fp32 XLA"),
            ("tensorflow int8 LiteRT (dynamic range)", "tensorflow fp32 XLA"),
            ("tensorflow int8 LiteRT (dynamic range)", "tensorflow fp32 LiteRT"))
        if name in model_rates and base in model_rates}
    return out


def litert_variants(w: Weights, x: np.ndarray) -> dict[str, Callable[[], None]]:
    """`vit export tflite` in fp32 and int8 (the converter's dynamic-range quantisation: int8 weights, activations
    quantised at run time), run by the standalone LiteRT interpreter on the machine's cores."""
    from ai_edge_litert.interpreter import Interpreter

    from vit.export import export_tflite

    variants = {}
    for quantize, name in ((None, "tensorflow fp32 LiteRT"), ("int8", "tensorflow int8 LiteRT (dynamic range)")):
        path = os.path.join(w.folder, f"model-{quantize or 'fp32'}.tflite")
        export_tflite(w.folder, path, quantize=quantize)
        runner = Interpreter(model_path=path, num_threads=os.cpu_count()).get_signature_runner("serving_default")
        variants[name] = lambda runner=runner: runner(pixel_values=x)
    return variants


def bench_inference(w: Weights, label: str, batches: list[int], rounds: int, quick: bool, have_hf: bool,
                    have_hf_tf: bool, results: dict) -> dict:
    """One model's inference entry: each framework against HF, onnxruntime, and (ViT-B) loading."""
    entry = {"GFLOPs per image": vit_flops(w.config) / 1e9}
    print(f"{label}: PyTorch ...", flush=True)
    entry["pytorch"] = bench_pytorch(w, batches, rounds, have_hf)
    gc.collect()
    print(f"{label}: TensorFlow ...", flush=True)
    entry["tensorflow"] = bench_tensorflow(w, batches, rounds, have_hf_tf, eager=not quick)
    gc.collect()
    print(f"{label}: Flax ...", flush=True)
    entry["flax"] = bench_flax(w, batches, rounds, have_hf)
    gc.collect()
    if not quick and importlib.util.find_spec("onnxruntime") is not None:  # the export extra
        print(f"{label}: onnxruntime (vit export onnx) ...", flush=True)
        entry["onnxruntime"] = bench_onnxruntime(w, [b for b in batches if b in (1, 8)], rounds)
        gc.collect()
    if label == "B/16" and not quick:
        print("B/16: load time and memory ...", flush=True)
        results["loading (ViT-B/16)"] = bench_loading(w, have_hf, have_hf_tf)
    return entry


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="ViT-S/16 at batch 8 only, about a minute")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--no-sweep", action="store_true", help="skip the cost-vs-resolution sweep (about 10 minutes)")
    parser.add_argument("--only", type=lambda v: v.split(","), default=None, metavar="peers,dinov2,sweep,training,low-precision",
                        help=f"run only these parts: {', '.join((*NEW_SECTIONS, *OTHER_PARTS))} (writes <date>-partial-<parts>.json)")
    parser.add_argument("--peer-models", type=lambda v: v.split(","), default=list(MODELS), metavar="S/16,B/16",
                        help="the models of the today's-peers section")
    parser.add_argument("--sweep-models", type=lambda v: v.split(","), default=list(SWEEP_MODELS), metavar="S,B")
    parser.add_argument("--sweep-sizes", type=lambda v: [int(s) for s in v.split(",")],
                        default=[size for _, size, _ in SWEEP_POINTS], metavar="224,384,518")
    parser.add_argument("--hf5-python", type=Path, default=HF5_PYTHON,
                        help="the interpreter of the HF transformers 5.x venv (make bench creates it)")
    args = parser.parse_args(argv)
    if args.only is not None and not set(args.only) <= {*NEW_SECTIONS, *OTHER_PARTS}:
        parser.error(f"--only takes some of {', '.join((*NEW_SECTIONS, *OTHER_PARTS))}, got {','.join(args.only)}")
    started = time.perf_counter()
    peers = peer_status()
    peers.update(today_peer_status(args.hf5_python))
    have_hf = peers["transformers"] == "available"
    have_hf_tf = have_hf and peers["tf_keras"] == "available"
    rounds = 3 if args.quick else 4
    models = {"S/16": MODELS["S/16"]} if args.quick else MODELS
    batches = [8] if args.quick else [1, 8]

    results: dict = {"date": datetime.date.today().isoformat(), "quick": args.quick, "machine": machine(), "peers": peers,
                     "method": "same weights and input; variants alternate A B A B; median of rounds; images/s"}
    print("matmul peak ...", flush=True)
    results["matmul GFLOP/s (2048x2048 fp32)"] = matmul_peaks(rounds=rounds)
    results["inference"] = {}
    if args.only is not None:
        results["partial"] = args.only
        models = MODELS if "low-precision" in args.only else {}
    for label, preset in models.items():
        w = Weights(preset)
        if args.only is None:
            results["inference"][label] = bench_inference(w, label, batches, rounds, args.quick, have_hf, have_hf_tf,
                                                          results)
        if not args.quick:
            print(f"{label}: bf16 and int8 ...", flush=True)
            results.setdefault("low precision (batch 8)", {})[label] = bench_low_precision(w, rounds)
            gc.collect()
    if args.only is None:
        print("image processor ...", flush=True)
        results["image processor (to 224)"] = bench_processor(rounds, have_hf)
        print("vit embed pipeline ...", flush=True)
        results["vit embed (ViT-S/16, 224)"] = bench_embed(rounds)
    if not args.quick and (args.only is None or "training" in args.only):
        print("training step ...", flush=True)
        from report import ATTENTION_MATMUL_KEY, TRAINING_GFLOPS_KEY, TRAINING_PHASES_KEY, TRAINING_SHARES_KEY

        results["training step (ViT-S/16, batch 8)"], results[TRAINING_PHASES_KEY] = bench_training(rounds, have_hf)
        results[ATTENTION_MATMUL_KEY] = attention_matmul_rates(rounds)

        from vit import ViTConfig

        results[TRAINING_SHARES_KEY] = pytorch_step_time_by_kind()
        results[TRAINING_GFLOPS_KEY] = vit_flops(ViTConfig.from_preset("vit-small-patch16-224", num_labels=1000)) / 1e9
    if not args.quick:
        if args.only is not None:
            sections = [name for name in args.only if name in NEW_SECTIONS]
        else:
            sections = [name for name in NEW_SECTIONS if not (name == "sweep" and args.no_sweep)]
        run_new_sections(results, sections, peers, args.hf5_python, args.peer_models, args.sweep_models, args.sweep_sizes)
    results["seconds"] = time.perf_counter() - started
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else f"-partial-{'-'.join(args.only)}" if args.only is not None else ""
    path = out_dir / f"{results['date']}{suffix}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path} in {results['seconds']:.0f} s")
    print(comparison(results))
    return path


def comparison(results: dict) -> str:
    """The side-by-side summary; without HF transformers there is no peer to compare with, so say what is missing
    (and how to get it) instead of printing an empty table."""
    from report import mfu_rows, summarise

    status = results.get("peers", {}).get("transformers", "not checked")
    if status == "available":
        return summarise(results)
    return "\n".join([
        f"No comparison with HF transformers, which is {status}. The benchmark measures vit against HF side by "
        "side; install the peers with pip install -e '.[bench]' (transformers==4.57.6 and tf-keras) and run it "
        "again. vit alone on this machine:",
        "",
        *mfu_rows(results),
    ])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
