"""Shared fixtures: small CIFAR-format datasets written by the tests, and the real data folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))  # never more compute threads than the 2 cores

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def real_data_root() -> Path:
    """../shared/data, or $CNNLAB_DATA; tests that need real data fail (not skip) when it is missing."""
    root = Path(os.environ.get("CNNLAB_DATA", SHARED_DATA))
    assert (root / "cifar-10-batches-bin").is_dir(), f"real CIFAR-10 expected in {root} (set CNNLAB_DATA)"
    return root


def cifar_records(labels: np.ndarray, seed: int = 0) -> bytes:
    """CIFAR-10 binary records with a learnable signal: the class sets a colour and a bright row band."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    images = rng.integers(0, 96, size=(n, 3, 32, 32), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, label % 3] += 100
        band = 3 * label
        images[i, :, band:band + 3, :] = 250
    records = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(n, -1)], axis=1)
    return records.tobytes()


def write_fake_cifar(root: Path, per_file: int = 100, test: int = 200) -> Path:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        labels = np.arange(per_file) % 10
        (folder / f"data_batch_{i}.bin").write_bytes(cifar_records(labels, seed=i))
    (folder / "test_batch.bin").write_bytes(cifar_records(np.arange(test) % 10, seed=99))
    return root


@pytest.fixture(scope="session")
def fake_cifar_root(tmp_path_factory) -> Path:
    """500 training and 200 test images in the official binary layout."""
    return write_fake_cifar(tmp_path_factory.mktemp("fake-cifar"))


# Command-line arguments of a seconds-long cnn4 run on the fake data (tests that drive the CLI).
TINY = ["--model", "cnn4", "model.widths=[8,16]", "model.fc_width=32", "--val-size", "100", "--batch-size", "50",
        "--no-progress", "data.download=false"]


@pytest.fixture
def tiny_overrides(fake_cifar_root) -> dict:
    """Config overrides for a seconds-long run on the fake data."""
    return {"data.root": str(fake_cifar_root), "data.val_size": 100, "data.download": False,
            "model.name": "cnn4", "model.widths": [8, 16], "model.fc_width": 32, "model.batchnorm": True,
            "train.epochs": 2, "train.batch_size": 50, "train.eval_batch_size": 100, "train.progress": False,
            "optim.name": "adam", "optim.lr": 0.003}
