"""The run contract of the commands that train a classifier (train, transfer, features, finetune): the flags
that set a config key, the config a command line runs, and what --resume accepts.

Each such flag is a shortcut for one dotted config key (CONFIG_FLAGS); its type and help come from the key's
field in config/sections.py unless a help is written here. With --resume, the run's saved config.yaml is
the base: a flag or KEY=VALUE whose key is in config.RESUME_CHANGEABLE is applied to it, any other one must
leave the saved value as it is, or the command is refused naming it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._common import help_text


@dataclass(frozen=True)
class Flag:
    key: str                                  # the dotted config key it sets
    help: str | None = None                   # default: the field's docstring
    metavar: str | None = None
    const: Any = None                         # a switch (no argument) that sets this value
    dest: str | None = None                   # default: the flag's name
    also: dict[str, Any] = field(default_factory=dict)  # keys it sets besides (--data: a folder dataset)


CONFIG_FLAGS: dict[str, Flag] = {
    "--model": Flag("model.name"),
    "--epochs": Flag("train.epochs"),
    "--batch-size": Flag("train.batch_size"),
    "--lr": Flag("optim.lr"),
    "--optimizer": Flag("optim.name"),
    "--schedule": Flag("schedule.name"),
    "--label-smoothing": Flag("train.label_smoothing"),
    "--seed": Flag("train.seed"),
    "--limit-train": Flag("data.limit_train", "train on the first N training images", "N"),
    "--val-size": Flag("data.val_size", "validation images carved from training (0 = none)", "N"),
    "--minutes": Flag("train.budget_minutes", "fit the whole run into M minutes on this machine (the recipe is "
                                              "stretched to fit)", "M"),
    "--precision": Flag("train.precision", "auto (default: bf16 where the hardware has it natively) | fp32 | bf16"),
    "--channels-last": Flag("train.channels_last", "NHWC memory format (default: auto, on)"),
    "--name": Flag("name", "run name (default directory: runs/NAME-TIMESTAMP)"),
    "--out": Flag("out", "run directory to create", "RUN_DIR"),
    "--no-progress": Flag("train.progress", "no progress bar (one line per epoch)", const=False),
    "--detect-anomaly": Flag("train.detect_anomaly", "debug a loss that turns NaN: name the operation that "
                                                     "produced it (slow)", const=True),
    "--tensorboard": Flag("train.tensorboard", "also write TensorBoard logs in RUN_DIR/tensorboard/ (needs pip "
                                               "install 'cnnlab[tensorboard]')", const=True),
    "--data-root": Flag("data.root", "data folder (default: $CNNLAB_DATA, else ~/.cache/cnnlab)", "PATH"),
    "--threads": Flag("train.threads", "compute threads (default and maximum: available cores)"),
    "--device": Flag("train.device", "auto | cpu | cuda | cuda:N (default auto)"),
    "--cache-dir": Flag("data.cache_dir", "where decoded images and features are cached", "DIR"),
    # the transfer commands
    "--data": Flag("data.path", "the dataset: class folders, a Terrassa-layout folder, or a CSV of path,label",
                   "PATH", also={"data.dataset": "folder"}),
    "--layout": Flag("data.layout", "auto | imagefolder | terrassa | csv (default: detected)"),
    "--val-fraction": Flag("data.val_fraction", "held out for validation when the data has no val split"),
    "--test-fraction": Flag("data.test_fraction", "held out for testing when the data has no test split"),
    "--from": Flag("transfer.from_run", "a trained cnnlab run", "RUN_DIR", dest="from_run"),
    "--unfreeze": Flag("transfer.trainable", "train every layer, not only the classifier", const="all"),
    "--backbone": Flag("model.name", "registered ImageNet model (default efficientnet_lite0)"),
    "--weights": Flag("model.weights", "the backbone's weights from a local file", "FILE"),
    "--trainable-layers": Flag("transfer.trainable", "last N parameterised layers, a block, or all", "N"),
    "--backbone-lr-factor": Flag("transfer.backbone_lr_factor", "backbone lr = lr x this (default 0.1)"),
    "--head-epochs": Flag("transfer.head_epochs", "train the head alone first for this many epochs"),
    "--early-stopping": Flag("transfer.early_stopping", "stop after P epochs without progress", "P"),
    "--head-from": Flag("transfer.head_from", "start the classifier from a features run's (same backbone and "
                                              "classes)", "RUN_DIR"),
}


def add_config_flags(p: argparse.ArgumentParser, names: list[str], helps: dict[str, str] | None = None,
                     required: tuple[str, ...] = ()) -> None:
    """The named CONFIG_FLAGS on parser `p` (their default None: not given, the config's value stands)."""
    from ..config import Config, field_info

    table = list(p.get_default("config_flags") or [])
    for name in names:
        flag = CONFIG_FLAGS[name]
        dest = flag.dest or name[2:].replace("-", "_")
        try:
            info = field_info(Config, flag.key)
            kind, doc = info.type, info.help
        except KeyError:  # a model argument: the model's own signature says what it takes
            kind, doc = str, ""
        kwargs: dict[str, Any] = {"dest": dest, "default": None,
                                  "help": help_text((helps or {}).get(name) or flag.help or doc)}
        if flag.const is not None:
            kwargs.update(action="store_const", const=flag.const)
        elif name == "--channels-last":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind if kind in (int, float) else str
            if flag.metavar:
                kwargs["metavar"] = flag.metavar
        p.add_argument(name, required=name in required, **kwargs)
        table.append((name, dest))
    p.set_defaults(config_flags=table)


def given_settings(args: argparse.Namespace) -> list[tuple[str, str, Any]]:
    """(how it was given, dotted key, value) for each config setting of this command line; a later one wins:
    KEY=VALUE overrides first, then the flags."""
    from ..config import parse_override

    given = []
    for text in getattr(args, "overrides", None) or []:
        key, value = parse_override(text)
        given.append((text, key, value))
    for name, dest in args.config_flags:
        value = getattr(args, dest)
        if value is None:
            continue
        flag = CONFIG_FLAGS[name]
        how = name if flag.const is not None or isinstance(value, bool) else f"{name} {value}"
        given += [(how, key, v) for key, v in flag.also.items()] + [(how, flag.key, value)]
    return given


def run_config(args: argparse.Namespace, base: str | None):
    """The Config this command line runs: `base` (a YAML file or preset; None: the defaults) with its settings,
    or on --resume the run's saved config with the settings that may change (config.RESUME_CHANGEABLE); a
    setting that would change anything else is refused, naming how it was given."""
    from .. import config
    from ..errors import UserError

    given = given_settings(args)
    overrides = {key: value for _, key, value in given}
    if not args.resume:
        return config.resolve(base, overrides)
    if args.out is not None and Path(args.out).resolve() != Path(args.resume).resolve():
        raise UserError(f"--out {args.out} and --resume {args.resume} name two run directories; give --resume alone")
    saved_file = Path(args.resume) / "config.yaml"
    saved = config.resolve(saved_file)
    # --config on resume: the whole run described again (ablate's workers resume so); it must be the saved run.
    cfg = config.resolve(args.config if args.config else saved_file, overrides)
    changed = config.differences(saved, cfg)
    if changed:
        key = changed[0].split(":", 1)[0]
        how = next((how for how, k, _ in reversed(given) if k == key or key.startswith(f"{k}.")),
                   f"--config {args.config}" if args.config else "this command line")
        changeable = ", ".join(sorted(config.RESUME_CHANGEABLE - {"out"}))
        raise UserError(f"cannot resume {args.resume}: {how} would change its {changed[0]}; a resumed run may "
                        f"change only where it runs ({changeable}); start a new run with another --out instead")
    cfg.out = str(args.resume)
    return cfg


def train_and_print(cfg, resume: str | None) -> int:
    """Run the training session, then its one-line result."""
    from ..classify import train
    from ..engine.budget import process_start

    result = train(cfg, resume=resume, started=process_start())
    if result.summary:
        s = result.summary
        figures = [f"{label} {100 * s[key]:.2f}%" for label, key in (("test accuracy", "test_accuracy"),
                                                                      ("best val accuracy", "best_val_accuracy"))
                   if s.get(key) is not None]
        print(f"{', '.join(figures) or 'no evaluation'}, {s['epochs']} epochs in {s['train_seconds'] / 60:.1f} min"
              f"\nrun directory: {result.run_dir}")
    return 0
