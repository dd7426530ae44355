"""Shared fixtures: the bundled model, the in-repo sample and its manifest."""

import json
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "cifar10.safetensors"
SAMPLE = REPO / "data" / "sample" / "test_batch.bin"
MANIFEST = REPO / "models" / "cifar10.manifest.json"
RECORD_LEN = 1 + 3 * 32 * 32


@pytest.fixture(scope="session")
def sample():
    """(labels uint8 [N], images uint8 [N, 32, 32, 3]) from the CIFAR-10 records: a label
    byte, then the R, G and B planes. The images are a transposed view (not contiguous)."""
    records = np.fromfile(SAMPLE, dtype=np.uint8).reshape(-1, RECORD_LEN)
    planar = records[:, 1:].reshape(-1, 3, 32, 32)
    return records[:, 0], planar.transpose(0, 2, 3, 1)


@pytest.fixture(scope="session")
def manifest():
    return json.loads(MANIFEST.read_text())


def preprocess(images):
    """The library's evaluation preprocessing, in numpy: central 24x24 crop, channels first,
    (x - mean) / max(stddev, 1/sqrt(1728)) per image, in float64, then float32."""
    crop = images[:, 4:28, 4:28, :].transpose(0, 3, 1, 2).astype(np.float64)
    flat = crop.reshape(len(crop), -1)
    mean = flat.mean(axis=1, keepdims=True)
    scale = np.maximum(flat.std(axis=1, keepdims=True), 1.0 / np.sqrt(flat.shape[1]))
    return ((flat - mean) / scale).astype(np.float32).reshape(crop.shape)
