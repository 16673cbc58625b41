"""Exports for deployment: each artifact, run in its own runtime, reproduces HF transformers' numbers.

ONNX (onnxruntime) at batch 1 and 3, at the native size and another one; LiteRT (the standalone interpreter),
SavedModel (`tf.saved_model.load`) and StableHLO (`jax.export.deserialize`) at their fixed size. The int8 and
fp16 artifacts are measured on the digits demo model's held-out data.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import HF, expected
from exports import RUN, SUFFIX, exported_artifacts, max_diff, non_builtin_ops

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")

from vit import export  # noqa: E402

# Each artifact is exported once per module; keep the module on one xdist worker so it is not exported twice.
pytestmark = pytest.mark.xdist_group("export")
HEADS = ("classification", "base", "mim")
OUTPUTS = {"classification": ("logits",), "base": ("last_hidden_state", "pooler_output"), "mim": ("reconstruction",)}
TOL = export.FP32_TOLERANCE
OTHER_HW = (48, 40)  # the size of HF's own interpolated reference in classification/expected.npz
# HF's masked-image-modelling head folds the patches back into a square grid, so its reference is square.
OTHER_HW_OF = {"classification": OTHER_HW, "base": OTHER_HW, "mim": (48, 48)}
ROOT = Path(__file__).resolve().parents[1]


def model_dir(head: str) -> str:
    return str(HF / head / "safetensors")


def hf_inputs(head: str, batch: int) -> dict[str, np.ndarray]:
    e = expected(head)
    inputs = {"pixel_values": e["pixel_values"][:batch]}
    if head == "mim":
        inputs["bool_masked_pos"] = e["bool_masked_pos"][:batch]
    return inputs


artifacts = exported_artifacts(model_dir, "exports")  # artifacts(fmt, head) -> (path, report)


@pytest.fixture(scope="module")
def hf_at_other_size():
    """HF transformers' own outputs with interpolate_pos_encoding=True at another size, batch 3 (seeded input)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    classes = {"classification": transformers.ViTForImageClassification, "base": transformers.ViTModel,
               "mim": transformers.ViTForMaskedImageModeling}
    rng = np.random.default_rng(7)
    refs = {}
    for head, cls in classes.items():
        model = cls.from_pretrained(model_dir(head), attn_implementation="eager").eval()
        hw = OTHER_HW_OF[head]
        inputs = {"pixel_values": rng.standard_normal((3, 3, *hw)).astype(np.float32)}
        with torch.no_grad():
            out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}, interpolate_pos_encoding=True)
        if head == "mim":
            # HF reshapes a mask to the config's grid, so at another size it runs unmasked; an empty mask is
            # the same. (The masked path at other sizes is in every export's own check, against our model.)
            inputs["bool_masked_pos"] = np.zeros((3, (hw[0] // 8) * (hw[1] // 8)), bool)
        refs[head] = inputs, {n: getattr(out, n).numpy() for n in OUTPUTS[head]}
    return refs


# ------------------------------------------------------------------------------------------------- ONNX
@pytest.mark.parametrize("head", HEADS)
def test_onnx_reproduces_hf_at_the_native_size(artifacts, head):
    path, report = artifacts("onnx", head)
    assert report.ok and report.image_size is None and report.output_names == OUTPUTS[head]
    assert [c.input_shape[2:] for c in report.checks] == [(32, 32), export.other_size(report_config(head))]
    e = expected(head)
    for batch in (1, 3):
        out = export.run_onnx(path, **hf_inputs(head, batch))
        assert set(out) == set(OUTPUTS[head])
        for name in OUTPUTS[head]:
            assert max_diff(out[name], e[name][:batch]) <= TOL, (name, batch)


@pytest.mark.parametrize("head", HEADS)
def test_onnx_reproduces_hf_at_another_size(artifacts, hf_at_other_size, head):
    """One graph serves every size: positions are resized in the graph with PyTorch's bicubic numbers."""
    path, _ = artifacts("onnx", head)
    inputs, reference = hf_at_other_size[head]
    for batch in (1, 3):
        out = export.run_onnx(path, **{k: v[:batch] for k, v in inputs.items()})
        for name in OUTPUTS[head]:
            assert max_diff(out[name], reference[name][:batch]) <= TOL, (name, batch)
    if head == "classification":  # HF's stored interpolated logits, too
        e = expected("classification")
        assert max_diff(export.run_onnx(path, e["pixel_values_interp"])["logits"], e["logits_interp"]) <= TOL


def test_onnx_graph_has_dynamic_batch_height_and_width(artifacts):
    onnx = pytest.importorskip("onnx")
    path, _ = artifacts("onnx", "classification")
    graph = onnx.load(path).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert [graph.input[0].name, *(isinstance(d, str) for d in dims)] == ["pixel_values", True, False, True, True]
    assert [o.name for o in graph.output] == ["logits"]
    assert any(node.op_type == "Resize" for node in graph.node)


def test_onnx_sizes_that_are_not_a_multiple_of_the_patch(artifacts):
    torch = pytest.importorskip("torch")
    from vit import ViTForImageClassification

    path, _ = artifacts("onnx", "classification")
    model = ViTForImageClassification.from_pretrained(model_dir("classification")).eval()
    pixels = np.random.default_rng(3).standard_normal((2, 3, 37, 61)).astype(np.float32)
    with torch.no_grad():
        reference = model(torch.from_numpy(pixels), interpolate_pos_encoding=True).logits.numpy()
    assert max_diff(export.run_onnx(path, pixels)["logits"], reference) <= TOL


def test_onnx_static(tmp_path):
    onnx = pytest.importorskip("onnx")
    path = tmp_path / "static.onnx"
    report = export.export_onnx(model_dir("classification"), path, static=True)
    assert report.image_size == (32, 32) and len(report.checks) == 1
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1:] == [3, 32, 32]
    e = expected("classification")
    assert max_diff(export.run_onnx(path, e["pixel_values"])["logits"], e["logits"]) <= TOL


def report_config(head: str):
    from vit import ViTConfig

    return ViTConfig.from_pretrained(model_dir(head))


# ------------------------------------------------------------------------ LiteRT, SavedModel, StableHLO
@pytest.mark.parametrize("fmt", ["tflite", "savedmodel", "stablehlo"])
@pytest.mark.parametrize("head", HEADS)
def test_fixed_size_exports_reproduce_hf(artifacts, fmt, head):
    path, report = artifacts(fmt, head)
    assert report.ok and report.image_size == (32, 32) and report.output_names == OUTPUTS[head]
    e = expected(head)
    for batch in (1, 3):
        out = RUN[fmt](path, **hf_inputs(head, batch))
        assert set(out) == set(OUTPUTS[head])
        for name in OUTPUTS[head]:
            assert max_diff(out[name], e[name][:batch]) <= TOL, (name, batch)


def test_tflite_has_builtin_ops_only(artifacts):
    """The erf GELU becomes LiteRT's builtin GELU, with no TF select (Flex) or custom ops."""
    path, _ = artifacts("tflite", "classification")
    ops = export.tflite_ops(path)
    assert "GELU" in ops
    assert not non_builtin_ops(ops)


def test_tflite_at_another_image_size(tmp_path, hf_at_other_size):
    path = tmp_path / "other.tflite"
    report = export.export_tflite(model_dir("classification"), path, image_size=OTHER_HW)
    assert report.image_size == OTHER_HW
    inputs, reference = hf_at_other_size["classification"]
    assert max_diff(export.run_tflite(path, **inputs)["logits"], reference["logits"]) <= TOL


def test_stablehlo_at_another_image_size(tmp_path, hf_at_other_size):
    path = tmp_path / "other.bin"
    export.export_stablehlo(model_dir("mim"), path, image_size=OTHER_HW_OF["mim"])
    inputs, reference = hf_at_other_size["mim"]
    assert max_diff(export.run_stablehlo(path, **inputs)["reconstruction"], reference["reconstruction"]) <= TOL


def test_stablehlo_of_a_long_sequence_has_no_per_head_loop(tmp_path):
    """From HEAD_LOOP_MIN_TOKENS tokens the Flax model on a CPU loops over (image, head) pairs, a CPU speed-up; the
    export traces one batched matmul instead (portable to any device), and its check still matches the model."""
    jax = pytest.importorskip("jax")
    from vit import FlaxViTForImageClassification, ViTConfig
    from vit.flax.modeling import HEAD_LOOP_MIN_TOKENS

    folder = model_dir("classification")
    patch = ViTConfig.from_pretrained(folder).patch_size
    side = patch * (int(HEAD_LOOP_MIN_TOKENS**0.5) + 1)
    model = FlaxViTForImageClassification.from_pretrained(folder)
    x = np.zeros((1, 3, side, side), np.float32)
    native = jax.jit(lambda x: model(x, interpolate_pos_encoding=True).logits).lower(x).as_text()
    assert "stablehlo.while" in native  # the model itself takes the loop at this size
    report = export.export_stablehlo(folder, tmp_path / "long.bin", image_size=side)  # checks parity itself
    assert report.image_size == (side, side) and report.checks[0].max_abs_diff <= TOL
    module = jax.export.deserialize(bytearray((tmp_path / "long.bin").read_bytes())).mlir_module()
    assert "stablehlo.dot_general" in module and "stablehlo.while" not in module


def test_savedmodel_serving_default_has_a_dynamic_batch(artifacts):
    tf = pytest.importorskip("tensorflow")
    path, _ = artifacts("savedmodel", "base")
    signature = tf.saved_model.load(path).signatures["serving_default"]
    spec = signature.structured_input_signature[1]["pixel_values"]
    assert spec.shape.as_list() == [None, 3, 32, 32] and spec.dtype == tf.float32
    assert set(signature.structured_outputs) == {"last_hidden_state", "pooler_output"}


def test_stablehlo_runs_without_vit(artifacts):
    """The serialised export needs only JAX: here `import vit` fails in the process that runs it."""
    path, _ = artifacts("stablehlo", "classification")
    e = expected("classification")
    np.save(Path(path).with_suffix(".npy"), e["pixel_values"])
    code = (
        "import sys\n"
        "sys.modules['vit'] = None\n"
        "try:\n    import vit\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('vit is importable')\n"
        "import jax, numpy as np\n"
        f"exported = jax.export.deserialize(bytearray(open({path!r}, 'rb').read()))\n"
        f"logits = np.asarray(exported.call(np.load({str(Path(path).with_suffix('.npy'))!r}))['logits'])\n"
        "np.save(sys.argv[1], logits)\n"
    )
    out = Path(path).with_suffix(".logits.npy")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env, cwd="/")
    assert max_diff(np.load(out), e["logits"]) <= TOL


# ------------------------------------------------------------------------------- checks, errors, files
def test_a_failed_check_raises_and_writes_nothing(tmp_path, monkeypatch):
    """Above the tolerance the export fails with the measured difference, and leaves no file behind."""
    monkeypatch.setattr(export, "_compare", lambda *a, _c=export._compare: _shifted(_c(*a)))
    with pytest.raises(export.ExportError, match=r"does not reproduce the framework model.*max \|diff\|"):
        export.export_stablehlo(model_dir("classification"), tmp_path / "bad.bin")
    assert os.listdir(tmp_path) == []


def _shifted(check: export.ParityCheck) -> export.ParityCheck:
    return export.ParityCheck(check.input_shape, check.max_abs_diff + 1e-3, check.output_scale)


def test_the_check_catches_a_wrong_artifact(tmp_path, monkeypatch):
    """The check really runs the artifact: a runtime that returns wrong numbers fails the export."""
    real = export.run_savedmodel
    monkeypatch.setattr(export, "run_savedmodel", lambda *a, **k: {n: v + 1e-3 for n, v in real(*a, **k).items()})
    with pytest.raises(export.ExportError, match="savedmodel export does not reproduce"):
        export.export_savedmodel(model_dir("classification"), tmp_path / "sm")
    assert os.listdir(tmp_path) == []


def test_savedmodel_replaces_an_old_folder_atomically(tmp_path):
    target = tmp_path / "sm"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    export.export_savedmodel(model_dir("classification"), target)
    assert not (target / "stale.txt").exists() and (target / "saved_model.pb").exists()
    assert sorted(os.listdir(tmp_path)) == ["sm"]


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(export.ExportError, match="int8 only"):
        export.export_onnx(model_dir("classification"), tmp_path / "x.onnx", quantize="fp16")
    with pytest.raises(export.ExportError, match="smaller than one patch"):
        export.export_stablehlo(model_dir("classification"), tmp_path / "x.bin", image_size=(4, 32))
    with pytest.raises(export.ViTError, match="google/vit-base-patch16-224"):
        # A hub id that cannot be fetched (no network here) is one error that names the repo.
        export.export_savedmodel("google/vit-base-patch16-224", tmp_path / "sm")


def test_cli(tmp_path):
    from vit.cli import main

    out = tmp_path / "m.bin"
    assert main(["export", "stablehlo", model_dir("base"), str(out), "--image-size", "40", "48"]) == 0
    assert out.exists()
    assert main(["export", "savedmodel", model_dir("base"), str(tmp_path / "sm"), "--opset", "17"]) == 2
    assert not (tmp_path / "sm").exists()


def test_cli_prints_the_parity(tmp_path, capsys):
    from vit.cli import main

    assert main(["export", "tflite", model_dir("mim"), str(tmp_path / "m.tflite"), "--quantize", "fp16"]) == 0
    printed = capsys.readouterr().out
    assert "largest difference" in printed and "fp16" in printed and "reconstruction" in printed


def test_importing_vit_export_imports_no_runtime():
    code = ("import sys, vit, vit.export\n"
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'onnxscript', 'ai_edge_litert', 'torch', 'tensorflow', "
            "'jax') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_module_docstring_example():
    import doctest

    result = doctest.testmod(export, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------------------------ quantisation
@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    sys.path.insert(0, str(ROOT / "examples"))
    from digits import digits_split

    from vit import ViTImageProcessor
    from vit.cli import demo_model_dir

    _, _, images, labels = digits_split()
    pixels = ViTImageProcessor.from_pretrained(demo_model_dir())(list(images), return_tensors="np").pixel_values
    return demo_model_dir(), pixels, labels


# Measured on the 360 held-out digits: fp32 96.1%, ONNX int8 96.4%, LiteRT int8 96.4%, LiteRT fp16 96.1%,
# and the quantised predictions agree with fp32 on 99.7% (int8) and 100% (fp16) of the scans.
QUANTIZED = [("onnx", "int8"), ("tflite", "int8"), ("tflite", "fp16")]


@pytest.fixture(scope="module")
def digits_fp32(digits, tmp_path_factory):
    """The demo model exported in float32 once per format, with its held-out logits."""
    folder, pixels, _ = digits
    out = tmp_path_factory.mktemp("digits")
    made = {}

    def get(fmt: str) -> tuple[Path, np.ndarray]:
        if fmt not in made:
            path = out / f"fp32{SUFFIX[fmt]}"
            export.EXPORTERS[fmt](folder, path)
            made[fmt] = path, RUN[fmt](path, pixels)["logits"]
        return made[fmt]

    return get


@pytest.mark.parametrize("fmt, quantize", QUANTIZED)
def test_quantized_accuracy_on_held_out_digits(tmp_path, digits, digits_fp32, fmt, quantize):
    folder, pixels, labels = digits
    fp32_path, fp32 = digits_fp32(fmt)
    q_path = tmp_path / f"{quantize}{SUFFIX[fmt]}"
    report = export.EXPORTERS[fmt](folder, q_path, quantize=quantize)
    assert report.relative and report.tolerance == export.QUANTIZED_TOLERANCE[quantize]
    quantized = RUN[fmt](q_path, pixels)["logits"]
    assert os.path.getsize(q_path) < 0.7 * os.path.getsize(fp32_path)  # measured 38-57%
    fp32_accuracy = float((fp32.argmax(-1) == labels).mean())
    accuracy = float((quantized.argmax(-1) == labels).mean())
    agreement = float((quantized.argmax(-1) == fp32.argmax(-1)).mean())
    assert fp32_accuracy >= 0.95
    assert accuracy >= fp32_accuracy - 0.01 and agreement >= (0.99 if quantize == "int8" else 0.999)
    relative = max_diff(quantized, fp32) / float(np.abs(fp32).max())
    assert relative <= export.QUANTIZED_TOLERANCE[quantize]
