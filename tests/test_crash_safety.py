"""Crash safety proven by fault injection: runs are killed with SIGKILL at random (seeded) moments, some inside
a write (CNNLAB_SLOW_WRITES pauses in the middle of every file write, so that kills land there), then
continued the way a user would (`--resume`, or the same command for a grid). After every kill no file of the
run is truncated or half-written, at most one epoch of saved work is lost, and the finished run equals an
uninterrupted one with the same seed (CPU: bit for bit in its metrics).

`make test` runs the short version (a few kills per kind); `make test-slow` the full one (20 kills for each of
train, ablation grid, fine-tuning and style training). Both write their counts to
test-artifacts/crash-safety-*.md.
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import SHARED_DATA, TINY
from test_bad_input import _bytes, _photo

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("CNNLAB_ARTIFACTS", ROOT / "test-artifacts"))
TIMING = {"epoch_seconds", "images_per_second", "minutes", "train_seconds", "seconds"}


@dataclass
class Kind:
    """One kind of run: how to start it, how to continue it, where its results are."""

    name: str
    start: list[str]
    resume: list[str] | None  # None: the same command continues it (ablation grids)
    out: Path
    marker: str = "config.yaml"  # once this exists, `resume` continues the run

    def command(self) -> list[str]:
        started = (self.out / self.marker).is_file()
        return self.resume if (started and self.resume) else self.start


@dataclass
class Counts:
    kills: int = 0
    inside_a_write: int = 0
    before_the_first_epoch: int = 0
    resumes: int = 0
    rounds: int = 1  # whole runs made (a run that finished before its kills were spent starts again)
    seconds: float = 0.0
    lost_epochs: list[int] = field(default_factory=list)


def _cnnlab(args: list, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cnnlab", *map(str, args)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _run_dirs(out: Path) -> list[Path]:
    found = {p.parent for p in out.rglob("config.yaml")} | {p.parent for p in out.rglob("style.json")}
    return sorted(found)


def _check_intact(out: Path) -> None:
    """Every result file parses whole (temporary files of an unfinished write are hidden and not results)."""
    import torch
    import yaml
    from PIL import Image
    from safetensors.torch import load_file

    for path in out.rglob("*"):
        if not path.is_file() or path.name.startswith("."):
            continue
        suffix = path.suffix
        if suffix == ".json":
            json.loads(path.read_text())
        elif suffix == ".csv":
            rows = list(csv.reader(path.open()))
            assert all(len(r) == len(rows[0]) for r in rows), f"{path} has a ragged row"
        elif suffix == ".yaml":
            yaml.safe_load(path.read_text())
        elif suffix == ".safetensors":
            load_file(str(path))
        elif suffix == ".pt":
            torch.load(path, weights_only=True)
        elif suffix in (".png", ".jpg"):
            with Image.open(path) as img:
                img.verify()


def _epochs_saved(run_dir: Path) -> tuple[int, int]:
    """(epochs in metrics.csv, epoch of the checkpoint)."""
    import torch

    metrics = run_dir / "metrics.csv"
    rows = len(metrics.read_text().splitlines()) - 1 if metrics.is_file() else 0
    checkpoint = run_dir / "checkpoint.pt"
    epoch = torch.load(checkpoint, weights_only=True)["fit"]["epoch"] if checkpoint.is_file() else 0
    return max(rows, 0), epoch


def kill_and_resume(kind: Kind, kills: int, seed: int, window: float, env: dict,
                    reference: Path | None = None, aim: str | None = None) -> Counts:
    """Start the run, SIGKILL it `kills` times at random moments in (0.3 s, window), continue it after each,
    then let it finish. Checks the files after every kill. A run that finishes before the kills are spent is
    compared with `reference`, then started again from nothing (another round), until all kills have landed.
    `aim`: a glob of temporary files (".checkpoint.pt.*.tmp"); the first kill then waits for such a write to
    be under way instead of a random moment, so that at least one kill surely lands inside a write."""
    import shutil

    rng = random.Random(seed)
    counts = Counts()
    start = time.monotonic()
    while True:
        _one_round(kind, kills, rng, window, env, counts, aim)
        if counts.kills >= kills:
            break
        if reference is not None:
            assert_same_results(reference, kind.out)
        shutil.rmtree(kind.out)
        counts.rounds += 1
    counts.seconds = time.monotonic() - start
    _check_intact(kind.out)
    assert not list(kind.out.rglob(".*.tmp")), "temporary files left after the finished run"
    return counts


def _running_at_a_write(proc: subprocess.Popen, out: Path, aim: str, timeout: float) -> bool:
    """Wait until a temporary file matching `aim` exists under `out` (a write under way); False when the
    process ended first or nothing matched within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if out.is_dir() and any(out.rglob(aim)):
            return True
        time.sleep(0.005)
    return False


def _one_round(kind: Kind, kills: int, rng: random.Random, window: float, env: dict, counts: Counts,
               aim: str | None = None) -> None:
    while True:
        if kind.resume and (kind.out / "summary.json").is_file():
            return  # the last kill came after the run's end (while the process exited): nothing to continue
        command = kind.command()
        proc = _cnnlab(command, env)
        counts.resumes += command is kind.resume
        if counts.kills < kills:
            if aim and counts.kills == 0:  # the aimed kill: inside a write of that kind of file
                running = _running_at_a_write(proc, kind.out, aim, 4 * window)
                assert running, f"{kind.name}: no write of {aim} seen to aim the first kill at"
            else:
                try:
                    proc.wait(timeout=rng.uniform(0.3, window))
                    running = False
                except subprocess.TimeoutExpired:
                    running = True
            if running:
                proc.kill()
                proc.wait()
                temporaries = list(kind.out.rglob(".*.tmp"))
                counts.kills += 1
                counts.inside_a_write += bool(temporaries)
                _check_intact(kind.out)
                for run_dir in _run_dirs(kind.out):
                    rows, saved = _epochs_saved(run_dir)
                    counts.before_the_first_epoch += saved == 0
                    counts.lost_epochs.append(rows - saved)
                    assert rows - saved <= 1, f"{run_dir}: {rows} epochs in metrics.csv, checkpoint at {saved}"
                continue
        _, err = proc.communicate(timeout=900)
        if proc.returncode == 0:
            return
        raise AssertionError(f"{kind.name} failed after {counts.kills} kills: {err[-2000:]}")


def _metrics(run_dir: Path) -> list[dict]:
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def assert_same_results(reference: Path, resumed: Path) -> None:
    """The same metrics (all but timings), the same test figure and the same best weights."""
    from safetensors.torch import load_file

    ref_dirs, got_dirs = _run_dirs(reference), _run_dirs(resumed)
    assert [d.relative_to(reference) for d in ref_dirs] == [d.relative_to(resumed) for d in got_dirs]
    for ref, got in zip(ref_dirs, got_dirs):
        assert _metrics(ref) == _metrics(got), ref.name
        a, b = json.loads((ref / "summary.json").read_text()), json.loads((got / "summary.json").read_text())
        for key in ("test_accuracy", "best_val_accuracy", "final_loss", "best_epoch", "epochs"):
            assert a.get(key) == b.get(key), (ref.name, key)
        wa, wb = load_file(str(ref / "best.safetensors")), load_file(str(got / "best.safetensors"))
        assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa), ref.name


def _photos(folder: Path, classes: int = 2, per_class: int = 6) -> Path:
    for c in range(classes):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (folder / f"class{c}" / f"{i}.jpg").write_bytes(_bytes(_photo((60 + i + 7 * c, 48)), "JPEG"))
    return folder


def make_kinds(base: Path, cifar: Path, which: list[str]) -> dict[str, tuple[Kind, Kind]]:
    """(reference, tortured) pairs of each kind, with their own output folders."""
    grid = base / "grid.yaml"
    grid.write_text("name: tiny\nbase: {model: {name: cnn4, widths: [8, 16], fc_width: 32}}\n"
                    "runs:\n  - name: adam\n    set: {optim.name: adam, optim.lr: 0.003}\n"
                    "  - name: sgd\n    set: {optim.name: sgd, optim.lr: 0.05}\n")
    photos = _photos(base / "photos")
    style = SHARED_DATA / "images" / "styles" / "the_scream.jpg"

    def kinds(tag: str) -> dict[str, Kind]:
        out = base / tag
        return {
            "train": Kind("train", ["train", *TINY, "--epochs", "4", "--data-root", cifar, "--out", out / "train"],
                          ["train", "--resume", out / "train", "--data-root", cifar, "--no-progress"], out / "train"),
            "ablate": Kind("ablate", ["ablate", grid, "--out", out / "ablate", "--no-progress", f"data.root={cifar}",
                                      "data.val_size=100", "train.batch_size=50", "train.epochs=3",
                                      "data.download=false"], None, out / "ablate"),
            "finetune": Kind("finetune", ["finetune", "--data", photos, "--epochs", "3", "--batch-size", "4",
                                          "--val-fraction", "0.34", "--no-progress", "--cache-dir", base / "cache",
                                          "--out", out / "finetune", "transfer.head_epochs=0",
                                          "data.image_size=96"],
                             ["finetune", "--data", photos, "--resume", out / "finetune", "--cache-dir",
                              base / "cache", "--no-progress"], out / "finetune"),
            "style": Kind("style", ["stylize", "train", "--style", style, "--content-dir", photos, "--image-size",
                                    "64", "--style-size", "64", "--batch-size", "4", "--epochs", "4", "--width", "8",
                                    "--residual-blocks", "1", "--loss-net", "efficientnet_lite0", "--cache-dir",
                                    base / "cache", "--no-progress", "--out", out / "style"],
                          ["stylize", "train", "--resume", out / "style", "--cache-dir", base / "cache",
                           "--no-progress"], out / "style", marker="style.json"),
        }

    reference, tortured = kinds("reference"), kinds("killed")
    return {k: (reference[k], tortured[k]) for k in which}


@pytest.fixture(scope="module")
def references(tmp_path_factory, fake_cifar_root):
    """`references(kind)`: (the uninterrupted run of that kind, the seconds its command took), each made once
    per module when first asked for: the tests of this file compare their interrupted runs with the same ones."""
    base = tmp_path_factory.mktemp("references")
    made: dict[str, tuple[Kind, float]] = {}

    def get(name: str) -> tuple[Kind, float]:
        if name not in made:
            reference = make_kinds(base, fake_cifar_root, [name])[name][0]
            began = time.monotonic()
            proc = _cnnlab(reference.start, {**os.environ, "OMP_NUM_THREADS": "1"})
            _, err = proc.communicate(timeout=900)
            assert proc.returncode == 0, err[-2000:]
            made[name] = reference, time.monotonic() - began
        return made[name]

    return get


def torture(tmp_path: Path, cifar: Path, plan: dict[str, int], seed: int, report: str, references,
            aim: str | None = None) -> dict[str, Counts]:
    """Each kind's kills and resumes (kill_and_resume), two kinds side by side: their processes compute with one
    thread each, so on 2 cores two kinds take about the time of one. The references are made first, one at a
    time, so that each window is an uninterrupted run's span on an idle machine."""
    from concurrent.futures import ThreadPoolExecutor

    env = {**os.environ, "CNNLAB_SLOW_WRITES": "0.15", "OMP_NUM_THREADS": "1"}
    kinds = make_kinds(tmp_path, cifar, list(plan))
    spans = {name: references(name) for name in plan}  # kills land anywhere in an uninterrupted run's span

    def one(name: str) -> Counts:
        (reference, window), tortured = spans[name], kinds[name][1]
        counts = kill_and_resume(tortured, plan[name], seed, window, env, reference.out, aim)
        assert_same_results(reference.out, tortured.out)
        return counts

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(one, name) for name in plan}
        results = {name: future.result() for name, future in futures.items()}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    lines = ["| kind | kills | inside a write | before the first epoch | resumes | whole runs | epochs lost at most "
             "| seconds |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {k} | {c.kills} | {c.inside_a_write} | {c.before_the_first_epoch} | {c.resumes} | {c.rounds} | "
              f"{max(c.lost_epochs, default=0)} | {c.seconds:.0f} |" for k, c in results.items()]
    (ARTIFACTS / report).write_text(f"# Crash safety (tests/test_crash_safety.py, seed {seed})\n\n"
                                    + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


def test_killed_runs_resume_to_the_same_result(tmp_path, fake_cifar_root, references):
    """The first kill of each kind waits for a checkpoint write to be under way (the rest are random), so the
    short version too proves a kill inside a write loses nothing: the old checkpoint stays whole. Style
    training gets that one kill here (its process start costs seconds), and 20 in the slow version."""
    results = torture(tmp_path, fake_cifar_root, {"train": 3, "style": 1}, seed=0, report="crash-safety-fast.md",
                      references=references, aim=".checkpoint.pt.*.tmp")
    assert all(c.kills == n for c, n in zip(results.values(), (3, 1)))
    assert all(c.inside_a_write >= 1 for c in results.values()), results


def test_ctrl_c_at_any_moment_is_one_line_and_the_run_continues(tmp_path, fake_cifar_root, references):
    """SIGINT to the process group (what a terminal's Ctrl-C does) at 4 moments: during the imports, at
    start-up, inside a checkpoint write (training: it says how to continue, and the old checkpoint stays
    whole), then at a seeded random moment of an uninterrupted run's span: each time the command says in one
    line that it was interrupted (exit code 130, no traceback), every file is whole, and the run then
    continues to the result of an uninterrupted one. A run that ends before the interrupts are spent is
    compared with the reference and started again."""
    import shutil
    import signal

    interrupted = make_kinds(tmp_path, fake_cifar_root, ["train"])["train"][1]
    reference, window = references("train")
    rng = random.Random(2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CNNLAB_SLOW_WRITES": "0.15"}
    moments = [0.3, 1.0, ".checkpoint.pt.*.tmp", None]  # imports, start-up, a write, random
    interrupts = 0
    while interrupts < len(moments):
        if (interrupted.out / "summary.json").is_file():
            assert_same_results(reference.out, interrupted.out)
            shutil.rmtree(interrupted.out)
        moment = moments[interrupts]
        proc = subprocess.Popen([sys.executable, "-m", "cnnlab", *map(str, interrupted.command())], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        if isinstance(moment, str):  # aimed: once a write of that kind of file is under way
            running = _running_at_a_write(proc, interrupted.out, moment, 4 * window)
            assert running, f"no write of {moment} seen to aim the interrupt at"
        else:
            try:
                proc.wait(timeout=moment if moment is not None else rng.uniform(1.5, window))
                running = False
            except subprocess.TimeoutExpired:
                running = True
        if running:
            os.killpg(proc.pid, signal.SIGINT)
            interrupts += 1
        _, err = proc.communicate(timeout=300)
        lines = [line for line in err.splitlines() if line.strip()]
        if proc.returncode == 0:
            assert (interrupted.out / "summary.json").is_file()  # it had finished as the signal came
        else:
            assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
            assert lines[-1].startswith("cnnlab") and "interrupted" in lines[-1], err[-2000:]
            if isinstance(moment, str):  # inside training: the line says how to continue
                assert "continue with: cnnlab train --resume" in lines[-1], lines[-1]
        _check_intact(interrupted.out)
        assert not list(interrupted.out.rglob(".*.tmp")), "an interrupted write left its temporary file"
    if not (interrupted.out / "summary.json").is_file():
        proc = _cnnlab(interrupted.command(), env)
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-2000:]
    assert_same_results(reference.out, interrupted.out)


@pytest.mark.slow
def test_twenty_kills_of_every_kind_of_run(tmp_path, fake_cifar_root, references):
    plan = {"train": 20, "ablate": 20, "finetune": 20, "style": 20}
    results = torture(tmp_path, fake_cifar_root, plan, seed=1, report="crash-safety-full.md", references=references)
    assert all(results[k].kills == n for k, n in plan.items())
    assert sum(c.inside_a_write for c in results.values()) >= 5  # the slow writes do put kills inside writes
