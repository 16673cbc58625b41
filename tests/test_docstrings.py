"""The runnable examples in the public classes' docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["vit.config", "vit.processor", "vit.hub", "vit.pt.modeling", "vit.pt.trainer", "vit.tf.modeling",
           "vit.flax.modeling", "vit.explain", "vit.embed"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    pytest.importorskip({"vit.pt.modeling": "torch", "vit.tf.modeling": "tensorflow",
                         "vit.flax.modeling": "flax", "vit.explain": "torch",
                         "vit.embed": "pyarrow"}.get(name, "numpy"))
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
