"""The processor and the PyTorch model are safe to call from several threads at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import FIXTURES, HF
from PIL import Image

from vit import ViTImageProcessor

PHOTOS = sorted((FIXTURES / "image_processor" / "images").iterdir())


def test_processor_from_four_threads_matches_serial_calls():
    processor = ViTImageProcessor(size=64)
    jobs = [[str(PHOTOS[i % 4]), Image.open(PHOTOS[(i + 1) % 4]), np.full((30 + i, 40, 3), i, np.uint8)] for i in range(16)]
    serial = [processor(job, return_tensors="np").pixel_values for job in jobs]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda job: processor(job, return_tensors="np").pixel_values, jobs))
    for a, b in zip(serial, threaded, strict=True):
        np.testing.assert_array_equal(a, b)


def test_pytorch_model_from_four_threads_matches_serial_calls():
    torch = pytest.importorskip("torch")
    from vit import ViTForImageClassification

    model = ViTForImageClassification.from_pretrained(HF / "classification" / "safetensors").eval()
    inputs = [torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(16)]
    with torch.inference_mode():
        serial = [model(x, output_attentions=i % 2 == 0).logits for i, x in enumerate(inputs)]

    def call(item):
        i, x = item
        with torch.inference_mode():
            return model(x, output_attentions=i % 2 == 0).logits

    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(call, enumerate(inputs)))
    for a, b in zip(serial, threaded, strict=True):
        assert torch.equal(a, b)
