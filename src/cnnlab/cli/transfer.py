"""cnnlab transfer / features / finetune: the three ways of training on a small dataset of your own."""

from __future__ import annotations

import argparse

from ._common import add_overrides
from ._run import add_config_flags, run_config, train_and_print

WAYS = {
    "transfer": ("a cnnlab run's network with a new classifier, the rest frozen", "transfer.yaml"),
    "features": ("an ImageNet backbone's features (cached) + a softmax classifier", "features.yaml"),
    "finetune": ("fine-tune the last N layers of a pretrained ImageNet backbone", "finetune.yaml"),
}
COMMON = ["--epochs", "--lr", "--batch-size", "--seed", "--minutes", "--name", "--out", "--no-progress",
          "--detect-anomaly", "--tensorboard", "--cache-dir", "--data-root", "--threads", "--device"]
OWN = {
    "transfer": ["--from", "--unfreeze"],
    "features": ["--backbone", "--weights"],
    "finetune": ["--backbone", "--weights", "--trainable-layers", "--backbone-lr-factor", "--head-epochs",
                 "--early-stopping", "--head-from"],
}


def add_transfer_commands(sub) -> None:
    for name, (text, config) in WAYS.items():
        p = sub.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]}. Defaults: the preset {config} "
                           f"(configs/{config}); any config field can be set as KEY=VALUE. With --resume, only where "
                           f"it runs may change (--data-root, --threads, --device, --no-progress, --cache-dir, "
                           f"--detect-anomaly).")
        add_overrides(p)
        add_config_flags(p, ["--data", "--layout", "--val-fraction", "--test-fraction", *OWN[name]],
                         required=("--data", "--from"))
        p.add_argument("--config", metavar="FILE",
                       help=f"base config: a YAML file or a preset name (default {config[:-5]})")
        p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
        add_config_flags(p, COMMON)
        p.set_defaults(handler=cmd_transfer)


def cmd_transfer(args: argparse.Namespace) -> int:
    """A run on the given dataset from the command's preset (or --config)."""
    return train_and_print(run_config(args, args.config or args.command), args.resume)
