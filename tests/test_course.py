"""`cnnlab course`: the plan, its bad input (refused before any run starts), and the whole pipeline on tiny data,
killed halfway and resumed (slow: about 8 minutes on 2 cores, `make test-slow`)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnlab.course import CourseSettings, build, describe
from cnnlab.course.plan import minimum_minutes
from conftest import SHARED_DATA
from test_bad_input import _bytes, _photo, assert_one_line_error, run

STYLE = SHARED_DATA / "images" / "styles" / "the_scream.jpg"


def _buildings(root: Path, classes: int = 3, train: int = 6, val: int = 3) -> Path:
    """A tiny dataset in ImageFolder layout with train/ and val/ splits."""
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            folder = root / split / f"building{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (folder / f"{i}.jpg").write_bytes(_bytes(_photo((64 + 5 * c + i, 56)), "JPEG"))
    return root


def _settings(tmp_path: Path, cifar: Path, **kw) -> CourseSettings:
    return CourseSettings(out=str(tmp_path / "course"), terrassa=str(_buildings(tmp_path / "buildings")),
                          styles=[str(STYLE)], data_root=str(cifar), limit_train=300, style_size=64, **kw)


def test_the_plan_covers_the_five_tasks_within_the_budget(tmp_path, fake_cifar_root):
    settings = _settings(tmp_path, fake_cifar_root, minutes=60)
    steps, inputs = build(settings)
    assert {s.task for s in steps} == {f"task{i}" for i in range(1, 6)}
    planned = sum(s.minutes for s in steps) + 0.1 * sum(not s.budgeted for s in steps)
    assert planned <= 60 * 0.95  # room for process starts and the report
    assert all(s.minutes >= s.min_minutes > 0 for s in steps)
    cnn = next(s for s in steps if s.name == "t1-cnn-bn-dropout-aug")
    assert "--minutes" in cnn.command() and "batchnorm: true" in cnn.config_yaml
    text = describe(steps, settings, inputs)
    assert "t4-finetune-plateau-aug" in text and "60 minutes" in text
    full, _ = build(_settings(tmp_path / "f", fake_cifar_root, full=True))
    assert not any("--minutes" in s.command() for s in full) and any(s.name == "t1-fc-200" for s in full)


def test_bad_input_is_refused_before_any_run_starts(tmp_path, fake_cifar_root, capsys):
    buildings = _buildings(tmp_path / "b")
    common = ["course", "--out", tmp_path / "c", "--data-root", fake_cifar_root, "--limit-train", "300",
              "--style-size", "64", "--styles", STYLE]
    need = minimum_minutes(build(_settings(tmp_path / "m", fake_cifar_root, minutes=60))[0])
    line = assert_one_line_error(*run([*common, "--terrassa", buildings, "--minutes", "1"], capsys)[::2],
                                 "too small", "at least")
    assert re.search(r"at least (\d+\.\d) minutes", line).group(1) == f"{need:.1f}"
    nowhere = tmp_path / "flat"
    nowhere.mkdir()
    (nowhere / "notes.txt").write_text("no photos")
    assert_one_line_error(*run([*common, "--terrassa", nowhere], capsys)[::2], "no known layout")
    text = tmp_path / "painting.jpg"
    text.write_text("not a painting")
    assert_one_line_error(*run([*common[:-2], "--terrassa", buildings, "--styles", text], capsys)[::2],
                          "painting.jpg")
    assert not (tmp_path / "c" / "runs").exists()


def assert_figures_are_the_runs(figures: dict, runs: Path) -> None:
    """Every figure of course.json is the one its run's summary.json holds: best validation accuracy (tasks
    2-4, with the test accuracy beside it), test accuracy (task 1), the style losses (task 5)."""
    checked = 0
    for task in ("task1", "task2", "task3", "task4", "task5"):
        for key, figure in figures[task].items():
            summary = json.loads((runs / figure["run"] / "summary.json").read_text())
            expected = {"val_accuracy": summary.get("best_val_accuracy"), "test_accuracy": summary.get("test_accuracy"),
                        "final_loss": summary.get("final_loss"),
                        "style_loss": (summary.get("final") or {}).get("style_loss")}
            measured = [m for m in figure if m in expected]
            assert measured, (task, key, figure)
            for metric in measured:
                assert figure[metric] == expected[metric], (task, key, metric)
                checked += 1
    assert checked >= 5


def test_course_figures_are_read_from_the_runs(tmp_path):
    """course.json as `cnnlab course` writes it (runner.finish) over run folders of every task: each figure is
    its run's own."""
    import yaml

    from cnnlab.course import runner

    runs = tmp_path / "course" / "runs"

    def run(name, config, summary):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.yaml").write_text(yaml.safe_dump(config))
        (runs / name / "summary.json").write_text(json.dumps({"name": name, **summary}))
        (runs / name / "metrics.csv").write_text("epoch,val_accuracy\n1,0.5\n")

    cnn = {"model": {"name": "cnn4", "batchnorm": True, "dropout": [0.25, 0.25, 0.5]},
           "data": {"augment": {"translate": 0.1, "flip": True}}}
    run("t1-cnn-bn-dropout-aug", cnn, {"kind": "train", "test_accuracy": 0.6311, "best_val_accuracy": 0.64})
    run("t2-features", {"model": {"name": "efficientnet_lite0"}},
        {"kind": "features", "val_accuracy": 0.1, "best_val_accuracy": 0.9122, "test_accuracy": 0.8712})
    run("t3-finetune", {"schedule": {"name": "constant"}},
        {"kind": "finetune", "best_val_accuracy": 0.8833, "test_accuracy": 0.8611})
    run("t4-finetune-plateau-aug", {"schedule": {"name": "plateau"}, "data": {"augment": {"flip": True}}},
        {"kind": "finetune", "best_val_accuracy": 0.9444, "test_accuracy": 0.85})
    run("t5-style-network", {}, {"kind": "style_network", "final_loss": 3.25})
    settings = CourseSettings(out=str(tmp_path / "course"))
    steps = [type("Step", (), {"name": p.name, "minutes": 1.0})() for p in sorted(runs.iterdir())]
    inputs = {"terrassa": "buildings", "layout": "imagefolder", "stand_in": False, "images": 9}
    figures = runner.finish(settings, steps, inputs, seconds=12.0)
    assert json.loads((tmp_path / "course" / "course.json").read_text()) == figures
    assert figures["task2"]["features_softmax"]["val_accuracy"] == 0.9122  # the best epoch's, not val_accuracy
    assert set(figures["task3"]) == {"finetune"} and set(figures["task4"]) == {"finetune_plateau_aug"}
    assert_figures_are_the_runs(figures, runs)


@pytest.mark.slow
def test_the_whole_course_on_tiny_data_killed_halfway_and_resumed(tmp_path, fake_cifar_root):
    settings = _settings(tmp_path, fake_cifar_root, minutes=60)
    minutes = minimum_minutes(build(settings)[0]) + 0.5
    out = Path(settings.out)
    cmd = [sys.executable, "-m", "cnnlab", "course", "--minutes", f"{minutes:.2f}", "--out", str(out),
           "--terrassa", settings.terrassa, "--styles", str(STYLE), "--data-root", str(fake_cifar_root),
           "--limit-train", "300", "--style-size", "64"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    state = out / "course-state.json"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and first.poll() is None:
        if state.is_file() and len(json.loads(state.read_text())["finished"]) >= 4:
            break
        time.sleep(0.5)
    assert first.poll() is None, first.stderr.read()[-3000:]
    os.killpg(first.pid, signal.SIGKILL)  # the course and the step it was running
    first.wait()
    began = time.monotonic()
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "finished, skipped" in second.stdout
    assert time.monotonic() - began <= minutes * 60 * 1.1
    figures = json.loads((out / "course.json").read_text())
    assert set(figures) >= {"task1", "task2", "task3", "task4", "task5"}
    assert_figures_are_the_runs(figures, out / "runs")
    assert figures["task2"]["features_softmax"]["published"] == pytest.approx(0.898)
    html = (out / "report" / "index.html").read_text()
    for task in range(1, 6):
        assert f'id="task{task}"' in html
    filled = ["fc_100", "cnn", "cnn_aug", "cnn_aggressive_dropout", "cnn_bn", "cnn_bn_dropout_aug"]
    assert set(filled) <= set(figures["task1"])
    for task, keys in (("task2", ["cifar_head", "features_softmax"]), ("task3", ["finetune"]),
                       ("task4", ["finetune_plateau_aug"]), ("task5", ["optimize", "style_network"])):
        assert set(keys) <= set(figures[task]), (task, figures[task])
        assert all(isinstance(next(iter(figures[task][k].values())), float) for k in keys)
