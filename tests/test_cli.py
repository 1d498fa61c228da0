"""The `cnnlab` command: the acceptance interface and every bad-input case (exit 2, one line, nothing lost)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cnnlab.data.cifar10 import CLASSES
from conftest import TINY, cifar_records, read_table, real_data_root, write_fake_cifar
from test_bad_input import assert_one_line_error as assert_error
from test_bad_input import run


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




@pytest.mark.whole_machine  # a time budget: its steps must not depend on a test beside it
def test_end_to_end_on_real_cifar_slice(tmp_path, capsys, monkeypatch):
    """The README's kind of command on real CIFAR-10 (the first 5,000 training images, the 10,000 test images):
    `cnnlab train --config fast89 --minutes M` as a process, which must end within its minutes, then `evaluate`
    (in this process: cli.main, torch already imported). The one real-CIFAR run of the command line and of
    the time budget (tests/test_budget.py replays the budget's decisions on fake data)."""
    out = tmp_path / "run"
    minutes = 0.6  # 0.4 left one step on a slowed CI VM (setup, calibration included, took 16 of its 24 s)
    proc = cnnlab("train", "--config", "fast89", "--minutes", minutes, "--limit-train", "5000", "--seed", "0",
                  "model.widths=[16,32,64]", "--out", out, "--no-progress", env={"CNNLAB_DATA": str(real_data_root())})
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout and str(out) in proc.stdout
    assert proc.stdout.splitlines()[1].startswith(f"budget {minutes:g} min: ")
    s = json.loads((out / "summary.json").read_text())
    assert s["model"] == "fastnet" and s["seed"] == 0 and s["train_images"] == 5000
    assert s["test_images"] == 10000 and s["val_images"] == 0  # fast89 holds no validation images back
    assert 0.3 < s["test_accuracy"] <= 1  # three times chance (0.10)
    assert s["budget_minutes"] == minutes and s["stop_reason"] == ""  # the plan held: no emergency stop
    assert s["actual_seconds"] <= minutes * 60  # the whole run, final evaluation and files included
    final = s["budget"]["replans"][-1][1] if s["budget"]["replans"] else s["budget"]["total_steps"]
    assert s["steps"] == final >= 3  # a few at least: the count follows the pace (10 on a slowed 2-vCPU VM)
    assert read_table(out / "metrics.csv")  # its rows (budget runs' rows: tests/test_budget.py)
    assert (out / "curves.png").stat().st_size > 1000
    monkeypatch.setenv("CNNLAB_DATA", str(real_data_root()))
    code, stdout, err = run(["evaluate", out], capsys)
    assert code == 0, err
    # evaluate recomputes the kept weights' test figure and prints what it wrote
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["test_images"] == 10000 and ev["test_accuracy"] == pytest.approx(s["test_accuracy"])
    lines = stdout.splitlines()
    first = lines.index(f"test accuracy {100 * ev['test_accuracy']:.2f}% on 10000 images")
    assert list(ev["per_class_accuracy"]) == CLASSES and len(ev["confusion_matrix"]) == 10
    for name, line in zip(CLASSES, lines[first + 1:first + 11], strict=True):
        assert line.split() == [name, f"{100 * ev['per_class_accuracy'][name]:.2f}%"], line
    # CIFAR-10's test set holds 1,000 images per class: the per-class figures and the matrix add up to the total
    assert [sum(r) for r in ev["confusion_matrix"]] == [1000] * 10
    assert sum(ev["per_class_accuracy"].values()) / 10 == pytest.approx(ev["test_accuracy"])
    assert (out / "confusion_matrix.png").is_file()


def test_missing_dataset(tmp_path):
    proc = cnnlab("train", *TINY, "--data-root", tmp_path / "empty", "--out", tmp_path / "r")
    assert_one_line_error(proc, "not found in", "empty/cifar-10-batches-bin", "--data-root")


# The cases below run the CLI in this process (cnnlab.cli.main, as test_bad_input.py does): torch is imported once,
# not once per case. The two tests above run it as a process, as a user does (exit code, stderr, one line).


def test_offline_download_failure_is_one_line(tmp_path, capsys, monkeypatch):
    for proxy in ("http_proxy", "https_proxy"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    code, _, err = run(["train", *TINY[:-1], "--data-root", tmp_path / "empty", "--out", tmp_path / "r"], capsys)
    assert_error(code, err, "could not download CIFAR-10", "CNNLAB_DATA")


def test_corrupt_bin_files(tmp_path, capsys):
    root = write_fake_cifar(tmp_path / "d", per_file=20, test=20)
    batch = root / "cifar-10-batches-bin" / "data_batch_3.bin"
    batch.write_bytes(batch.read_bytes()[:-10])
    code, _, err = run(["train", *TINY, "--data-root", root, "--out", tmp_path / "r"], capsys)
    assert_error(code, err, "data_batch_3.bin", "3,073-byte")
    raw = bytearray(cifar_records(np.arange(20) % 10))
    raw[3073 * 4] = 200
    batch.write_bytes(bytes(raw))
    code, _, err = run(["train", *TINY, "--data-root", root, "--out", tmp_path / "r"], capsys)
    assert_error(code, err, "data_batch_3.bin record 4 has label byte 200")


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
def test_bad_arguments(args, fragments, tmp_path, fake_cifar_root, capsys):
    code, _, err = run(["train", *TINY, "--data-root", fake_cifar_root, "--out", tmp_path / "r", *args], capsys)
    assert_error(code, err, *fragments)
    assert not (tmp_path / "r").exists()  # nothing written for a rejected config


def test_unwritable_output_directory(tmp_path, fake_cifar_root, capsys):
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
        code, _, err = run(["train", *TINY, "--data-root", fake_cifar_root, "--out", out], capsys)
        assert_error(code, err, "output directory", "not writable", "--out")
    finally:
        locked.chmod(0o700)


def test_resume_with_changed_config_and_nan_loss(tmp_path, fake_cifar_root, capsys):
    out = tmp_path / "r"
    code, _, err = run(["train", *TINY, "--data-root", fake_cifar_root, "--out", out, "--epochs", "1"], capsys)
    assert code == 0, err
    # a finished run cannot be resumed; a changed config cannot resume either
    code, _, err = run(["train", "--resume", out, "--data-root", fake_cifar_root], capsys)
    assert_error(code, err, "already finished")
    (out / "summary.json").unlink()
    code, _, err = run(["train", *TINY, "--data-root", fake_cifar_root, "--resume", out, "--epochs", "1", "--lr",
                        "0.5"], capsys)
    assert_error(code, err, "cannot resume", "optim.lr")
    # NaN: an absurd learning rate diverges in the first epoch; the message says what was kept
    code, _, err = run(["train", *TINY, "--data-root", fake_cifar_root, "--out", tmp_path / "nan", "--optimizer",
                        "sgd", "--lr", "1e30", "--epochs", "2"], capsys)
    assert_error(code, err, "loss became", "no epoch finished", "lower optim.lr")
    assert not (tmp_path / "nan" / "summary.json").exists()


def test_models_command_lists_registry(capsys):
    code, out, _ = run(["models"], capsys)
    assert code == 0 and "cnn4" in out and "mlp" in out


def test_a_run_without_test_evaluation_reports_validation(tmp_path, fake_cifar_root, capsys):
    """Recipe sweeps never see the test set (train.final_test=false); the command still ends cleanly."""
    out = tmp_path / "r"
    code, stdout, err = run(["train", *TINY, "--data-root", fake_cifar_root, "--out", out, "--epochs", "1",
                             "train.final_test=false", "train.validate=end"], capsys)
    assert code == 0, err
    assert "best val accuracy" in stdout and "test accuracy" not in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_accuracy"] is None and summary["best_val_accuracy"] is not None
    assert not (out / "evaluation.json").exists()


# ----------------------------------------------------------------------------------------------- the resume rule
# One rule for train, transfer, features and finetune: with --resume, a setting whose key is in
# config.RESUME_CHANGEABLE (where the run runs) is applied to the saved config; any other one must leave the
# saved value as it is, or the command is refused in one line naming how it was given.

SOURCE_RUN, PHOTOS_DIR = "/runs/source", "/data/photos"
REQUIRED = {"train": [], "transfer": ["--from", SOURCE_RUN, "--data", PHOTOS_DIR], "features": ["--data", PHOTOS_DIR],
            "finetune": ["--data", PHOTOS_DIR]}


def _saved_run(tmp_path, command):
    """A run directory holding only the config.yaml that `command` with REQUIRED would have saved."""
    from cnnlab import config

    folder = {"data.dataset": "folder", "data.path": PHOTOS_DIR}
    cfg = {"train": lambda: config.resolve(None, {"train.epochs": 3}),
           "transfer": lambda: config.resolve("transfer", {**folder, "transfer.from_run": SOURCE_RUN}),
           "features": lambda: config.resolve("features", folder),
           "finetune": lambda: config.resolve("finetune", folder)}[command]()
    run = tmp_path / f"saved-{command}"
    run.mkdir()
    (run / "config.yaml").write_text(cfg.to_yaml())
    return run, cfg


@pytest.fixture
def captured_training(monkeypatch):
    """classify.train replaced: what the CLI would hand to the training session."""
    from types import SimpleNamespace

    from cnnlab import classify

    calls = []

    def fake_train(cfg, *, resume=None, **_):
        calls.append((cfg, resume))
        return SimpleNamespace(summary=None, run_dir=cfg.out)

    monkeypatch.setattr(classify, "train", fake_train)
    return calls


def _main(argv, capsys):
    from cnnlab import cli

    capsys.readouterr()
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("command", list(REQUIRED))
def test_resume_applies_where_it_runs_to_the_saved_config(command, tmp_path, capsys, captured_training):
    from cnnlab import config

    run, saved = _saved_run(tmp_path, command)
    code, err = _main([command, *REQUIRED[command], "--resume", run, "--detect-anomaly", "--cache-dir",
                       tmp_path / "cache2", "--threads", "1", "--no-progress", "--data-root", tmp_path / "d",
                       "--epochs", saved.train.epochs, "data.download=false"], capsys)
    assert code == 0, err
    [(cfg, resume)] = captured_training
    assert resume == str(run) and cfg.out == str(run)
    assert cfg.train.detect_anomaly is True and cfg.data.cache_dir == str(tmp_path / "cache2")
    assert cfg.train.threads == 1 and cfg.train.progress is False and cfg.data.root == str(tmp_path / "d")
    assert cfg.data.download is False
    assert config.differences(saved, cfg) == []  # nothing else changed (an equal --epochs changes nothing)
    assert set(config.RESUME_CHANGEABLE) >= {"train.detect_anomaly", "data.cache_dir", "train.threads", "out"}


@pytest.mark.parametrize("command", list(REQUIRED))
@pytest.mark.parametrize("change, named, key", [
    (["--epochs", "7"], "--epochs 7", "train.epochs"),
    (["optim.lr=0.5"], "optim.lr=0.5", "optim.lr"),
    (["--seed", "3"], "--seed 3", "train.seed"),
])
def test_resume_refuses_any_other_change_naming_the_flag(command, change, named, key, tmp_path, capsys,
                                                         captured_training):
    run, _ = _saved_run(tmp_path, command)
    code, err = _main([command, *REQUIRED[command], "--resume", run, "--no-progress", *change], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "cannot resume" in lines[0] and named in lines[0] and key in lines[0], lines[0]
    assert not captured_training


def test_resume_refuses_another_dataset_and_another_out(tmp_path, capsys, captured_training):
    run, _ = _saved_run(tmp_path, "features")
    code, err = _main(["features", "--data", tmp_path / "other", "--resume", run], capsys)
    assert code == 2 and f"--data {tmp_path / 'other'}" in err and "data.path" in err, err
    code, err = _main(["train", "--resume", _saved_run(tmp_path, "train")[0], "--out", tmp_path / "elsewhere"], capsys)
    assert code == 2 and "two run directories" in err, err
    assert not captured_training


def test_evaluate_takes_an_output_folder(tmp_path, capsys, monkeypatch):
    from cnnlab import classify

    seen = {}

    def fake_evaluate(run_dir, **kwargs):
        seen.update(kwargs, run_dir=run_dir)
        return {"test_accuracy": 0.5, "test_images": 2, "per_class_accuracy": {"a": 0.5}}

    monkeypatch.setattr(classify, "evaluate", fake_evaluate)
    code, err = _main(["evaluate", tmp_path / "run", "--data", tmp_path / "photos", "--out", tmp_path / "ev"], capsys)
    assert code == 0, err
    assert seen["out"] == str(tmp_path / "ev") and seen["data_path"] == str(tmp_path / "photos")


def _finished_then_reopened(argv, out):
    """Run `argv` to its end, then remove summary.json so that it can be resumed (its last epoch is done)."""
    from cnnlab import cli

    assert cli.main([str(a) for a in argv]) == 0
    (out / "summary.json").unlink()


def test_detect_anomaly_given_on_resume_reaches_the_resumed_run(tmp_path, fake_cifar_root):
    """Needs the training session to copy every RESUME_CHANGEABLE key onto the saved config."""
    import yaml

    from cnnlab import cli

    out = tmp_path / "r"
    _finished_then_reopened(["train", *TINY, "--data-root", fake_cifar_root, "--out", out, "--epochs", "1"], out)
    assert cli.main(["train", "--resume", str(out), "--detect-anomaly", "--data-root", str(fake_cifar_root)]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["detect_anomaly"] is True


def _photo_folder(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("church", "house"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.mark.parametrize("command", ["train", "features"])
def test_a_changed_cache_dir_on_resume_is_used_the_same_in_train_and_transfer_commands(command, tmp_path,
                                                                                     fake_cifar_root):
    """Needs the training session to copy every RESUME_CHANGEABLE key onto the saved config."""
    import yaml

    from cnnlab import cli

    out = tmp_path / "r"
    where = ["--data-root", fake_cifar_root] if command == "train" else ["--data", _photo_folder(tmp_path / "p")]
    first = [*TINY, "--epochs", "1"] if command == "train" else ["--epochs", "1", "--val-fraction", "0.34",
                                                                 "--no-progress"]
    _finished_then_reopened([command, *first, *where, "--cache-dir", tmp_path / "c1", "--out", out], out)
    assert cli.main([str(a) for a in [command, *where, "--resume", out, "--cache-dir", tmp_path / "c2",
                                      "--no-progress"]]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["cache_dir"] == str(tmp_path / "c2")
