"""What the export tests share (tests/test_export.py, tests/test_export_family.py): each format's file suffix and
runtime, the difference measure, and the module fixture that exports each (format, model) once."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pytest

from vit import export

SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "savedmodel": "", "stablehlo": ".bin"}
RUN = {"onnx": export.run_onnx, "tflite": export.run_tflite, "savedmodel": export.run_savedmodel,
       "stablehlo": export.run_stablehlo}
# LiteRT ops that are not builtins: TF select (Flex) ops are matched by prefix; the rest need a delegate, custom
# kernels or resource variables that the standalone interpreter does not have.
NOT_BUILTIN_OPS = ("CUSTOM", "DELEGATE", "VAR_HANDLE", "READ_VARIABLE")


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def non_builtin_ops(ops: Iterable[str]) -> set[str]:
    return {op for op in ops if op.startswith("Flex") or op in NOT_BUILTIN_OPS}


def exported_artifacts(model_dir: Callable[[str], str], folder_name: str):
    """A module-scoped `artifacts` fixture: `artifacts(fmt, name)` exports `model_dir(name)` to `fmt` on first use
    and returns (path, report) ever after, so each artifact is made once per module (an export takes seconds)."""

    @pytest.fixture(scope="module")
    def artifacts(tmp_path_factory):
        """Each (format, model) exported once per module, on first use."""
        folder = tmp_path_factory.mktemp(folder_name)
        made: dict[tuple[str, str], tuple[str, export.ExportReport]] = {}

        def get(fmt: str, name: str) -> tuple[str, export.ExportReport]:
            if (fmt, name) not in made:
                path = str(folder / f"{name}{SUFFIX[fmt]}")
                made[fmt, name] = path, export.EXPORTERS[fmt](model_dir(name), path)
            return made[fmt, name]

        return get

    return artifacts
