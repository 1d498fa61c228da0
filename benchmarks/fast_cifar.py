"""The fast CIFAR-10 recipe measured: targets over seeds, an ablation of its tricks, fp32 vs bf16, and the
course recipe given the same training time.

    python benchmarks/fast_cifar.py                      # everything (hours on a 2-core CPU)
    python benchmarks/fast_cifar.py --only targets --configs fast89 --seeds 0 1 2
    python benchmarks/fast_cifar.py --only ablation --ablate-config fast89
    python benchmarks/fast_cifar.py --only precision
    python benchmarks/fast_cifar.py --baseline course

Every run is a real `cnnlab train` process; its minutes are the whole process's wall-clock time (imports,
data loading, whitening, training and the final test evaluation). Runs land in --out and finished ones are
reused, so the script can be interrupted and started again; --fresh re-runs them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import table

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"fast89": (0.89, 2.0), "fast93": (0.93, 8.0), "fast94": (0.94, 15.0)}

# Each trick of the recipe removed (or, marked +, added) one at a time: config overrides on --ablate-config.
SGD_RECIPE = ["optim.name=sgd", "optim.lr=1.5", "optim.lr_batch_size=1024", "optim.weight_decay=1.33e-3",
              "model.scale=0.11111", "model.head_unit_std=false", "model.bias_lr_scale=64", "model.head_lr_scale=1",
              "schedule.warmup_fraction=0.23", "schedule.start_factor=0.2", "schedule.final_factor=0.07"]
ABLATIONS = {
    "full recipe": [],
    "no patch whitening (trainable 1st conv)": ["model.whiten=false"],
    "no identity (dirac) init": ["model.dirac=false"],
    "BN scale trained": ["model.frozen_bn_scale=false"],
    "airbench94's Nesterov SGD instead of Muon": SGD_RECIPE,
    "Muon without weight renormalization": ["optim.muon_normalize=false"],
    "no label smoothing": ["train.label_smoothing=0"],
    "random flips (not alternating)": ["data.augment.flip_mode=random"],
    "no translation": ["data.augment.translate=0"],
    "no test-time augmentation": ["train.tta=none"],
    "batch 1000 instead of 500": ["train.batch_size=1000"],
    "+ wide first group (64, not 32 filters)": ["model.widths=[64,96,192]"],
    "+ lookahead (every 5 steps from epoch 1)": ["train.lookahead.every=5", "train.lookahead.start_epochs=1"],
    "no progressive resizing (epoch 1 at 32 px too)": ["data.low_res_size=0", "data.low_res_epochs=0"],
}


def run(name: str, config: str, seed: int, overrides: list[str], out: Path, fresh: bool) -> dict:
    """One `cnnlab train` process (or its earlier result): test accuracy and whole-process minutes."""
    run_dir = out / name
    record = run_dir / "bench.json"
    config_file = ROOT / "configs" / f"{config}.yaml"
    # A result is reused only for the same config file content and overrides.
    key = hashlib.sha1((config_file.read_text() + repr(overrides) + str(seed)).encode()).hexdigest()[:12]
    if record.is_file() and not fresh:
        cached = json.loads(record.read_text())
        if cached.get("key") == key:
            return cached
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [sys.executable, "-m", "cnnlab", "train", "--config", str(config_file),
           "--seed", str(seed), "--out", str(run_dir), "--no-progress", *overrides]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    minutes = (time.perf_counter() - start) / 60
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    result = {"name": name, "key": key, "config": config, "seed": seed, "overrides": overrides, "minutes": minutes,
              "test_accuracy": summary["test_accuracy"], "train_seconds": summary["train_seconds"],
              "epochs": summary["epochs"]}
    record.write_text(json.dumps(result, indent=2))
    print(f"  {name}: {100 * result['test_accuracy']:.2f} % in {minutes:.2f} min", flush=True)
    return result


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f} %"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f} %"


def targets(args, out: Path) -> str:
    rows = []
    for config in args.configs:
        results = [run(f"{config}-s{s}", config, s, [], out, args.fresh) for s in args.seeds]
        accs = [r["test_accuracy"] for r in results]
        minutes = [r["minutes"] for r in results]
        goal_acc, goal_min = TARGETS.get(config, (float("nan"), float("nan")))
        met = statistics.mean(accs) >= goal_acc and max(minutes) <= goal_min
        rows.append([config, len(results), mean_std(accs), f"{statistics.mean(minutes):.2f} (max {max(minutes):.2f})",
                     f"≥ {100 * goal_acc:.0f} % in ≤ {goal_min:g} min", "yes" if met else "no"])
    return table(["config", "seeds", "test accuracy", "minutes", "target", "met"], rows)


def ablation(args, out: Path) -> str:
    rows, base = [], None
    for index, (label, overrides) in enumerate(ABLATIONS.items()):
        # The full recipe's runs are the plain config's runs (shared with the targets section).
        names = [f"{args.ablate_config}-s{s}" if index == 0 else f"{args.ablate_config}-ablate-{index}-s{s}"
                 for s in args.ablate_seeds]
        results = [run(n, args.ablate_config, s, overrides, out, args.fresh) for n, s in zip(names, args.ablate_seeds)]
        acc = statistics.mean(r["test_accuracy"] for r in results)
        minutes = statistics.mean(r["minutes"] for r in results)
        base = base if base is not None else acc
        rows.append([label, " ".join(overrides) or "-", mean_std([r["test_accuracy"] for r in results]),
                     f"{100 * (acc - base):+.2f}", f"{minutes:.2f}"])
    return table(["variant", "overrides", "test accuracy", "vs full (points)", "minutes"], rows)


def precision(args, out: Path) -> str:
    rows = []
    for label, overrides in (("bf16 + channels_last", []),
                             ("fp32", ["train.precision=fp32", "train.channels_last=false"])):
        # The bf16 runs are the plain config's runs (shared with the targets section).
        results = [run(f"{args.ablate_config}{'-fp32' if overrides else ''}-s{s}", args.ablate_config, s,
                       overrides, out, args.fresh) for s in args.seeds]
        rows.append([label, ", ".join(str(s) for s in args.seeds), mean_std([r["test_accuracy"] for r in results]),
                     f"{statistics.mean(r['minutes'] for r in results):.2f}"])
    return table(["precision", "seeds", "test accuracy", "minutes"], rows)


def baseline_course(args, out: Path) -> str:
    """fast89 and the course recipe, each given the same training time, measured one after the other."""
    fast = run("fast89-s0", "fast89", 0, [], out, args.fresh)
    budget = fast["train_seconds"] / 60
    course = run("course-same-time-s0", "course-cnn", 0, [f"train.time_budget_minutes={budget:.4f}"], out,
                 args.fresh)
    rows = [["fast89 (fastnet)", f"{100 * fast['test_accuracy']:.2f} %", f"{fast['train_seconds'] / 60:.2f}",
             f"{fast['minutes']:.2f}", f"{fast['epochs']}"],
            ["course (cnn4 + BN + dropout + aug, RMSprop 1e-3, batch 512)", f"{100 * course['test_accuracy']:.2f} %",
             f"{course['train_seconds'] / 60:.2f}", f"{course['minutes']:.2f}", f"{course['epochs']}"]]
    note = (f"\nSame training time ({budget:.2f} min): fast89 {100 * fast['test_accuracy']:.2f} % vs course "
            f"{100 * course['test_accuracy']:.2f} % test accuracy "
            f"({100 * (fast['test_accuracy'] - course['test_accuracy']):+.1f} points).")
    return table(["recipe", "test accuracy", "training minutes", "process minutes", "epochs"], rows) + note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--only", choices=["targets", "ablation", "precision", "baseline"], nargs="+")
    parser.add_argument("--configs", nargs="+", default=list(TARGETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ablate-config", default="fast89")
    parser.add_argument("--ablate-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--baseline", choices=["course"], help="also run the course recipe for fast89's time")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-fast"))
    parser.add_argument("--fresh", action="store_true", help="re-run runs that already have results")
    args = parser.parse_args()
    os.environ.setdefault("CNNLAB_DATA", str(ROOT.parent / "shared" / "data"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sections = args.only or ["targets", "ablation", "precision"] + (["baseline"] if args.baseline else [])
    if args.baseline and "baseline" not in sections:
        sections.append("baseline")
    report = []
    for section in sections:
        print(f"\n## {section}", flush=True)
        text = {"targets": targets, "ablation": ablation, "precision": precision, "baseline": baseline_course}[
            section](args, out)
        print(text, flush=True)
        report.append(f"## {section}\n\n{text}\n")
    (out / "fast_cifar.md").write_text("\n".join(report))
    print(f"\nwritten to {out / 'fast_cifar.md'}")


if __name__ == "__main__":
    main()
