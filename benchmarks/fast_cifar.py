"""The fast CIFAR-10 recipe measured: final test figures over seeds, and every recipe choice re-checked on a
validation split.

    python benchmarks/fast_cifar.py --only targets --configs fast89 --seeds 0 1 2 3 4
    python benchmarks/fast_cifar.py --only ablation --ablate-config fast89
    python benchmarks/fast_cifar.py --only choices            # fast93's label smoothing, on validation
    python benchmarks/fast_cifar.py --only precision          # fp32 vs bf16 (bf16 only where native)
    python benchmarks/fast_cifar.py --only short              # shapes for short budgets (--minutes 2 and 5)

Protocol (the test set is touched only for the final figures):
- ablation / choices: train on 45,000 images, rank on the 5,000 held out (data.val_size=5000, split seed 0),
  validated once at the end with the recipe's test-time augmentation (train.validate=end); these runs never
  evaluate on the test set (train.final_test=false).
- targets: the configs as shipped (all 50,000 training images), test accuracy over >= 5 seeds, mean ± std.
Every run is a whole `cnnlab train` process; its minutes are the process's wall-clock time (imports, data
loading, whitening, training, the final evaluation). Runs land in --out and are reused only for the same
config text, overrides, seed and code version (git tree of src/; CNNLAB_BENCH_ACCEPT_CODE=<tree>,... also
accepts runs of those earlier versions, and the results name every version used). Writes
benchmarks/results/fast-cifar-<CPU class>.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from _common import RUNS_SEEN, code_versions_note, cpu_banner, cpu_class, table, train_process

ROOT = Path(__file__).resolve().parents[1]
# Targets by CPU class (issue "Fast on the CPU people actually have"): (accuracy, whole-process minutes).
TARGETS = {"native-bf16": {"fast89": (0.89, 2.0), "fast93": (0.93, 8.0), "fast94": (0.94, 15.0)},
           "other": {"fast89": (0.89, 5.0)}}
VALIDATION = ["data.val_size=5000", "train.final_test=false", "train.validate=end"]

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
    "flip-only test-time augmentation": ["train.tta=flip"],
    "batch 1000 instead of 500": ["train.batch_size=1000"],
    "+ wide first group (64, not 32 filters)": ["model.widths=[64,96,192]"],
    "+ lookahead (every 5 steps from epoch 1)": ["train.lookahead.every=5", "train.lookahead.start_epochs=1"],
    "no progressive resizing (epoch 1 at 32 px too)": ["data.low_res_size=0", "data.low_res_epochs=0"],
}
# Choices the GPU sweeps made by test accuracy, re-checked on validation: (config, label, overrides).
CHOICES = [
    ("fast93", "label smoothing 0.1 (shipped)", []),
    ("fast93", "label smoothing 0.2", ["train.label_smoothing=0.2"]),
]


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f} %"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f} %"


def config_file(name: str) -> Path:
    return ROOT / "configs" / f"{name}.yaml"


def targets(args, out: Path) -> str:
    klass = cpu_class()
    goals = TARGETS["native-bf16"] if klass == "native-bf16" else TARGETS["other"]
    rows = []
    for config in args.configs:
        results = []
        for seed in args.seeds:
            results.append(train_process(f"{config}-s{seed}", config_file(config), seed, [], out, args.fresh))
            if len(results) < len(args.seeds):
                write_partial(args, config, results)
        partial_path(args, config).unlink(missing_ok=True)  # the final table below supersedes it
        accs = [r["test_accuracy"] for r in results]
        minutes = [r["minutes"] for r in results]
        goal = goals.get(config)
        met = "" if goal is None else ("yes" if statistics.mean(accs) >= goal[0] and max(minutes) <= goal[1] else "no")
        goal_text = "-" if goal is None else f"≥ {100 * goal[0]:.0f} % in ≤ {goal[1]:g} min"
        rows.append([config, len(results), mean_std(accs), f"{min(accs) * 100:.2f} %",
                     f"{statistics.mean(minutes):.2f} (max {max(minutes):.2f})", results[0]["precision"], goal_text,
                     met])
    seeds = [[r["config"], r["seed"], f"{100 * r['test_accuracy']:.2f} %", f"{r['minutes']:.2f}", r["code"]]
             for r in RUNS_SEEN if r["config"] in args.configs and r.get("test_accuracy") is not None]
    return (table(["config", "seeds", "test accuracy (mean ± std)", "worst seed", "minutes", "precision",
                   f"target ({klass})", "met"], rows) + "\n\nEach seed:\n\n"
            + table(["config", "seed", "test accuracy", "minutes, whole process", "code version"], seeds))


def partial_path(args, config: str) -> Path:
    return Path(args.results) / f"fast-cifar-targets-{config}-partial-{cpu_class()}.md"


def write_partial(args, config: str, results: list[dict]) -> None:
    """After each seed of a multi-seed target run: the seeds so far, so a run stopped (or cut by a session's
    end) still leaves its figures in a file this script wrote; the same command later reuses those runs."""
    rows = [[config, r["seed"], f"{100 * r['test_accuracy']:.2f} %", f"{r['minutes']:.2f}",
             f"{r['train_seconds']:.1f}", r["precision"]] for r in results]
    text = (f"# {config} on {cpu_class()}: seeds so far ({len(results)} of {len(args.seeds)}; not a final figure)\n\n"
            f"{cpu_banner()}\n\nWritten by `python benchmarks/fast_cifar.py {' '.join(sys.argv[1:])}` after its "
            f"seed {results[-1]['seed']}; the same command reuses these runs and writes the final table.\n\n"
            + table(["config", "seed", "test accuracy", "minutes, whole process", "training seconds", "precision"],
                    rows) + "\n\n" + code_versions_note(results) + "\n")
    path = partial_path(args, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def ablation(args, out: Path) -> str:
    rows, base = [], None
    for index, (label, overrides) in enumerate(ABLATIONS.items()):
        results = [train_process(f"{args.ablate_config}-val-ablate-{index}-s{s}", config_file(args.ablate_config), s,
                                 [*VALIDATION, *overrides], out, args.fresh) for s in args.ablate_seeds]
        acc = statistics.mean(r["val_accuracy"] for r in results)
        base = base if base is not None else acc
        rows.append([label, " ".join(overrides) or "-", mean_std([r["val_accuracy"] for r in results]),
                     f"{100 * (acc - base):+.2f}", f"{statistics.mean(r['minutes'] for r in results):.2f}"])
    return table(["variant", "overrides", "validation accuracy", "vs full (points)", "minutes"], rows)


def choices(args, out: Path) -> str:
    rows = []
    for config, label, overrides in CHOICES:
        results = [train_process(f"{config}-val-{'-'.join(o.split('=')[-1] for o in overrides) or 'shipped'}-s{s}",
                                 config_file(config), s, [*VALIDATION, *overrides], out, args.fresh)
                   for s in args.ablate_seeds]
        rows.append([config, label, mean_std([r["val_accuracy"] for r in results]),
                     f"{statistics.mean(r['minutes'] for r in results):.2f}"])
    return table(["config", "choice", "validation accuracy", "minutes"], rows)


# Variants for short budgets, each run with `--minutes M` on the validation protocol (the same budget for all:
# test-time views and width trade evaluation time against training steps).
SHORT = [
    ("fast89 as shipped (6 test-time views)", []),
    ("flip-only test-time views", ["train.tta=flip"]),
    ("no test-time views", ["train.tta=none"]),
    ("narrower: widths 32-64-128", ["model.widths=[32,64,128]", "model.scale=0.0078125"]),
]


def short(args, out: Path) -> str:
    rows = []
    for minutes in args.short_minutes:
        for index, (label, overrides) in enumerate(SHORT):
            results = [train_process(f"fast89-val-{minutes:g}min-short-{index}-s{s}", config_file("fast89"), s,
                                     [*VALIDATION, *overrides], out, args.fresh, ["--minutes", f"{minutes:g}"])
                       for s in args.ablate_seeds]
            rows.append([f"{minutes:g}", label, " ".join(overrides) or "-",
                         mean_std([r["val_accuracy"] for r in results]),
                         f"{statistics.mean(r['epochs_planned'] for r in results):.2f}",
                         f"{max(r['minutes'] for r in results):.2f}"])
    return table(["budget (min)", "variant", "overrides", "validation accuracy", "epochs", "minutes (max)"], rows)


def precision(args, out: Path) -> str:
    from cnnlab.engine.device import cpu_native_bf16

    rows = []
    variants = [("fp32", ["train.precision=fp32"])]
    if cpu_native_bf16():
        variants.append(("bf16", ["train.precision=bf16"]))
    for label, overrides in variants:
        results = [train_process(f"{args.ablate_config}-val-{label}-s{s}", config_file(args.ablate_config), s,
                                 [*VALIDATION, *overrides], out, args.fresh) for s in args.seeds]
        rows.append([label, ", ".join(str(s) for s in args.seeds), mean_std([r["val_accuracy"] for r in results]),
                     f"{statistics.mean(r['minutes'] for r in results):.2f}"])
    note = "" if cpu_native_bf16() else \
        "\n(bf16 not run: this CPU has no native bf16; bf16 is emulated there and about 10x slower.)"
    return table(["precision", "seeds", "validation accuracy", "minutes"], rows) + note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--only", choices=["targets", "ablation", "choices", "precision", "short"], nargs="+")
    parser.add_argument("--short-minutes", type=float, nargs="+", default=[2, 5])
    parser.add_argument("--configs", nargs="+", default=["fast89", "fast93", "fast94"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--ablate-config", default="fast89")
    parser.add_argument("--ablate-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-fast"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--fresh", action="store_true", help="re-run runs that already have results")
    args = parser.parse_args()
    os.environ.setdefault("CNNLAB_DATA", str(ROOT.parent / "shared" / "data"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    banner = cpu_banner()
    print(banner, flush=True)
    sections = args.only or ["targets", "ablation", "choices", "precision"]
    command = " ".join(["python benchmarks/fast_cifar.py", *sys.argv[1:]])
    report = [f"{banner}\n\nWritten by `{command}`.\n"]
    for section in sections:
        print(f"\n## {section}", flush=True)
        text = {"targets": targets, "ablation": ablation, "choices": choices, "precision": precision,
                "short": short}[section](args, out)
        print(text, flush=True)
        report.append(f"## {section}\n\n{text}\n")
    report.append(code_versions_note() + "\n")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    configs = f"-{'-'.join(args.configs)}" if sections == ["targets"] else ""
    path = results / f"fast-cifar-{'-'.join(sections)}{configs}-{cpu_class()}.md"
    path.write_text("\n".join(report))
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
