"""Exports of the ViT family reproduce HF transformers 4.57.6's numbers from HF's own files.

One model of each family: CLIP's image tower with its projection (quick_gelu, pre-norm, `image_embeds`),
SigLIP (no class token, tanh GELU, the attention-pooling head), DINOv2 (LayerScale, always resized position
embeddings), DINOv2 with registers (register tokens without position embeddings, antialiased resize) and
DeiT with its teacher head (class and distillation tokens, three logits). ONNX at batch 1 and 3, at the
native size and at the size of HF's second reference; LiteRT, SavedModel and StableHLO at the native size.

Every (format, family) pair runs; an export takes 8-25 s here (tracing and XLA/TF compilation, not the tiny
model), so each artifact is made once per module.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FIXTURES
from exports import RUN, SUFFIX, exported_artifacts, max_diff, non_builtin_ops

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")

from vit import export  # noqa: E402

FAMILY = FIXTURES / "family"
TOL = export.FP32_TOLERANCE
# case -> the outputs the exported artifact must have, by name, in this order
OUTPUTS = {
    "clip": ("image_embeds",),
    "siglip": ("last_hidden_state", "pooler_output"),
    "dinov2": ("last_hidden_state", "pooler_output"),
    "dinov2-registers": ("last_hidden_state", "pooler_output"),
    "deit-distilled": ("logits", "cls_logits", "distillation_logits"),
}
CASES = tuple(OUTPUTS)
FORMATS = ("onnx", "tflite", "savedmodel", "stablehlo")
# Each artifact is exported once per module; keep the module on one xdist worker so it is not exported twice.
pytestmark = pytest.mark.xdist_group("export-family")


FIXED_SIZE_PAIRS = [(case, fmt) for fmt in FORMATS[1:] for case in CASES]


def model_dir(case: str) -> str:
    return str(FAMILY / case / "safetensors")


def case_info(case: str) -> dict:
    return json.loads((FAMILY / case / "case.json").read_text())


def expected(case: str) -> dict[str, np.ndarray]:
    return dict(np.load(FAMILY / case / "expected.npz"))


artifacts = exported_artifacts(model_dir, "family-exports")  # artifacts(fmt, case) -> (path, report)


@pytest.fixture(scope="module")
def hf_at_other_size():
    """HF transformers' own outputs at batch 3 at the size of the fixture's second reference, with the fixture's
    keyword arguments there (CLIP, SigLIP, DeiT: interpolate_pos_encoding=True; DINOv2: none, it always resizes).
    Computed per case on first use."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    refs: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}

    def get(case: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if case not in refs:
            info = case_info(case)
            model = getattr(transformers, info["class"]).from_pretrained(model_dir(case), attn_implementation="eager")
            hw = expected(case)["pixel_values_interp"].shape[2:]
            pixels = np.random.default_rng(11).standard_normal((3, 3, *hw)).astype(np.float32)
            with torch.no_grad():
                out = model.eval()(torch.from_numpy(pixels), **info["interp_kwargs"])
            refs[case] = pixels, {name: getattr(out, name).numpy() for name in OUTPUTS[case]}
        return refs[case]

    return get


# ------------------------------------------------------------------------------------------------- ONNX
@pytest.mark.parametrize("case", CASES)
def test_onnx_reproduces_hf_at_the_native_size(artifacts, case):
    path, report = artifacts("onnx", case)
    assert report.ok and report.image_size is None and report.output_names == OUTPUTS[case]
    e = expected(case)
    for batch in (1, 3):
        out = export.run_onnx(path, e["pixel_values"][:batch])
        assert set(out) == set(OUTPUTS[case])
        for name in OUTPUTS[case]:
            assert max_diff(out[name], e[name][:batch]) <= TOL, (name, batch)


@pytest.mark.parametrize("case", CASES)
def test_onnx_reproduces_hf_at_another_size(artifacts, hf_at_other_size, case):
    """The same graph at HF's second resolution: positions resized in the graph, with the family's method."""
    path, _ = artifacts("onnx", case)
    e = expected(case)
    stored = [name for name in OUTPUTS[case] if f"{name}_interp" in e]
    assert stored, case  # every case has at least one stored reference at the other size
    for batch in (1, 2):  # HF's stored outputs (batch 2)
        out = export.run_onnx(path, e["pixel_values_interp"][:batch])
        for name in stored:
            assert max_diff(out[name], e[f"{name}_interp"][:batch]) <= TOL, (name, batch)
    pixels, reference = hf_at_other_size(case)
    for batch in (1, 3):  # HF run here, for every output and batch 3
        out = export.run_onnx(path, pixels[:batch])
        for name in OUTPUTS[case]:
            assert max_diff(out[name], reference[name][:batch]) <= TOL, (name, batch)


def test_onnx_graphs_name_their_outputs(artifacts):
    onnx = pytest.importorskip("onnx")
    for case in CASES:
        graph = onnx.load(artifacts("onnx", case)[0]).graph
        assert [i.name for i in graph.input] == ["pixel_values"], case
        assert tuple(o.name for o in graph.output) == OUTPUTS[case], case


@pytest.mark.parametrize("method", ["bicubic", "bicubic_antialias"])
@pytest.mark.parametrize("prefix", [
    {"class_token": True},                                    # ViT, CLIP, DINOv2
    {"class_token": True, "num_register_tokens": 4},          # DINOv2 with registers: no positions for registers
    {"class_token": False, "pooling": "map"},                 # SigLIP: no class token, no prefix positions
    {"class_token": True, "distillation_token": True},        # DeiT: two prefix rows with positions
    {"class_token": True, "no_embed_class": True},            # timm DeiT III: no positions for the class token
])
def test_in_graph_resize_is_the_models_resize(method, prefix):
    """The traceable resize that the ONNX graph holds gives the eager model's position embeddings, every grid."""
    torch = pytest.importorskip("torch")
    from vit import ViTConfig, ViTModel

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, position_interpolation=method, **prefix)
    embeddings = ViTModel(config).eval().embeddings
    torch.nn.init.normal_(embeddings.position_embeddings)
    in_graph = export._in_graph_position_resize(embeddings)
    for grid in [(4, 4), (3, 5), (6, 2), (7, 9)]:
        with torch.no_grad():
            assert max_diff(in_graph(grid), embeddings.interpolate_pos_encoding(grid)) <= 1e-5, grid  # float32 round-off


# ------------------------------------------------------------------------ LiteRT, SavedModel, StableHLO
@pytest.mark.parametrize("case, fmt", FIXED_SIZE_PAIRS, ids=[f"{c}-{f}" for c, f in FIXED_SIZE_PAIRS])
def test_fixed_size_exports_reproduce_hf(artifacts, case, fmt):
    path, report = artifacts(fmt, case)
    e = expected(case)
    assert report.ok and report.image_size == e["pixel_values"].shape[2:] and report.output_names == OUTPUTS[case]
    for batch in (1, 3):
        out = RUN[fmt](path, e["pixel_values"][:batch])
        assert set(out) == set(OUTPUTS[case])
        for name in OUTPUTS[case]:
            assert max_diff(out[name], e[name][:batch]) <= TOL, (fmt, name, batch)


def test_tflite_family_has_builtin_ops_only(artifacts):
    """quick_gelu (CLIP), tanh GELU (SigLIP) and the attention-pooling head convert to LiteRT built-ins."""
    for case in ("clip", "siglip"):
        ops = export.tflite_ops(artifacts("tflite", case)[0])
        assert not non_builtin_ops(ops), case
    assert "LOGISTIC" in export.tflite_ops(artifacts("tflite", "clip")[0])  # x * sigmoid(1.702 x)


# ------------------------------------------------------------------------------------ which class
@pytest.mark.parametrize("case, class_name", [
    ("clip", "CLIPVisionModelWithProjection"),          # a two-tower CLIPModel: its image tower, with projection
    ("clip-vision-only", "CLIPVisionModelWithProjection"),
    ("siglip", "SiglipVisionModel"),                   # a two-tower SiglipModel: its image tower
    ("dinov2", "Dinov2Model"),
    ("dinov2-classification", "Dinov2ForImageClassification"),
    ("dinov2-registers", "Dinov2WithRegistersModel"),
    ("deit-distilled", "DeiTForImageClassificationWithTeacher"),
    ("deit-base", "DeiTModel"),
])
def test_the_exported_class_is_the_one_config_json_names(case, class_name):
    from vit import ViTConfig

    assert export.model_class_name(ViTConfig.from_pretrained(model_dir(case))) == class_name


def test_plain_vit_classes_still_resolve():
    from vit import ViTConfig

    config = ViTConfig(image_size=32, patch_size=8)
    assert export.model_class_name(config) == "ViTModel"
    config.extra["architectures"] = ["TFViTForImageClassification"]
    assert export.model_class_name(config) == "ViTForImageClassification"


def test_swiglu_exports_to_litert_and_savedmodel(tmp_path):
    """SwiGLU (DINOv2-g; timm's SwiGLUPacked) through LiteRT and SavedModel reproduces timm's logits. tf.nn.silu's
    custom gradient used to make tf.saved_model.save fail ("invalid capture ... beta") in both exports."""
    import subprocess
    import sys

    case = FAMILY / "timm-dinov2-swiglu-p14-28"
    heads = json.loads((case / "timm_args.json").read_text())["VisionTransformer_kwargs"]["num_heads"]
    folder = tmp_path / "converted"
    subprocess.run([sys.executable, str(FIXTURES.parents[1] / "conversion" / "convert.py"), "--from", "timm",
                    str(case / "model.safetensors"), str(folder), "--num-attention-heads", str(heads),
                    "--pooling", "cls"], check=True, capture_output=True)
    e = np.load(case / "expected.npz")
    for fmt in ("tflite", "savedmodel"):
        path = tmp_path / f"swiglu{SUFFIX[fmt]}"
        assert export.EXPORTERS[fmt](folder, path).ok
        assert max_diff(RUN[fmt](path, e["pixel_values"])["logits"], e["logits"]) <= TOL, fmt
    assert not {op for op in export.tflite_ops(tmp_path / "swiglu.tflite") if op.startswith("Flex") or op == "CUSTOM"}
