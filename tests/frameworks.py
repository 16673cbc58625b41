"""One adapter per framework, so a test is written once and parametrized over pt, tf and flax."""

from __future__ import annotations

from typing import Any

import numpy as np

FRAMEWORKS = ("pt", "tf", "flax")
PREFIX = {"pt": "", "tf": "TF", "flax": "Flax"}
CLASS_NAMES = {"base": "ViTModel", "classification": "ViTForImageClassification", "mim": "ViTForMaskedImageModeling"}


def model_class(framework: str, head: str):
    import vit

    return getattr(vit, PREFIX[framework] + CLASS_NAMES[head])


def to_numpy(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return tuple(to_numpy(v) for v in value)
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def to_framework(framework: str, array: Any) -> Any:
    if array is None:
        return None
    array = np.asarray(array)
    if framework == "pt":
        import torch

        return torch.from_numpy(array.copy())
    if framework == "tf":
        import tensorflow as tf

        return tf.constant(array)
    import jax.numpy as jnp

    return jnp.asarray(array)


def run(framework: str, model, pixel_values, **kwargs) -> dict[str, Any]:
    """Call the model on NumPy inputs and return its output fields as NumPy (tuples for per-layer values)."""
    inputs = {k: to_framework(framework, v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    pixels = to_framework(framework, pixel_values)
    if framework == "pt":
        import torch

        with torch.no_grad():
            out = model(pixels, **inputs)
    else:
        out = model(pixels, **inputs)
    if isinstance(out, tuple):
        return {"tuple": to_numpy(out)}
    return {k: to_numpy(v) for k, v in out.items()}


def canonical_state(model) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in model.canonical_state_dict().items()}


def build(framework: str, head: str, config, **kwargs):
    """A model from a config; eval mode in PyTorch."""
    model = model_class(framework, head)(config, **kwargs)
    return model.eval() if framework == "pt" else model


def load(framework: str, head: str, path, **kwargs):
    model = model_class(framework, head).from_pretrained(path, **kwargs)
    return model.eval() if framework == "pt" else model


def loss_and_grads(framework: str, model, pixel_values: np.ndarray, **inputs: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    """The loss (from labels or bool_masked_pos) and its gradient w.r.t. every parameter, canonical names and layout."""
    from vit.params import from_layout, state_from_layout

    if framework == "pt":
        import torch

        model.zero_grad()
        out = model(torch.from_numpy(pixel_values), **{k: torch.from_numpy(v) for k, v in inputs.items()})
        out.loss.backward()
        return float(out.loss.detach()), {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}
    if framework == "tf":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = model(pixel_values, **inputs, training=False).loss
        variables = model.trainable_variables
        grads = tape.gradient(loss, variables)
        names, specs = model.canonical_name_of(), model.parameter_specs()
        out = {}
        for var, grad in zip(variables, grads, strict=True):
            if id(var) in names and grad is not None:
                spec = specs[names[id(var)]]
                out[spec.name] = from_layout(np.asarray(tf.convert_to_tensor(grad)), spec.kind, spec.leaf, "tf")
        return float(loss), out
    import jax

    from vit.params import flatten

    def loss_fn(params):
        return model(pixel_values, **inputs, params=params).loss

    loss, grads = jax.value_and_grad(loss_fn)(model.params)
    state, unknown = state_from_layout({k: np.asarray(v) for k, v in flatten(grads).items()}, model.config, "flax")
    assert not unknown, unknown
    return float(loss), state
