"""Shared fixtures: small CIFAR-format datasets written by the tests, and the real data folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.engine.device import available_cores


ALL_CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def _xdist_worker() -> tuple[int, int] | None:
    """(this worker's index, the number of workers) under pytest-xdist, else None."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not ALL_CORES:
        return None
    return int(worker[2:]), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


def _own_cores() -> list[int]:
    """This process's share of the cores: all of them, or under xdist its worker's slice (one each on 2 cores)."""
    worker = _xdist_worker()
    if worker is None:
        return ALL_CORES
    index, workers = worker
    return ALL_CORES[index::workers] or [ALL_CORES[index % len(ALL_CORES)]]


def _use_cores(cores: list[int]) -> None:
    """Run this process, and everything it starts from now on, on `cores`, with at most 2 compute threads.

    The cnnlab processes that CLI tests start inherit the affinity, and cnnlab sizes its threads by it
    (engine/device.py: available_cores), so workers never run more compute threads than there are cores
    (an oversubscribed CPU trains many times slower)."""
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    torch.set_num_threads(min(2, available_cores()))


# `make test` runs the suite in two pytest-xdist workers (-n 2), one core each on a 2-core machine: most tests
# are single-threaded Python and process starts, which left the second core idle.
_use_cores(_own_cores())


@pytest.fixture(autouse=True)
def _cores_for_this_test(request, tmp_path_factory):
    """Under xdist, a test marked `whole_machine` (it runs processes side by side, or must fit a time budget)
    gets every core: it waits until the other workers' tests end and keeps them from starting new ones
    (an exclusive lock; every other test holds it shared), and its worker spans all cores meanwhile."""
    if _xdist_worker() is None:
        yield
        return
    import fcntl

    whole = request.node.get_closest_marker("whole_machine") is not None
    lock = tmp_path_factory.getbasetemp().parent / "cores.lock"  # one folder shared by the session's workers
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if whole else fcntl.LOCK_SH)
        try:
            if whole:
                _use_cores(ALL_CORES)
            yield
        finally:
            if whole:
                _use_cores(_own_cores())
            fcntl.flock(handle, fcntl.LOCK_UN)


# The real data every test reads: $CNNLAB_DATA when set (the Makefile sets it to ../shared/data where that exists),
# else ../shared/data beside the checkout.
SHARED_DATA = Path(os.environ.get("CNNLAB_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def real_data_root() -> Path:
    """The real data folder (SHARED_DATA); tests that need real data fail (not skip) when it is missing."""
    root = SHARED_DATA
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


def split_accuracy(run_dir, split: str) -> tuple[float, int]:
    """(accuracy, images) of a run's kept weights (best.safetensors, read from the file) on one split ("val" or
    "test") of its own data, computed the way training validated: the same inputs (for a features run, the
    cached features of the split's photos, and the classifier alone), the run's own precision and batches.
    What summary.json reports for that split must equal it exactly, or the figure is not the kept weights'."""
    from safetensors.torch import load_file

    from cnnlab.classify.building import is_features, load_data, make_batches
    from cnnlab.engine import predict
    from cnnlab.engine.device import memory_format, resolve_execution
    from cnnlab.models.trained import load_trained

    model, cfg, run, _ = load_trained(run_dir, "best")
    cpu = torch.device("cpu")
    execution = resolve_execution(cpu, cfg.train.precision, cfg.train.channels_last)
    data, _, _ = load_data(cfg, cpu, execution)
    if is_features(cfg):  # load_trained put the backbone in front; validation saw the classifier alone
        model = torch.nn.Linear(data.train_images.shape[1], len(data.classes))
        model.load_state_dict(load_file(str(Path(run_dir) / "best.safetensors")))
    model.to(cpu, memory_format=memory_format(execution.channels_last and not is_features(cfg)))
    _, val, test = make_batches(cfg, data, cpu, execution.channels_last)
    result = predict(model, {"val": val, "test": test}[split], cpu, execution.precision, cfg.train.tta)
    return result.accuracy, len(result.labels)


def read_table(path) -> list[dict[str, str]]:
    """The rows of a CSV file cnnlab wrote (comparison.csv, metrics.csv), as strings."""
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_cell(cell: str, value) -> None:
    """A CSV cell written by RunDir.write_csv holds `value`: numbers to their 6 significant digits, None and NaN
    as an empty cell, anything else as its text."""
    if value is None or (isinstance(value, float) and value != value):
        assert cell == "", (cell, value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        assert cell != "" and float(cell) == pytest.approx(value, rel=1e-5, abs=1e-12), (cell, value)
    else:
        assert cell == str(value), (cell, value)


@pytest.fixture(scope="session")
def trained_classifier(fake_cifar_root, tmp_path_factory) -> Path:
    """One finished cnn4 run on the fake data (2 epochs, fp32, seconds), shared by the tests that need a real run
    directory (weights, metadata, metrics) and only read it: copy it before changing anything in it."""
    from cnnlab import config, train

    out = tmp_path_factory.mktemp("trained") / "tiny-cifar"
    overrides = {"data.root": str(fake_cifar_root), "data.val_size": 100, "data.download": False,
                 "model.name": "cnn4", "model.widths": [8, 16], "model.fc_width": 32, "model.batchnorm": True,
                 "train.epochs": 2, "train.batch_size": 50, "train.eval_batch_size": 100, "train.progress": False,
                 "train.precision": "fp32", "optim.name": "adam", "optim.lr": 0.003, "out": str(out)}
    train(config.resolve(None, overrides))
    return out


@pytest.fixture(scope="session")
def transfer_runs(tmp_path_factory) -> Path:
    """A features run (`features/`) and a finetune run (`finetune/`: efficientnet_lite0, two trainable layers)
    on a tiny colour dataset (3 classes), fp32, seconds each; shared by the tests that only read them."""
    from cnnlab import config, train
    from test_transfer import imagefolder

    base = tmp_path_factory.mktemp("transfer-runs")
    root = imagefolder(base / "d", per_class=4)
    common = {"data.path": str(root), "data.cache_dir": str(base / "cache"), "data.val_fraction": 0.25,
              "data.test_fraction": 0.0, "train.precision": "fp32", "train.progress": False}
    train(config.resolve("features", {**common, "train.epochs": 3, "out": str(base / "features")}))
    train(config.resolve("finetune", {**common, "train.epochs": 1, "transfer.head_epochs": 0,
                                      "transfer.trainable": "2", "train.batch_size": 6,
                                      "out": str(base / "finetune")}))
    return base
