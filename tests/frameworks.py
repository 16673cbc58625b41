"""One adapter per framework, so a test is written once and parametrized over pt, tf and flax."""

from __future__ import annotations

from typing import Any

import numpy as np

FRAMEWORKS = ("pt", "tf", "flax")
PREFIX = {"pt": "", "tf": "TF", "flax": "Flax"}
CLASS_NAMES = {"base": "ViTModel", "classification": "ViTForImageClassification", "mim": "ViTForMaskedImageModeling",
               "projection": "ViTWithProjection", "distilled": "ViTForImageClassificationWithTeacher"}


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


def sum_of_squares(fields: tuple[str, ...]):
    """An objective for `loss_and_grads`: the sum of squares of every listed output the model returns, so every
    parameter that reaches an output gets a gradient (for heads without labels)."""

    def objective(framework: str, out):
        total = 0.0
        for name in fields:
            value = getattr(out, name, None)
            if value is not None:
                total = total + (__import__("tensorflow").reduce_sum(value**2) if framework == "tf" else (value**2).sum())
        return total

    return objective


def loss_and_grads(framework: str, model, pixel_values: np.ndarray, objective=None, training: bool = False,
                   **inputs: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    """A scalar and its gradient w.r.t. every parameter, canonical names and layout. The scalar is the model's
    loss (from labels or bool_masked_pos), or `objective(framework, outputs)`. `training` runs in training mode,
    where gradient checkpointing applies (PyTorch takes the mode from the module)."""
    from vit.params import from_layout, state_from_layout

    def scalar(out):
        return out.loss if objective is None else objective(framework, out)

    if framework == "pt":
        import torch

        model.zero_grad()
        value = scalar(model(torch.from_numpy(pixel_values), **{k: torch.from_numpy(v) for k, v in inputs.items()}))
        value.backward()
        return float(value.detach()), {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}
    if framework == "tf":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = scalar(model(pixel_values, **inputs, training=training))
        variables = model.trainable_variables
        grads = tape.gradient(value, variables)
        names, specs = model.canonical_name_of(), model.parameter_specs()
        out = {}
        for var, grad in zip(variables, grads, strict=True):
            if id(var) in names and grad is not None:
                spec = specs[names[id(var)]]
                out[spec.name] = from_layout(np.asarray(tf.convert_to_tensor(grad)), spec.kind, spec.leaf, "tf")
        return float(value), out
    import jax

    from vit.params import flatten

    value, grads = jax.value_and_grad(lambda p: scalar(model(pixel_values, **inputs, params=p, train=training)))(model.params)
    state, unknown = state_from_layout({k: np.asarray(v) for k, v in flatten(grads).items()}, model.config, "flax")
    assert not unknown, unknown
    return float(value), state
