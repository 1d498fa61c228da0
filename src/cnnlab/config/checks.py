"""A run's Config as a whole: loading it (resolve), the checks types cannot express (validate), and what may
change when a run is resumed (RESUME_CHANGEABLE, differences)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UserError
from .loader import check_choices, flatten, keys_of, load_settings
from .sections import Config

# The settings that may change when a run is resumed, and only these: where and how it runs, not what it
# computes. The command line applies them to the saved config on --resume (and refuses any other change),
# the training session copies them from the invocation's config onto the saved one, and differences()
# ignores them when it compares a run's config with another.
RESUME_CHANGEABLE = frozenset({
    "out",                   # the run directory itself (it is given by --resume)
    "train.threads",         # compute threads of this machine
    "train.device",          # cpu or which GPU
    "train.progress",        # a progress bar or one line per epoch
    "train.detect_anomaly",  # autograd's anomaly mode: slower, names the operation behind a NaN
    "data.root",             # where this machine keeps the dataset
    "data.download",         # whether a missing dataset may be downloaded
    "data.cache_dir",        # where decoded images and features are cached (a cache: same data either way)
})


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the config (model arguments excluded: they depend on the model)."""
    return keys_of(cls, prefix)


def from_dict(data: dict[str, Any] | None) -> Config:
    """Config from a YAML-shaped dict (model arguments may sit beside ``model.name``), typed and checked."""
    return load_settings(Config, base=data or {})


def resolve(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None,
            base: dict[str, Any] | None = None) -> Config:
    """The validated Config from (base dict) <- (YAML file) <- (dotted overrides)."""
    return load_settings(Config, config_file, overrides, base=base)


def validate(cfg: Config) -> None:
    """Range and choice checks that types alone cannot express; one UserError per problem (run by every load:
    Config.check).

    Names resolved by registries are not checked here (see classify.check_names)."""
    t, d, o, s = cfg.train, cfg.data, cfg.optim, cfg.schedule
    positive = {"train.epochs": t.epochs, "train.batch_size": t.batch_size,
                "train.eval_batch_size": t.eval_batch_size, "optim.lr": o.lr}
    for key, value in positive.items():
        if value <= 0:
            raise UserError(f"config field '{key}' must be greater than 0, got {value}")
    non_negative = {"data.val_size": d.val_size, "optim.weight_decay": o.weight_decay, "optim.decay": o.decay,
                    "optim.momentum": o.momentum, "data.augment.translate": d.augment.translate,
                    "data.augment.cutout": d.augment.cutout, "schedule.warmup_epochs": s.warmup_epochs,
                    "schedule.warmup_fraction": s.warmup_fraction, "data.low_res_size": d.low_res_size,
                    "data.low_res_epochs": d.low_res_epochs}
    for key, value in non_negative.items():
        if value < 0:
            raise UserError(f"config field '{key}' must be 0 or more, got {value}")
    for key, value in (("data.val_fraction", d.val_fraction), ("data.test_fraction", d.test_fraction)):
        if not 0 <= value < 1:
            raise UserError(f"config field '{key}' must be in [0, 1), got {value}")
    unknown = sorted(set(d.ignore_splits) - {"val", "test"})
    if unknown:
        raise UserError(f"config field 'data.ignore_splits' takes val and/or test, got {unknown[0]!r}")
    if d.val_fraction + d.test_fraction >= 1:
        raise UserError(f"data.val_fraction + data.test_fraction must leave training images, got "
                        f"{d.val_fraction} + {d.test_fraction}")
    if d.image_size < 0 or d.augment.crop_scale < 0 or d.augment.crop_scale > 1 or d.augment.color_jitter < 0:
        raise UserError("config fields data.image_size and data.augment.color_jitter must be 0 or more, "
                        f"data.augment.crop_scale in [0, 1]; got {d.image_size}, {d.augment.color_jitter}, "
                        f"{d.augment.crop_scale}")
    if d.dataset == "folder" and not d.path:
        raise UserError("data.dataset is 'folder' but data.path is not set; pass --data PATH (a folder of "
                        "class folders, a Terrassa-layout folder or a CSV of path,label)")
    x = cfg.transfer
    if x.backbone_lr_factor <= 0 or x.head_epochs < 0 or x.early_stopping < 0:
        raise UserError(f"transfer.backbone_lr_factor must be > 0 and transfer.head_epochs, "
                        f"transfer.early_stopping >= 0; got {x.backbone_lr_factor}, {x.head_epochs}, "
                        f"{x.early_stopping}")
    if d.limit_train is not None and d.limit_train <= 0:
        raise UserError(f"config field 'data.limit_train' must be greater than 0, got {d.limit_train}")
    if t.threads is not None and t.threads <= 0:
        raise UserError(f"config field 'train.threads' must be greater than 0, got {t.threads}")
    if not 0 <= t.label_smoothing < 1:
        raise UserError(f"config field 'train.label_smoothing' must be in [0, 1), got {t.label_smoothing}")
    if not 0 <= t.ema.decay < 1:
        raise UserError(f"config field 'train.ema.decay' must be in [0, 1), got {t.ema.decay}")
    if t.lookahead.every < 0:
        raise UserError(f"config field 'train.lookahead.every' must be 0 (off) or more, got {t.lookahead.every}")
    if o.lr_batch_size is not None and o.lr_batch_size <= 0:
        raise UserError(f"config field 'optim.lr_batch_size' must be greater than 0, got {o.lr_batch_size}")
    if o.muon_lr is not None and o.muon_lr <= 0:
        raise UserError(f"config field 'optim.muon_lr' must be greater than 0, got {o.muon_lr}")
    if t.ema.every <= 0:
        raise UserError(f"config field 'train.ema.every' must be greater than 0, got {t.ema.every}")
    for key, minutes in (("train.budget_minutes", t.budget_minutes), ("train.max_train_minutes", t.max_train_minutes)):
        if minutes is not None and minutes <= 0:
            raise UserError(f"config field '{key}' must be greater than 0 minutes, got {minutes:g}; give the "
                            f"minutes the run may take, e.g. 5")
    if o.name == "muon" and o.muon_lr is None:
        raise UserError("config field 'optim.muon_lr' must be set when optim.name is muon (the learning rate of "
                        "the orthogonalized conv/matrix updates, e.g. 0.24; optim.lr is the SGD part's)")
    if not (t.device in ("auto", "cpu", "cuda") or t.device.startswith("cuda:")):
        raise UserError(f"config field 'train.device' must be auto, cpu, cuda or cuda:N, got '{t.device}'")
    check_choices(cfg)  # the fields declared with one_of(...) in sections.py
    # Names (model, optimizer, schedule, dataset) are checked by their own registries, which import this
    # module: see classify.check_names. Imports flow one way: config knows no registry.


def get_field(cfg: Any, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def differences(a: Config, b: Config, exempt: set[str] | frozenset[str] = RESUME_CHANGEABLE) -> list[str]:
    """'key: a -> b' for each field that differs (exempt keys ignored)."""
    fa, fb = flatten(a.to_dict()), flatten(b.to_dict())
    return [f"{k}: {fa.get(k)!r} -> {fb.get(k)!r}" for k in sorted(set(fa) | set(fb))
            if k not in exempt and fa.get(k) != fb.get(k)]
