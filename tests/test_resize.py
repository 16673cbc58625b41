"""The shared resize matrices reproduce torch's bicubic (plain and antialiased) and scipy's linear zoom."""

from __future__ import annotations

import numpy as np
import pytest

from vit.resize import resize_grid, resize_matrix

SIZES = [(4, 6), (6, 4), (14, 24), (24, 14), (5, 5), (7, 3), (2, 9)]


@pytest.mark.parametrize("old, new", SIZES)
@pytest.mark.parametrize("antialias", [False, True])
def test_matches_torch_interpolate(old, new, antialias):
    torch = pytest.importorskip("torch")
    grid = np.random.default_rng(0).normal(size=(old, old + 1, 8)).astype(np.float32)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(grid).permute(2, 0, 1)[None], size=(new, new + 2), mode="bicubic", align_corners=False,
        antialias=antialias,
    )[0].permute(1, 2, 0).numpy()
    ours = resize_grid(grid, (new, new + 2), "bicubic_antialias" if antialias else "bicubic")
    assert np.max(np.abs(ours - ref)) <= 1e-5


@pytest.mark.parametrize("old, new", SIZES)
def test_linear_matches_scipy_zoom(old, new):
    ndimage = pytest.importorskip("scipy.ndimage")
    grid = np.random.default_rng(0).normal(size=(old, old, 4))
    ref = ndimage.zoom(grid, (new / old, new / old, 1), order=1)
    assert ref.shape[:2] == (new, new)
    np.testing.assert_allclose(resize_grid(grid, (new, new), "linear"), ref, atol=1e-12)


def test_identity_and_unknown_method():
    np.testing.assert_array_equal(resize_matrix(5, 5, "bicubic"), np.eye(5))
    with pytest.raises(ValueError, match="bicubic"):
        resize_matrix(3, 4, "nearest")
