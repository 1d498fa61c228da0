"""Time budgets: does a `cnnlab train --minutes M` process end in its minutes, and what does it reach?

    python benchmarks/budget.py                         # planned vs actual: course-cnn 3 min; mlp, cnn4, fastnet 1 min
    python benchmarks/budget.py --minutes 1 3 10        # every recipe at these budgets (budget-time-1-3-10min-*.md)
    python benchmarks/budget.py --anneal 1 --seeds 0 1  # which annealing a budget gives constant-lr recipes
    python benchmarks/budget.py --anneal 3 --variants constant default   # its effect at 3 minutes
    python benchmarks/budget.py --curve                 # test accuracy against budget, fast89 vs course-cnn

Every run is a whole `cnnlab train --config CONFIG --minutes M` process, timed from outside (the budget covers
the interpreter's start, setup, calibration, training, validation, the final test-time-augmented evaluation,
writing the run directory and the exit). The recipes: `mlp` is the course's 2-FC network (task 1's fc-100 run
of configs/course-task1.yaml), `cnn4` the course's CNN (configs/course-cnn.yaml: cnn4 + batch norm + dropout +
augmentation, RMSprop at a constant lr), `fastnet` the fast recipe (configs/fast89.yaml).

Writes benchmarks/results/budget-time-<CPU class>.md (the default: planned vs actual seconds, share of the
budget, steps planned and trained, re-plans, rows of metrics with a validation accuracy, accuracy),
budget-anneal-<CPU class>.md (--anneal 1: the recipe's constant lr against linear and cosine annealing to 0,
chosen on validation accuracy; budget-anneal-<M>min-<CPU class>.md at other budgets) and
budget-<CPU class>.md/.png (--curve). Runs land in --out and are reused only for the same config text,
overrides, seed and code version (CNNLAB_BENCH_ACCEPT_CODE: see _common.py).
Run it alone on the machine: the figures are wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from _common import code_versions_note, cpu_banner, cpu_class, table, train_process

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {"mlp": None, "cnn4": "course-cnn", "fastnet": "fast89"}  # mlp: written from the course's grid
DEFAULT_RUNS = [("cnn4", 3), ("mlp", 1), ("cnn4", 1), ("fastnet", 1)]
ANNEAL_VARIANTS = {  # the same lr (the recipe's) and length; only the curve differs
    "constant": ("constant (the recipe's: train.budget_schedule=recipe)", ["train.budget_schedule=recipe"]),
    "linear": ("linear to 0", ["schedule.name=linear", "schedule.final_factor=0", "train.budget_schedule=recipe"]),
    "cosine": ("cosine to 0", ["schedule.name=cosine", "schedule.final_factor=0", "train.budget_schedule=recipe"]),
    "default": ("the budget's default (train.budget_schedule=anneal)", []),  # the same runs as the default table
}


def config_file(recipe: str, out: Path) -> Path:
    """The recipe's config file; the course's fc-100 run is written from configs/course-task1.yaml."""
    if RECIPES[recipe]:
        return ROOT / "configs" / f"{RECIPES[recipe]}.yaml"
    from cnnlab.ablate import plan

    _, _, planned = plan(ROOT / "configs" / "course-task1.yaml", out / "grid")
    item = next(p for p in planned if p.name == "fc-100")
    path = out / "configs" / "mlp-fc-100.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    item.config.out = None
    text = item.config.to_yaml()
    if not path.is_file() or path.read_text() != text:  # the same text: the cached runs stay valid
        path.write_text(text)
    return path


def budget_run(recipe: str, minutes: float, seed: int, overrides: list[str], out: Path, fresh: bool,
               tag: str = "") -> dict:
    """One whole process, with what its run directory says about the plan, the re-plans and the rows."""
    name = f"{recipe}-{minutes:g}min-s{seed}{tag}"
    record = train_process(name, config_file(recipe, out), seed, overrides, out, fresh, ["--minutes", f"{minutes:g}"])
    run = out / name
    summary = json.loads((run / "summary.json").read_text())
    plan = summary["budget"]
    from cnnlab import runs

    rows = runs.RunDir(run).read_metrics()
    return {**record, "recipe": recipe, "budget_minutes": minutes, "planned_seconds": plan["planned_total_seconds"],
            "process_seconds": 60 * record["minutes"], "steps_planned": plan["total_steps"],
            "steps_trained": summary["steps"], "replans": len(plan.get("replans") or []),
            "val_rows": sum(1 for r in rows if r.get("val_accuracy") == r.get("val_accuracy")
                            and r.get("val_accuracy") is not None),
            "rows": len(rows), "step_ms": 1000 * plan["step_seconds"],
            "spread": plan.get("step_seconds_spread", 0.0), "pace": plan.get("pace")}


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def time_table(results: list[dict]) -> str:
    rows = [[r["recipe"], f"{r['budget_minutes']:g}", f"{r['planned_seconds']:.1f}", f"{r['process_seconds']:.1f}",
             f"{100 * r['process_seconds'] / (60 * r['budget_minutes']):.1f} %",
             f"{r['step_ms']:.0f} ms ± {50 * r['spread']:.0f} %", f"{r['pace']:.3f}" if r["pace"] else "—",
             f"{r['steps_planned']} → {r['steps_trained']}", r["replans"], f"{r['val_rows']} / {r['rows']}",
             pct(r["val_accuracy"]), pct(r["test_accuracy"]), r["precision"]] for r in results]
    return table(["recipe", "budget (min)", "planned s", "process s (outside)", "of budget", "calibrated step",
                  "measured pace", "steps planned → trained", "re-plans", "rows with val acc / rows",
                  "best val acc", "test acc", "precision"], rows)


def anneal_table(results: dict[str, list[dict]]) -> str:
    rows = []
    for variant, runs in results.items():
        vals, tests = [r["val_accuracy"] for r in runs], [r["test_accuracy"] for r in runs]
        spread = f" ± {100 * statistics.stdev(vals):.2f}" if len(vals) > 1 else ""
        rows.append([variant, len(runs), f"{100 * statistics.mean(vals):.2f} %{spread}",
                     f"{100 * statistics.mean(tests):.2f} %", f"{max(r['process_seconds'] for r in runs):.1f}"])
    return table(["lr curve (course-cnn)", "seeds", "val accuracy (chooses)", "test accuracy (shown only)",
                  "process s (max)"], rows)


def write(stem: str, title: str, banner: str, body: str, results_dir: Path) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{stem}-{cpu_class()}.md"
    path.write_text(f"# {title} ({cpu_class()})\n\n{banner}\n\n{body}\n\n{code_versions_note()}\n")
    print(f"\n{body}\n\nwritten to {path}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", help="every recipe at these budgets (default: "
                        "course-cnn 3, and mlp, cnn4, fastnet 1)")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--anneal", type=float, metavar="M", help="the annealing study at M minutes (course-cnn)")
    parser.add_argument("--variants", nargs="+", default=["constant", "linear", "cosine"],
                        choices=list(ANNEAL_VARIANTS))
    parser.add_argument("--curve", action="store_true", help="test accuracy at 1, 2, 5, 10, 15 minutes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-budget"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("CNNLAB_DATA", str(ROOT.parent / "shared" / "data"))
    out, results_dir = Path(args.out), Path(args.results)
    banner = cpu_banner()
    print(banner, flush=True)
    if args.anneal:
        results = {ANNEAL_VARIANTS[v][0]: [budget_run("cnn4", args.anneal, s, ANNEAL_VARIANTS[v][1], out, args.fresh,
                                                      "" if v == "default" else f"-{v}") for s in args.seeds]
                   for v in args.variants}
        stem = "budget-anneal" if args.anneal == 1 else f"budget-anneal-{args.anneal:g}min"
        write(stem, f"Annealing under a {args.anneal:g}-minute budget", banner,
              "Written by `python benchmarks/budget.py --anneal M` (whole processes; the variants differ in the lr "
              "curve only; chosen on validation accuracy, test accuracy shown).\n\n" + anneal_table(results),
              results_dir)
        return
    if args.curve:
        return curve(args, out, results_dir, banner)
    plan = [(r, m) for m in args.minutes for r in args.recipes] if args.minutes else DEFAULT_RUNS
    results = [budget_run(recipe, minutes, s, [], out, args.fresh) for recipe, minutes in plan for s in args.seeds]
    stem = "budget-time" if not args.minutes else "budget-time-" + "-".join(f"{m:g}" for m in args.minutes) + "min"
    command = "python benchmarks/budget.py" + (" --minutes " + " ".join(f"{m:g}" for m in args.minutes)
                                               if args.minutes else "")
    write(stem, "Time budgets: planned vs actual", banner,
          f"Written by `{command}` (whole `cnnlab train --minutes M` processes, timed from "
          "outside; planned s is the plan's own estimate of the whole process).\n\n" + time_table(results),
          results_dir)


def curve(args, out: Path, results_dir: Path, banner: str) -> None:
    """Test accuracy against budget for the fast recipe and the course's CNN (1 seed; 3 at 2 and 5 minutes)."""
    results: dict[str, list[tuple[float, list[dict]]]] = {}
    for recipe in ("fastnet", "cnn4"):
        for minutes in (1, 2, 5, 10, 15):
            seeds = [0, 1, 2] if minutes in (2, 5) else [0]
            results.setdefault(recipe, []).append((minutes, [budget_run(recipe, minutes, s, [], out, args.fresh)
                                                             for s in seeds]))
    rows = []
    for recipe, points in results.items():
        for minutes, runs in points:
            accs = [r["test_accuracy"] for r in runs]
            spread = f" ± {100 * statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
            rows.append([f"{recipe} ({RECIPES[recipe]})", f"{minutes:g}", len(runs),
                         f"{100 * statistics.mean(accs):.2f} %{spread}", f"{max(r['minutes'] for r in runs):.2f}",
                         f"{statistics.mean(r['epochs_planned'] for r in runs):.2f}"])
    text = table(["recipe", "budget (min)", "seeds", "test accuracy", "process minutes (max)", "epochs"], rows)
    write("budget", "Test accuracy against time budget", banner, f"Written by `python benchmarks/budget.py "
          f"--curve`.\n\n{text}", results_dir)
    plot(results, results_dir / f"budget-{cpu_class()}.png", f"CIFAR-10 test accuracy by budget, {cpu_class()} CPU")


def plot(results, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for recipe, points in results.items():
        xy = [(m, 100 * statistics.mean(r["test_accuracy"] for r in runs)) for m, runs in points]
        ax.plot([p[0] for p in xy], [p[1] for p in xy], marker="o", label=f"{recipe} ({RECIPES[recipe]})")
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
