"""One model in its own process, timed on request: how `make bench` alternates with peers it cannot import.

HF transformers 5.x cannot share a venv with 4.57.6 (the tests' reference), keras-hub needs KERAS_BACKEND fixed
before Keras is imported, and peak memory is only per process. So each such side runs here, in its own
interpreter, and the main process (benchmarks/bench.py) drives it:

    python peer_worker.py SIDE ARCH FOLDER INPUT.npy

SIDE is who runs the model (ours-pt, ours-tf, ours-flax, hf-pt, hf-tf, hf-flax, keras-hub; "hf" is whichever
transformers this interpreter has), ARCH is vit (a ViTForImageClassification checkpoint; logits) or
vit-backbone / dinov2 (the base model; last_hidden_state). FOLDER holds the checkpoint and INPUT.npy the NCHW
float32 batch, so every side runs the same weights on the same input.

Protocol: one JSON object per line. The worker answers on its original stdout and sends everything the libraries
print to stderr, so a stray print cannot break the protocol. First it loads the model, runs it once (compiling
it) and says {"ready": true, "load seconds": .., "peak RSS MiB after loading": .., "versions": {..}}. Then, per request:
    {"op": "round", "calls": N, "min_seconds": S} -> {"images/s": .., "calls": ..}
                                 at least N timed calls and S seconds; nothing else runs meanwhile
    {"op": "output", "path": P}  -> {"path": P}        the output (of the warm-up call), saved as .npy
    {"op": "output", "path": P, "variant": "config eps"}   keras-hub only: with config.json's layer_norm_eps
    {"op": "peak"}               -> {"peak RSS MiB": ..} VmHWM, this process's own high-water mark
    {"op": "quit"}               -> exits
A failure answers {"error": "..."} and the worker exits.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore")

SIDES = ("ours-pt", "ours-tf", "ours-flax", "hf-pt", "hf-tf", "hf-flax", "keras-hub")
ARCHS = ("vit", "vit-backbone", "dinov2")


def peak_rss_mib() -> float:
    """VmHWM: this process's own peak (ru_maxrss can carry the parent's high-water mark across fork and exec)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def _ours_class(prefix: str, arch: str):
    import vit

    name = {"vit": "ViTForImageClassification", "vit-backbone": "ViTModel", "dinov2": "Dinov2Model"}[arch]
    return getattr(vit, prefix + name)


def _hf_class(prefix: str, arch: str):
    import transformers

    name = {"vit": "ViTForImageClassification", "vit-backbone": "ViTModel", "dinov2": "Dinov2Model"}[arch]
    if not hasattr(transformers, prefix + name):
        raise RuntimeError(f"transformers {transformers.__version__} has no {prefix + name}")
    return getattr(transformers, prefix + name)


def _output_field(arch: str) -> str:
    return "logits" if arch == "vit" else "last_hidden_state"


def build(side: str, arch: str, folder: str, x):
    """(run, versions): run() does one forward, waits for it and returns the output (np.asarray reads it)."""
    import numpy as np

    field = _output_field(arch)
    kwargs = {"add_pooling_layer": False} if arch == "vit-backbone" else {}
    if side in ("ours-pt", "hf-pt"):
        import torch

        if side == "ours-pt":
            model = _ours_class("", arch).from_pretrained(folder, **kwargs).eval()
        else:
            model = _hf_class("", arch).from_pretrained(folder, attn_implementation="sdpa", **kwargs).eval()
        xt = torch.from_numpy(x)

        def forward():
            with torch.inference_mode():
                return getattr(model(xt), field)

        return forward, {"torch": torch.__version__}
    if side in ("ours-tf", "hf-tf"):
        import tensorflow as tf

        cls = _ours_class("TF", arch) if side == "ours-tf" else _hf_class("TF", arch)
        model = cls.from_pretrained(folder, **kwargs)
        xla = tf.function(lambda v: getattr(model(v), field), jit_compile=True)
        xtf = tf.constant(x)
        return lambda: xla(xtf).numpy(), {"tensorflow": tf.__version__}
    if side in ("ours-flax", "hf-flax"):
        import jax
        import jax.numpy as jnp

        xj = jnp.asarray(x)
        if side == "ours-flax":  # our Flax models jit their own forward
            model = _ours_class("Flax", arch).from_pretrained(folder, **kwargs)

            def forward():
                return getattr(model(xj), field).block_until_ready()
        else:
            model = _hf_class("Flax", arch).from_pretrained(folder, **kwargs)
            jitted = jax.jit(lambda p, v: getattr(model(v, params=p), field))

            def forward():
                return jitted(model.params, xj).block_until_ready()

        return forward, {"jax": jax.__version__}
    if side == "keras-hub":
        import keras
        import keras_hub

        if arch != "vit-backbone":
            raise ValueError("keras-hub runs the ViT backbone only (arch vit-backbone)")
        backbone = keras_hub.models.ViTBackbone.from_preset(folder)
        # jit_compile=True: XLA under both backends, what a Keras user gets from model.compile(jit_compile=True).
        backbone.compile(jit_compile=True)
        nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # keras-hub's images are channels-last
        run = lambda: backbone.predict_on_batch(nhwc)  # noqa: E731
        return run, {"keras": keras.__version__, "keras_hub": keras_hub.__version__, "backend": keras.backend.backend()}


def config_eps_output(side: str, folder: str, x):
    """keras-hub's HF ViT converter does not read config.json's layer_norm_eps (its backbone keeps 1e-6, HF ViT's
    is 1e-12). The same backbone with the checkpoint's eps, untimed, shows how much of the diff that is."""
    import numpy as np

    if side != "keras-hub":
        raise ValueError("only keras-hub has an output with config.json's layer_norm_eps")
    import keras_hub

    with open(os.path.join(folder, "config.json")) as config:
        eps = json.load(config)["layer_norm_eps"]
    backbone = keras_hub.models.ViTBackbone.from_preset(folder, layer_norm_epsilon=eps)
    return np.asarray(backbone.predict_on_batch(np.ascontiguousarray(x.transpose(0, 2, 3, 1))))
    raise ValueError(f"unknown side {side!r}; one of {', '.join(SIDES)}")


def serve(side: str, arch: str, folder: str, input_path: str) -> int:
    import numpy as np

    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything the libraries print goes to stderr, never into the protocol

    def say(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")

    try:
        if side not in SIDES or arch not in ARCHS:
            raise ValueError(f"usage: peer_worker.py {{{'|'.join(SIDES)}}} {{{'|'.join(ARCHS)}}} FOLDER INPUT.npy")
        x = np.load(input_path)
        start = time.perf_counter()
        run, versions = build(side, arch, folder, x)
        load_seconds = time.perf_counter() - start
        if side.startswith("hf-"):
            import transformers

            versions["transformers"] = transformers.__version__
        after_loading = peak_rss_mib()  # the interpreter, the libraries and the weights, before any forward
        # compile and warm the caches before any timed round; its output is the one "output" sends (same weights,
        # same input), so the max |diff| costs no extra forward
        first_output = np.asarray(run())
        say({"ready": True, "load seconds": load_seconds, "peak RSS MiB after loading": after_loading,
             "versions": versions})
        for line in sys.stdin:
            request = json.loads(line)
            op = request.get("op")
            if op == "round":
                calls, start = 0, time.perf_counter()
                while calls < int(request.get("calls", 1)) or time.perf_counter() - start < request.get("min_seconds", 0):
                    run()
                    calls += 1
                say({"images/s": x.shape[0] * calls / (time.perf_counter() - start), "calls": calls})
            elif op == "output":
                variant = request.get("variant")
                if variant not in (None, "config eps"):
                    raise ValueError(f"unknown output variant {variant!r}")
                np.save(request["path"], first_output if variant is None else config_eps_output(side, folder, x))
                say({"path": request["path"]})
            elif op == "peak":
                say({"peak RSS MiB": peak_rss_mib()})
            elif op == "quit":
                return 0
            else:
                raise ValueError(f"unknown op {op!r}")
    except Exception as err:  # the main process reports it and goes on without this side
        say({"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]})
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(serve(*sys.argv[1:]))
