"""TensorBoard logs (train.tensorboard, --tensorboard): read back with TensorBoard's own reader, they say what
metrics.csv says, at the same rows; a resumed run appends without a step twice; off, nothing is written.

EventAccumulator is what `tensorboard --logdir` loads runs with (including its purge of the steps a resumed
run logs again), so what these tests read is what a user sees.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnlab import cli, config, runs, train
from cnnlab.engine.callbacks import RunRecorder
from cnnlab.engine.run import Interrupted
from cnnlab.engine.tensorboard import FOLDER, TAGS
from conftest import TINY

import tensorboard  # noqa: E402,F401  the dev extra installs it: a missing package fails here, never skips


def events(run_dir: Path):
    """The run's TensorBoard logs as TensorBoard loads them (every event kept: size guidance 0)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / FOLDER), size_guidance={"scalars": 0, "images": 0})
    return accumulator.Reload()


def metrics(run_dir: Path) -> list[dict]:
    return runs.RunDir(run_dir).read_metrics()


def assert_scalars_equal_metrics(run_dir: Path, batch_size: int | None = None) -> list[int]:
    """Each tag's series equals its metrics.csv column, one event per row (a NaN cell: no event), and returns
    the rows' steps. metrics.csv keeps 6 significant digits, TensorBoard float32: each is compared within its
    own rounding (the checkpoint's history holds the exact values). `batch_size`: the steps must also be the
    images trained so far / batch size."""
    acc, rows = events(run_dir), metrics(run_dir)
    exact = torch.load(run_dir / runs.CHECKPOINT, weights_only=True)["fit"]["history"]
    steps = [e.step for e in acc.Scalars(TAGS["train_loss"])]
    assert len(steps) == len(rows) == len(exact) and steps == sorted(set(steps)), steps  # none twice
    if batch_size:
        seen = [sum(r["train_images"] for r in rows[: i + 1]) for i in range(len(rows))]
        assert steps == [round(s / batch_size) for s in seen]
    for column, tag in TAGS.items():
        expected = [(step, row[column], full[column]) for step, row, full in zip(steps, rows, exact)
                    if not math.isnan(row[column])]
        logged = acc.Scalars(tag) if tag in acc.Tags()["scalars"] else []
        assert [e.step for e in logged] == [step for step, _, _ in expected], f"{tag}: steps differ"
        assert [e.value for e in logged] == pytest.approx([csv for _, csv, _ in expected], rel=1e-5), tag
        assert [e.value for e in logged] == pytest.approx([full for _, _, full in expected], rel=2 ** -23), tag
    return steps


def test_a_run_logs_metrics_csv_per_row_and_its_figures(tmp_path, fake_cifar_root):
    out = tmp_path / "run"
    # 400 training images in batches of 50: rows at steps 8 and 16, and the half last epoch's at 20
    assert cli.main(["train", *TINY, "--data-root", str(fake_cifar_root), "--epochs", "2.5", "--tensorboard",
                     "--out", str(out)]) == 0
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and not math.isnan(rows[-1]["val_accuracy"])
    assert assert_scalars_equal_metrics(out, batch_size=50) == [8, 16, 20]
    acc = events(out)
    assert {"figures/confusion_matrix", "figures/curves"} <= set(acc.Tags()["images"])
    from PIL import Image

    [figure] = acc.Images("figures/confusion_matrix")
    with Image.open(out / "confusion_matrix.png") as png:
        assert (figure.width, figure.height) == png.size and figure.step == 20


def test_a_resumed_run_appends_and_drops_the_rows_it_logs_again(tmp_path, tiny_overrides, monkeypatch):
    """The process dies after logging epoch 2's row but before checkpointing it: the resumed run logs that row
    again, and TensorBoard shows it once (purge_step), in a second event file (the first is kept)."""
    out = tmp_path / "cut"
    cfg = config.resolve(None, {**tiny_overrides, "train.epochs": 3, "train.tensorboard": True, "out": str(out)})
    checkpoint_row = RunRecorder.on_epoch_end

    def die_before_checkpointing_epoch_2(self, trainer, row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt
        checkpoint_row(self, trainer, row)

    with monkeypatch.context() as m:
        m.setattr(RunRecorder, "on_epoch_end", die_before_checkpointing_epoch_2)
        with pytest.raises(Interrupted, match="continue with: cnnlab train --resume"):
            train(cfg)
    first = sorted((out / FOLDER).iterdir())
    assert len(first) == 1 and [e.step for e in events(out).Scalars("loss/train")] == [8, 16]
    while int(time.time()) == int(first[0].stat().st_mtime):  # TensorBoard orders event files by the second
        time.sleep(0.05)                                       # in their names (seconds apart in real life)
    train(config.resolve(None, {**tiny_overrides, "train.epochs": 3, "train.tensorboard": True, "out": str(out)}),
          resume=out)
    assert len(list((out / FOLDER).iterdir())) == 2
    assert assert_scalars_equal_metrics(out, batch_size=50) == [8, 16, 24]


def test_off_writes_no_tensorboard_folder(trained_classifier):
    """The session's finished classifier run was trained with train.tensorboard at its default (off)."""
    out = trained_classifier
    assert config.resolve(out / "config.yaml").train.tensorboard is False
    assert (out / "metrics.csv").is_file() and not (out / FOLDER).exists()


def test_without_the_package_the_run_refuses_to_start_in_one_line(tmp_path, fake_cifar_root, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what `import` finds when not installed
    out = tmp_path / "run"
    code = cli.main(["train", *TINY, "--data-root", str(fake_cifar_root), "--tensorboard", "--out", str(out)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and "pip install 'cnnlab[tensorboard]'" in err[0], err
    assert not (out / "metrics.csv").exists() and not (out / "config.yaml").exists()  # nothing computed


@pytest.mark.parametrize("command, required", [("train", []), ("features", ["--data", "d"]),
                                               ("finetune", ["--data", "d"]),
                                               ("transfer", ["--data", "d", "--from", "r"])])
def test_every_classifier_training_command_takes_the_flag(command, required):
    from cnnlab.cli._run import given_settings

    args = cli.parse_args([command, *required, "--tensorboard"])
    assert ("--tensorboard", "train.tensorboard", True) in given_settings(args)
    assert not any(key == "train.tensorboard" for _, key, _ in given_settings(cli.parse_args([command, *required])))


def test_a_style_network_logs_its_loss_and_previews(tmp_path):
    from test_style_network import SCENES, STYLES

    out = tmp_path / "style"
    assert cli.main(["stylize", "train", "--style", str(STYLES / "starry_night.jpg"), "--content-dir",
                     str(SCENES / "train"), "--tensorboard", "--out", str(out), "--no-progress", "--cache-dir",
                     str(tmp_path / "cache"), "image_size=64", "style_size=64", "batch_size=4", "epochs=2",
                     "width=8", "residual_blocks=1", "limit_images=8", "loss_net=efficientnet_lite0",
                     "preview_images=2"]) == 0
    assert assert_scalars_equal_metrics(out, batch_size=4) == [2, 4]
    acc = events(out)
    assert "accuracy/train" not in acc.Tags()["scalars"]  # a style network has no accuracy (NaN in metrics.csv)
    assert [e.step for e in acc.Images("previews")] == [2, 4] and "figures/evolution" in acc.Tags()["images"]
