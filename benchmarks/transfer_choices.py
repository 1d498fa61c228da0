"""Fine-tuning settings chosen without touching the reported validation split, then measured on it.

    python benchmarks/transfer_choices.py [--only choices final] [--split-seeds 0 1] [--seeds 0 1 2]

Data: ../shared/data/scenes6 (450 training + 180 validation photos, 6 classes), backbone efficientnet_lite0
(real ImageNet weights), 10 epochs per fine-tuning run, 2 threads.

1. choices: every variant below, and features + softmax for reference, trains on 80 % of the training
   photos and is ranked on the other 20 % (`data.ignore_splits=[val] data.val_fraction=0.2`, stratified,
   over --split-seeds): the dataset's own validation split is never seen while choosing.
2. final: features + softmax and the variant ranked first, as shipped settings would run (all 450 training
   photos, best epoch on the dataset's 180 validation photos), over --seeds (train.seed), mean ± std.
Every run is a whole `cnnlab` process (runs reused only for the same arguments and code version). Writes
benchmarks/results/transfer-choices-<CPU class>.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from _common import cnnlab_process, code_versions_note, cpu_banner, save_result, table

ROOT = Path(__file__).resolve().parents[1]
SCENES = ROOT.parent / "shared" / "data" / "scenes6"
EPOCHS = ["--epochs", "10"]

# What each variant changes on the `finetune` preset (configs/finetune.yaml). The first row is the preset before
# this choice (batch norm updated), spelled out: the preset has since taken the winner's bn_statistics=frozen.
VARIANTS = {
    "preset as it was (all layers, batch norm updated, head 1 epoch first)": ["transfer.bn_statistics=update"],
    "batch-norm statistics kept": ["transfer.bn_statistics=frozen"],
    "statistics kept, head 3 epochs first at lr 3e-3, backbone at 1e-4":
        ["transfer.bn_statistics=frozen", "transfer.head_epochs=3", "optim.lr=0.003", "transfer.backbone_lr_factor=0.0333"],
    "statistics kept, head from the features run, head at 3e-4, backbone at 1e-4":
        ["transfer.bn_statistics=frozen", "transfer.head_epochs=0", "optim.lr=0.0003", "transfer.backbone_lr_factor=0.333",
         "--head-from", "{features}"],
}
FEATURES = "features + softmax (reference)"


def carved(split_seed: int) -> list[str]:
    return ["data.ignore_splits=[val]", "data.val_fraction=0.2", f"data.split_seed={split_seed}"]


def command(variant: str, features_run: Path | None = None) -> list[str]:
    """The cnnlab command of a variant; {features} stands for the features run on the same split and seed."""
    if variant == FEATURES:
        return ["features", "--data", str(SCENES)]
    return ["finetune", "--data", str(SCENES), *EPOCHS,
            *[str(features_run) if a == "{features}" else a for a in VARIANTS[variant]]]


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * std:.2f} %"


def choices(args, cache: list[str]) -> tuple[str, str]:
    rows, scores = [], {}
    for i, variant in enumerate([FEATURES, *VARIANTS]):
        runs = [cnnlab_process(f"choice{i}-split{s}", [*command(variant, Path(args.out) / f"choice0-split{s}"),
                                                         *carved(s), *cache], args.out)
                for s in args.split_seeds]
        accs = [r["val_accuracy"] for r in runs]
        scores[variant] = statistics.mean(accs)
        rows.append([variant, " / ".join(f"{100 * a:.1f}" for a in accs), f"{100 * scores[variant]:.2f} %",
                     f"{statistics.mean(r['process_seconds'] for r in runs):.0f}"])
    best = max(VARIANTS, key=lambda v: scores[v])  # a tie goes to the variant listed first (the simpler one)
    tied = [v for v in VARIANTS if v != best and abs(scores[v] - scores[best]) < 1e-9]
    text = table(["variant (finetune preset + overrides)", "carved val accuracy per split (%)", "mean",
                  "seconds a run"], rows)
    note = f" (tied with: {'; '.join(tied)}; a tie goes to the variant listed first)" if tied else ""
    return text + f"\n\nRanked first among the fine-tuning variants: **{best}**{note}.", best


def final(args, variant: str, cache: list[str]) -> str:
    rows = []
    for label, name in ((FEATURES, "features"), (variant, "finetune")):
        runs = [cnnlab_process(f"final-{name}-seed{s}", [*command(label, Path(args.out) / f"final-features-seed{s}"),
                                                        "--seed", str(s), *cache], args.out)
                for s in args.seeds]
        rows.append([label, mean_std([r["val_accuracy"] for r in runs]),
                     " / ".join(f"{100 * r['val_accuracy']:.1f}" for r in runs),
                     f"{statistics.mean(r['process_seconds'] for r in runs):.0f}"])
    return table(["run", "val accuracy (mean ± std)", "per seed (%)", "seconds a run"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=["choices", "final"], default=["choices", "final"])
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variant", help="the variant for `final` when choices are not run (its label)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-transfer-choices"))
    args = parser.parse_args()
    os.environ.setdefault("CNNLAB_DATA", str(ROOT.parent / "shared" / "data"))
    cache = ["--cache-dir", str(Path(args.out) / "cache"), "--threads", "2"]
    banner = cpu_banner()
    print(banner, flush=True)
    sections, best = [], args.variant
    if "choices" in args.only:
        text, best = choices(args, cache)
        sections.append(f"## Choices: ranked on 20 % carved from the training photos (split seeds "
                        f"{', '.join(map(str, args.split_seeds))}; the validation split unseen)\n\n{text}")
    if "final" in args.only:
        if best not in VARIANTS:
            raise SystemExit(f"--variant must be one of: {'; '.join(VARIANTS)}")
        sections.append(f"## Final: scenes6's own validation split (train seeds "
                        f"{', '.join(map(str, args.seeds))})\n\n{final(args, best, cache)}")
    text = "\n\n".join(sections + [code_versions_note()])
    print("\n" + text)
    save_result("transfer-choices", f"# Fine-tuning settings chosen on a carved split\n\n{banner}\n\nWritten by "
                                    f"`python benchmarks/transfer_choices.py`.\n\n{text}\n")


if __name__ == "__main__":
    main()
