"""Hostile tensors given to the models: wrong rank, channels, size, dtype, non-finite values, odd batches.

Every framework refuses them before the model runs, with an error that names the problem and the fix.
"""

from __future__ import annotations

import numpy as np
import pytest
from frameworks import build, run

from vit import ImageError

PIXELS = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)


def test_integer_pixels_are_refused(framework, tiny_config):
    model = build(framework, "classification", tiny_config)
    with pytest.raises(ValueError, match="floating point"):
        run(framework, model, np.zeros((1, 3, 32, 32), np.uint8))


@pytest.mark.parametrize("shape, kwargs, message", [
    ((2, 4, 32, 32), {}, "4 channels but the model expects num_channels=3"),
    ((2, 32, 32, 3), {}, "channels-last"),
    ((2, 3, 48, 48), {}, "interpolate_pos_encoding=True"),
    ((2, 3, 32, 48), {"interpolate_pos_encoding": False}, "interpolate_pos_encoding=True"),
    ((3, 32, 32), {}, "4 dimensions"),
    ((2, 3, 4, 4), {"interpolate_pos_encoding": True}, "smaller than one patch"),
])
def test_bad_pixel_values_are_named(framework, tiny_config, shape, kwargs, message):
    model = build(framework, "classification", tiny_config)
    with pytest.raises(ImageError, match=message):
        run(framework, model, np.zeros(shape, np.float32), **kwargs)


def test_non_finite_pixels_are_refused(framework, tiny_config):
    model = build(framework, "base", tiny_config)
    bad = PIXELS.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        run(framework, model, bad)


def test_mask_shape_is_checked(framework, tiny_config):
    model = build(framework, "mim", tiny_config)
    with pytest.raises(ImageError, match="bool_masked_pos"):
        run(framework, model, PIXELS, bool_masked_pos=np.zeros((2, 15), bool))


def test_batch_of_one_and_empty_batch(framework, tiny_config):
    model = build(framework, "classification", tiny_config)
    assert run(framework, model, PIXELS[:1])["logits"].shape == (1, 10)
    assert run(framework, model, PIXELS[:0])["logits"].shape == (0, 10)
