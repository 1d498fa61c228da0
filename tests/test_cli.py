"""The `cnnlab` command: the acceptance interface and every bad-input case (exit 2, one line, nothing lost)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY, cifar_records, real_data_root, write_fake_cifar


def cnnlab(*args, env=None, cwd=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "cnnlab", *map(str, args)], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=600)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in proc.stderr




def test_end_to_end_on_real_cifar_slice(tmp_path):
    """The acceptance command on the first 2,000 real training images, then `evaluate`."""
    out = tmp_path / "run"
    proc = cnnlab("train", "--model", "cnn4", "--epochs", "1", "--batch-size", "100", "--limit-train", "2000",
                  "--seed", "0", "--out", out, "--no-progress", env={"CNNLAB_DATA": str(real_data_root())})
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout and str(out) in proc.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["model"] == "cnn4" and s["epochs"] == 1 and s["seed"] == 0 and s["train_images"] == 2000
    assert s["params"] == 1_250_858 and s["test_images"] == 10000 and s["val_images"] == 5000
    assert 0.12 < s["test_accuracy"] < 0.6 and 0 < s["best_val_accuracy"] < 1  # above chance after 1 epoch
    assert (out / "metrics.csv").is_file() and (out / "curves.png").stat().st_size > 1000
    proc = cnnlab("evaluate", out, env={"CNNLAB_DATA": str(real_data_root())})
    assert proc.returncode == 0, proc.stderr
    assert "airplane" in proc.stdout and (out / "confusion_matrix.png").is_file()


def test_missing_dataset(tmp_path):
    proc = cnnlab("train", *TINY, "--data-root", tmp_path / "empty", "--out", tmp_path / "r")
    assert_one_line_error(proc, "not found in", "empty/cifar-10-batches-bin", "--data-root")


def test_offline_download_failure_is_one_line(tmp_path):
    proc = cnnlab("train", *TINY[:-1], "--data-root", tmp_path / "empty", "--out", tmp_path / "r",
                  env={"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"})
    assert_one_line_error(proc, "could not download CIFAR-10", "CNNLAB_DATA")


def test_corrupt_bin_files(tmp_path):
    root = write_fake_cifar(tmp_path / "d", per_file=20, test=20)
    batch = root / "cifar-10-batches-bin" / "data_batch_3.bin"
    batch.write_bytes(batch.read_bytes()[:-10])
    proc = cnnlab("train", *TINY, "--data-root", root, "--out", tmp_path / "r")
    assert_one_line_error(proc, "data_batch_3.bin", "3,073-byte")
    raw = bytearray(cifar_records(np.arange(20) % 10))
    raw[3073 * 4] = 200
    batch.write_bytes(bytes(raw))
    proc = cnnlab("train", *TINY, "--data-root", root, "--out", tmp_path / "r")
    assert_one_line_error(proc, "data_batch_3.bin record 4 has label byte 200")


@pytest.mark.parametrize("args,fragments", [
    (["--model", "vgg99"], ["unknown model 'vgg99'", "cnn4", "mlp"]),
    (["--optimizer", "adagrad"], ["unknown optimizer 'adagrad'", "rmsprop"]),
    (["--schedule", "cosine_restarts"], ["unknown schedule", "cosine"]),
    (["train.epoch=3"], ["unknown config key 'train.epoch'", "did you mean 'train.epochs'"]),
    (["--epochs", "0"], ["'train.epochs' must be greater than 0"]),
    (["--epochs", "-1"], ["'train.epochs' must be greater than 0"]),
    (["--batch-size", "0"], ["'train.batch_size' must be greater than 0"]),
    (["--batch-size", "-8"], ["'train.batch_size' must be greater than 0"]),
    (["--batch-size", "many"], ["--batch-size", "invalid int value"]),
    (["--config", "no-such.yaml"], ["no-such.yaml does not exist"]),
    (["--precision", "fp16"], ["'train.precision' must be one of auto, fp32, bf16, got 'fp16'"]),
    (["train.channels_last=sometimes"], ["'train.channels_last' must be one of auto, true, false, got 'sometimes'"]),
    (["--minutes", "0"], ["'train.budget_minutes' must be greater than 0 minutes, got 0"]),
])
def test_bad_arguments(args, fragments, tmp_path, fake_cifar_root):
    proc = cnnlab("train", *TINY, "--data-root", fake_cifar_root, "--out", tmp_path / "r", *args)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "r").exists()  # nothing written for a rejected config


def test_unwritable_output_directory(tmp_path, fake_cifar_root):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: use a path under a regular file instead
            target = tmp_path / "file"
            target.write_text("x")
            out = target / "run"
        else:
            out = locked / "run"
        proc = cnnlab("train", *TINY, "--data-root", fake_cifar_root, "--out", out)
        assert_one_line_error(proc, "output directory", "not writable", "--out")
    finally:
        locked.chmod(0o700)


def test_resume_with_changed_config_and_nan_loss(tmp_path, fake_cifar_root):
    out = tmp_path / "r"
    proc = cnnlab("train", *TINY, "--data-root", fake_cifar_root, "--out", out, "--epochs", "1")
    assert proc.returncode == 0, proc.stderr
    # a finished run cannot be resumed; a changed config cannot resume either
    proc = cnnlab("train", "--resume", out, "--data-root", fake_cifar_root)
    assert_one_line_error(proc, "already finished")
    (out / "summary.json").unlink()
    proc = cnnlab("train", *TINY, "--data-root", fake_cifar_root, "--resume", out, "--epochs", "1", "--lr", "0.5")
    assert_one_line_error(proc, "cannot resume", "optim.lr")
    # NaN: an absurd learning rate diverges in the first epoch; the message says what was kept
    proc = cnnlab("train", *TINY, "--data-root", fake_cifar_root, "--out", tmp_path / "nan", "--optimizer", "sgd",
                  "--lr", "1e30", "--epochs", "2")
    assert_one_line_error(proc, "loss became", "no epoch finished", "lower optim.lr")
    assert not (tmp_path / "nan" / "summary.json").exists()


def test_models_command_lists_registry():
    proc = cnnlab("models")
    assert proc.returncode == 0 and "cnn4" in proc.stdout and "mlp" in proc.stdout


def test_a_run_without_test_evaluation_reports_validation(tmp_path, fake_cifar_root):
    """Recipe sweeps never see the test set (train.final_test=false); the command still ends cleanly."""
    out = tmp_path / "r"
    proc = cnnlab("train", *TINY, "--data-root", fake_cifar_root, "--out", out, "--epochs", "1",
                  "train.final_test=false", "train.validate=end")
    assert proc.returncode == 0, proc.stderr
    assert "best val accuracy" in proc.stdout and "test accuracy" not in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_accuracy"] is None and summary["best_val_accuracy"] is not None
    assert not (out / "evaluation.json").exists()
