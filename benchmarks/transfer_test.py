"""The course's transfer tasks 2-4 on a test split no choice sees, over seeds: which way wins on unseen photos?

    python benchmarks/transfer_test.py [--seeds 0 1 2] [--source RUN]

Data: ../shared/data/scenes6 (6 classes; its 450 training photos lose 20 % to a test split carved once per seed,
stratified, before anything trains; its 180 validation photos choose the best epoch, the plateau steps and early
stopping). Every way runs as the shipped presets do (configs/transfer.yaml, features.yaml, finetune.yaml), as a
whole `cnnlab` process; seed s sets both the training seed and the split seed (`--seed s data.split_seed=s`), so
each seed carves a different test split, shared by the four ways (the comparison between ways is paired):

- task 2, a new head on a frozen CIFAR-10 network (`cnnlab transfer --from SOURCE`; SOURCE: --source, else a
  3-minute `cnnlab train --config course-cnn` run trained once here);
- task 2, ImageNet features + softmax (`cnnlab features`, efficientnet_lite0);
- task 3, fine-tuning at a constant low learning rate, no plateau, no augmentation, no early stopping (the
  overrides `cnnlab course` gives task 3, at the preset's 10 epochs);
- task 4, the `finetune` preset: reduce-on-plateau, augmentation, early stopping.

Reported: best validation accuracy (what the course reported) and test accuracy (the weights chosen on validation,
measured once), mean ± std over the seeds and per seed, and the per-seed test difference of each fine-tuning way
against features + softmax. Writes benchmarks/results/transfer-test-<CPU class>.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from _common import cnnlab_process, code_versions_note, cpu_banner, save_result, table, train_process

ROOT = Path(__file__).resolve().parents[1]
SCENES = ROOT.parent / "shared" / "data" / "scenes6"
COURSE_TASK3 = ["schedule.name=constant", "data.augment.crop_scale=1.0", "data.augment.flip=false",
                "data.augment.color_jitter=0", "transfer.early_stopping=0"]  # as src/cnnlab/course/plan.py
WAYS = {  # label: (name, command without data/seed/cache)
    "task 2: CIFAR-10 CNN, frozen, new head (transfer)": ("transfer", ["transfer", "--from", "{source}"]),
    "task 2: ImageNet features + softmax (features)": ("features", ["features"]),
    "task 3: fine-tuning, constant low lr, no augmentation": ("finetune-plain", ["finetune", *COURSE_TASK3]),
    "task 4: fine-tuning + plateau + augmentation (finetune preset)": ("finetune", ["finetune"]),
}
REFERENCE = "task 2: ImageNet features + softmax (features)"


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * std:.2f} %"


def source_run(args) -> Path:
    """The CIFAR-10 network task 2 transfers from: --source, or a 3-minute course-cnn run trained once."""
    if args.source:
        return Path(args.source)
    train_process("source-course-cnn-3min", ROOT / "configs" / "course-cnn.yaml", 0, [], Path(args.out), False,
                  ["--minutes", "3"])
    return Path(args.out) / "source-course-cnn-3min"


def run_way(name: str, command: list[str], seed: int, source: Path, common: list[str], out: str) -> dict:
    args = [str(source) if a == "{source}" else a for a in command]
    return cnnlab_process(f"{name}-seed{seed}", [*args, "--data", str(SCENES), "--seed", str(seed),
                                                 f"data.split_seed={seed}", *common], out)


def verdict(diffs: list[float]) -> str:
    """Whether the seeds separate two ways: above (or below) on every seed, else not separated, said plainly."""
    above, below = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    ties = len(diffs) - above - below
    if above == len(diffs) or below == len(diffs):
        return f"{'above' if above else 'below'} on every seed"
    return f"not separated: above on {above}, below on {below}, equal on {ties} of {len(diffs)} seeds"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--source", help="a trained CIFAR-10 run for task 2's new head (default: train one)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-transfer-test"))
    args = parser.parse_args()
    os.environ.setdefault("CNNLAB_DATA", str(ROOT.parent / "shared" / "data"))
    banner = cpu_banner()
    print(banner, flush=True)
    common = ["--cache-dir", str(Path(args.out) / "cache"), "--threads", "2"]
    source = source_run(args)
    results = {label: [run_way(name, command, s, source, common, args.out) for s in args.seeds]
               for label, (name, command) in WAYS.items()}
    rows = []
    for label, runs in results.items():
        rows.append([label, mean_std([r["best_val_accuracy"] for r in runs]),
                     mean_std([r["test_accuracy"] for r in runs]),
                     " / ".join(f"{100 * r['test_accuracy']:.1f}" for r in runs),
                     f"{statistics.mean(r['test_images'] for r in runs):.0f}",
                     f"{statistics.mean(r['process_seconds'] for r in runs):.0f}"])
    diffs = []
    for label, runs in results.items():
        if label == REFERENCE:
            continue
        d = [r["test_accuracy"] - f["test_accuracy"] for r, f in zip(runs, results[REFERENCE])]
        diffs.append([label, " / ".join(f"{100 * x:+.1f}" for x in d), f"{100 * statistics.mean(d):+.2f}",
                      verdict(d)])
    text = "\n".join([
        f"# The course's transfer tasks on a test split ({len(args.seeds)} seeds)", "", banner, "",
        f"Written by `python benchmarks/transfer_test.py --seeds {' '.join(map(str, args.seeds))}` "
        f"(scenes6; task 2's source: {source.name}).", "",
        "## Accuracy: best validation epoch (what the course reported) and test (chosen on validation, measured once)",
        "", table(["way", "best val accuracy", "test accuracy", "test per seed (%)", "test photos", "seconds a run"],
                  rows), "",
        "## Test accuracy against features + softmax, per seed (paired: the same test photos)", "",
        table(["way", "difference per seed (points)", "mean", "verdict"], diffs), "",
        code_versions_note()])
    print("\n" + text)
    print(f"wrote {save_result('transfer-test', text + chr(10))}")


if __name__ == "__main__":
    main()
