"""Property tests: the processor, the config and the name mapping under random input."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vit import ConfigError, ImageError, ViTConfig, ViTImageProcessor
from vit.checkpoint import init_state
from vit.convert import from_jax, from_timm, to_jax, to_timm
from vit.params import HEADS, layout_name, parameter_specs, state_from_layout, state_to_layout

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F"]


@FAST
@given(h=st.integers(1, 70), w=st.integers(1, 70), mode=st.sampled_from(MODES), size=st.integers(1, 40),
       seed=st.integers(0, 2**16))
def test_processor_on_random_pil_images(h, w, mode, size, seed):
    array = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    image = Image.fromarray(array, "RGB").convert(mode)
    out = ViTImageProcessor(size=size)(image).pixel_values
    assert out.shape == (1, 3, size, size) and out.dtype == np.float32 and np.isfinite(out).all()
    assert out.min() >= -1.0 - 1e-6 and out.max() <= 1.0 + 1e-6


@FAST
@given(shape=st.lists(st.integers(0, 9), min_size=1, max_size=5),
       dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.float16, np.float32, np.float64, np.bool_]),
       channels_first=st.booleans(), seed=st.integers(0, 2**16))
def test_processor_on_random_arrays_gives_an_image_or_a_clear_error(shape, dtype, channels_first, seed):
    array = (np.random.default_rng(seed).random(shape) * 255).astype(dtype)
    try:
        out = ViTImageProcessor(size=8)(array, input_data_format="channels_first" if channels_first else None).pixel_values
    except ImageError:
        return
    except Exception as err:  # noqa: BLE001 - the assertion below names the unexpected error
        raise AssertionError(f"{type(err).__name__} instead of ImageError for {shape} {np.dtype(dtype)}: {err}") from err
    assert out.shape[1:] == (3, 8, 8) and np.isfinite(out).all()


@FAST
@given(fields=st.fixed_dictionaries({}, optional={
    "hidden_size": st.one_of(st.integers(-4, 96), st.text(max_size=3), st.none()),
    "num_attention_heads": st.integers(-1, 8),
    "image_size": st.one_of(st.integers(-8, 64), st.lists(st.integers(-8, 64), max_size=3)),
    "patch_size": st.one_of(st.integers(-2, 16), st.lists(st.integers(0, 16), max_size=3)),
    "layer_norm_eps": st.one_of(st.floats(allow_nan=True), st.integers(-1, 1)),
    "hidden_act": st.sampled_from(["gelu", "relu", "swiglu", ""]),
    "pooling": st.sampled_from(["cls", "mean", "gap", "max"]),
    "num_labels": st.integers(-2, 5),
}))
def test_config_is_valid_or_names_a_field(fields):
    try:
        config = ViTConfig(**fields)
    except ConfigError as err:
        # The message names a field that was given (not just any text: "must" alone would pass every message).
        assert any(name in str(err) for name in fields), f"{err} names none of {sorted(fields)}"
        return
    assert config.hidden_size % config.num_attention_heads == 0
    assert ViTConfig.from_dict(config.to_dict()) == config


@st.composite
def configs(draw):
    heads = draw(st.integers(1, 3))
    ph, pw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    square = draw(st.booleans())
    pooling = draw(st.sampled_from(["cls", "mean"]))
    return ViTConfig(
        hidden_size=heads * draw(st.integers(1, 3)), num_attention_heads=heads,
        num_hidden_layers=draw(st.integers(1, 2)), intermediate_size=draw(st.integers(1, 6)),
        image_size=ph * 3 if square and ph == pw else [ph * draw(st.integers(1, 3)), pw * draw(st.integers(2, 4))],
        patch_size=ph if square and ph == pw else [ph, pw], encoder_stride=ph if square and ph == pw else [ph, pw],
        num_channels=draw(st.sampled_from([1, 3])), qkv_bias=draw(st.booleans()), pooling=pooling,
        use_fc_norm=pooling == "mean" and draw(st.booleans()), class_token=pooling == "mean" and draw(st.booleans()) or pooling == "cls",
        num_labels=draw(st.integers(1, 4)),
    )


@FAST
@given(config=configs(), head=st.sampled_from(HEADS), layout=st.sampled_from(["tf", "flax"]))
def test_name_mapping_round_trips(config, head, layout):
    specs = parameter_specs(config, head)
    state = init_state(config, specs, seed=0)
    names = [layout_name(s, layout) for s in specs.values()]
    assert len(set(names)) == len(names)
    back, unknown = state_from_layout(state_to_layout(state, specs, layout), config, layout)
    assert not unknown and set(back) == set(state)
    assert all(np.array_equal(back[k], state[k]) for k in state)


@FAST
@given(config=configs())
def test_timm_and_jax_mappings_round_trip(config):
    state = init_state(config, parameter_specs(config, "classification"), seed=0)
    size = config.image_size
    if not config.use_fc_norm:
        again = from_jax(to_jax(state, config), image_size=size, pooling=config.pooling)
        assert all(np.array_equal(again.state[k], state[k]) for k in state)
    if config.pooling == "cls" or config.use_fc_norm or not config.class_token:
        again = from_timm(to_timm(state, config), num_attention_heads=config.num_attention_heads, image_size=size,
                          layer_norm_eps=config.layer_norm_eps, pooling=config.pooling)
        assert all(np.array_equal(again.state[k], state[k]) for k in state)
