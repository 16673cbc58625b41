"""Code written for transformers ports by changing the import: Trainer, pipeline, torch.export, peft and HF's
loading keywords (issue 11, items 6-10)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import HF, expected

torch = pytest.importorskip("torch")

from vit import ViTForImageClassification, ViTImageProcessor, ViTModel  # noqa: E402

CLASSIFIER = HF / "classification" / "safetensors"


def test_from_pretrained_returns_eval_mode_like_hf():
    model = ViTForImageClassification.from_pretrained(CLASSIFIER)
    assert not model.training and not any(m.training for m in model.modules())


@pytest.mark.parametrize("keyword", ["dtype", "torch_dtype"])
def test_dtype_keyword_and_its_alias(keyword):
    model = ViTForImageClassification.from_pretrained(CLASSIFIER, **{keyword: torch.bfloat16})
    assert model.dtype == torch.bfloat16 and model.device == torch.device("cpu")
    logits = model(torch.from_numpy(expected("classification")["pixel_values"])).logits
    assert logits.dtype == torch.bfloat16
    assert ViTForImageClassification.from_pretrained(CLASSIFIER, dtype="float16").dtype == torch.float16


def test_device_map_places_the_model_and_rejects_sharding():
    assert ViTModel.from_pretrained(HF / "base" / "safetensors", device_map="cpu").device.type == "cpu"
    assert ViTModel.from_pretrained(HF / "base" / "safetensors", device_map="auto").device.type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="one device"):
        ViTModel.from_pretrained(HF / "base" / "safetensors", device_map={"encoder": 0})


def test_output_flags_as_from_pretrained_keywords_and_config_defaults():
    e = expected("classification")
    model = ViTForImageClassification.from_pretrained(CLASSIFIER, output_attentions=True, output_hidden_states=True)
    out = model(torch.from_numpy(e["pixel_values"]))
    assert len(out.attentions) == 2 and len(out.hidden_states) == 3
    assert model(torch.from_numpy(e["pixel_values"]), output_attentions=False).attentions is None
    as_tuple = ViTForImageClassification.from_pretrained(CLASSIFIER, return_dict=False)
    assert isinstance(as_tuple(torch.from_numpy(e["pixel_values"])), tuple)


def test_num_parameters_only_trainable_and_name_or_path():
    model = ViTForImageClassification.from_pretrained(CLASSIFIER)
    total = model.num_parameters()
    model.vit.requires_grad_(False)
    assert model.num_parameters(only_trainable=True) == sum(p.numel() for p in model.classifier.parameters()) < total
    assert model.name_or_path == str(CLASSIFIER)


def test_batch_feature_to_moves_and_casts_floats_only():
    batch = ViTImageProcessor(size=32)(np.zeros((40, 40, 3), np.uint8), return_tensors="pt")
    batch["labels"] = torch.tensor([1])
    cast = batch.to(torch.bfloat16)
    assert cast.pixel_values.dtype == torch.bfloat16 and cast["labels"].dtype == torch.int64
    assert batch.to("cpu").pixel_values.device.type == "cpu"


def test_torch_export_and_jit_trace():
    e = expected("classification")
    model = ViTForImageClassification.from_pretrained(CLASSIFIER)
    x = torch.from_numpy(e["pixel_values"])
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x).logits, torch.from_numpy(e["logits"]), atol=1e-5, rtol=0)
    traced = torch.jit.trace(model, (x,))
    torch.testing.assert_close(traced(x)[0], torch.from_numpy(e["logits"]), atol=1e-5, rtol=0)


def test_transformers_pipeline_accepts_our_objects():
    transformers = pytest.importorskip("transformers")
    from PIL import Image

    model = ViTForImageClassification.from_pretrained(CLASSIFIER)
    processor = ViTImageProcessor(size=32)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    pipe = transformers.pipeline("image-classification", model=model, image_processor=processor)
    top = pipe(image, top_k=3)
    with torch.no_grad():
        probs = model(processor(image, return_tensors="pt").pixel_values).logits.softmax(-1)[0]
    best = probs.argsort(descending=True)[:3]
    assert [r["label"] for r in top] == [model.config.id2label[int(i)] for i in best]
    np.testing.assert_allclose([r["score"] for r in top], probs[best].numpy(), atol=1e-6)


def test_peft_lora_trains_only_the_adapters():
    peft = pytest.importorskip("peft")
    model = ViTForImageClassification.from_pretrained(CLASSIFIER)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["query", "value"], modules_to_save=["classifier"]))
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    e = expected("classification")
    out = lora(pixel_values=torch.from_numpy(e["pixel_values"]), labels=torch.from_numpy(e["labels"]))
    out.loss.backward()
    # LoRA's B starts at zero, so the wrapped model still gives the checkpoint's logits.
    torch.testing.assert_close(out.logits.detach(), torch.from_numpy(e["logits"]), atol=1e-5, rtol=0)


def test_trainer_trains_saves_resumes_and_reloads(tmp_path):
    transformers = pytest.importorskip("transformers")
    from vit import Trainer

    rng = np.random.default_rng(0)
    rows = [{"pixel_values": torch.from_numpy(rng.normal(size=(3, 32, 32)).astype(np.float32)),
             "labels": int(rng.integers(0, 10))} for _ in range(8)]
    args = dict(output_dir=str(tmp_path / "run"), per_device_train_batch_size=4, save_steps=2, max_steps=4,
                report_to=[], use_cpu=True, logging_steps=1, learning_rate=1e-3, seed=0)
    model = ViTForImageClassification.from_pretrained(CLASSIFIER)
    trainer = Trainer(model=model, args=transformers.TrainingArguments(**args), train_dataset=rows,
                      processing_class=ViTImageProcessor(size=32))
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    for folder in (tmp_path / "final", tmp_path / "run" / "checkpoint-2"):
        assert (folder / "config.json").is_file() and (folder / "preprocessor_config.json").is_file()
    reloaded = ViTForImageClassification.from_pretrained(tmp_path / "final")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], value)
    # Resuming from the step-2 checkpoint ends at the same weights as the uninterrupted run.
    resumed = Trainer(model=ViTForImageClassification.from_pretrained(CLASSIFIER),
                      args=transformers.TrainingArguments(**args), train_dataset=rows)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    for name, value in model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, atol=1e-6, rtol=1e-5)
