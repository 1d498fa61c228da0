"""Test accuracy against time budget: the fast recipe and the course recipe, given the same minutes.

    python benchmarks/budget.py                                 # 1, 2, 5, 10, 15 minutes (about 1.5 h)
    python benchmarks/budget.py --minutes 1 2 --seeds-at-5 0    # a quick look

Every run is a whole `cnnlab train --config CONFIG --minutes M --seed S` process (the budget covers setup,
training, the final test-time-augmented evaluation and writing the run directory; minutes below are the
whole process, imports included). 1 seed per budget, 3 seeds at 5 minutes. The course recipe is the
course's CNN (configs/course-cnn.yaml: cnn4 + batch norm + dropout + augmentation, RMSprop) given the same
budgets; its schedule has no end (constant lr with Keras decay), so a budget only sets its length.
Writes benchmarks/results/budget-<CPU class>.md and .png (accuracy against minutes, CPU class in the title).
Runs land in --out and are reused only for the same config text, overrides, seed and code version.
CNNLAB_BENCH_ACCEPT_CODE=<tree>[,<tree>] also reuses runs of those earlier code versions (for a change
that cannot move a figure); the results name every code version their runs came from.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from _common import code_versions_note, cpu_banner, cpu_class, table, train_process

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"fast": "fast89", "course": "course-cnn"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 2, 5, 10, 15])
    parser.add_argument("--fast-config", default=RECIPES["fast"], help="the fast recipe (default fast89)")
    parser.add_argument("--course-config", default=RECIPES["course"])
    parser.add_argument("--seeds-at-5", type=int, nargs="+", default=[0, 1, 2], help="seeds of the 5-minute runs")
    parser.add_argument("--skip-course", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-budget"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("CNNLAB_DATA", str(ROOT.parent / "shared" / "data"))
    banner = cpu_banner()
    print(banner, flush=True)
    recipes = [("fast", args.fast_config)] + ([] if args.skip_course else [("course", args.course_config)])
    results: dict[str, list[tuple[float, list[dict]]]] = {}
    for label, config in recipes:
        for minutes in args.minutes:
            seeds = args.seeds_at_5 if minutes == 5 else [0]
            runs = [train_process(f"{config}-{minutes:g}min-s{s}", ROOT / "configs" / f"{config}.yaml", s, [],
                                  args.out, args.fresh, ["--minutes", f"{minutes:g}"]) for s in seeds]
            results.setdefault(label, []).append((minutes, runs))
    rows = []
    for label, config in recipes:
        for minutes, runs in results[label]:
            accs = [r["test_accuracy"] for r in runs]
            acc = f"{100 * statistics.mean(accs):.2f} %" + (
                f" ± {100 * statistics.stdev(accs):.2f}" if len(accs) > 1 else "")
            wall = [r["minutes"] for r in runs]
            rows.append([f"{label} ({config})", f"{minutes:g}", len(runs), acc, f"{max(wall):.2f}",
                         f"{statistics.mean(r['epochs_planned'] for r in runs):.2f}",
                         ", ".join(sorted({r['precision'] for r in runs}))])
    text = table(["recipe", "budget (min)", "seeds", "test accuracy", "process minutes (max)", "epochs",
                  "precision"], rows)
    print("\n" + text)
    klass = cpu_class()
    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    md = results_dir / f"budget-{klass}.md"
    md.write_text(f"# Test accuracy against time budget ({klass})\n\n{banner}\n\nWritten by "
                  f"`python benchmarks/budget.py` (whole `cnnlab train --minutes M` processes). "
                  f"{code_versions_note()}\n\n{text}\n")
    plot(results, recipes, results_dir / f"budget-{klass}.png", f"CIFAR-10 test accuracy by budget, {klass} CPU")
    print(f"\nwritten to {md} and {md.with_suffix('.png')}")


def plot(results, recipes, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, config in recipes:
        points = [(m, 100 * statistics.mean(r["test_accuracy"] for r in runs)) for m, runs in results[label]]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{label} ({config})")
    ax.set_xlabel("budget (minutes, whole process)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
