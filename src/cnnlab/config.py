"""Typed run configuration: dataclasses, YAML loading, dotted command-line overrides, validation.

A run is fully described by one :class:`Config`. It is loaded from YAML (``--config FILE``), then
overridden field by field (``train.epochs=5`` or the CLI's shortcut flags), validated, and written
back, resolved, as ``config.yaml`` in the run directory so the run can be reproduced or resumed.

Every section is a dataclass, so the set of valid keys is known: an unknown key is a user error that
names the closest valid key. The model section is the one open section: besides ``name`` it takes the
chosen model's keyword arguments, which the model registry checks against the model's signature.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError, did_you_mean

# ----------------------------------------------------------------------------------------------- sections


@dataclass
class AugmentConfig:
    """Batched training augmentation (applied to whole uint8 batches, see ``data/augment.py``)."""

    translate: float = 0.0
    """Random shift: pixels when >= 1, else a fraction of the image side (Keras' shift_range 0.1 = 3 px)."""
    flip: bool = False
    """Random horizontal flip."""
    flip_mode: str = "random"
    """'random' (each image, p=0.5, every epoch) or 'alternating' (a random half, the other half next epoch)."""
    pad_mode: str = "reflect"
    """How translation fills the border: 'reflect', 'zeros' or 'edge' (Keras' 'nearest')."""
    cutout: int = 0
    """Side of a random square set to zero (0 = off)."""
    crop_scale: float = 0.0
    """Random resized crop (photos): each image is a random crop of this fraction of its area or more, resized
    back to the input size, aspect ratio 3/4 to 4/3 (torchvision's RandomResizedCrop); 0 = off."""
    color_jitter: float = 0.0
    """Random brightness, contrast and saturation factors in [1 - j, 1 + j] per image (0 = off)."""


@dataclass
class DataConfig:
    dataset: str = "cifar10"
    """cifar10 | folder (your own photos: see path and layout)."""
    root: str | None = None
    """Data folder; None means the --data-root flag, else $CNNLAB_DATA, else ~/.cache/cnnlab."""
    path: str | None = None
    """folder datasets: the dataset folder (ImageFolder or Terrassa layout) or a CSV file of path,label."""
    layout: str = "auto"
    """folder datasets: auto | imagefolder | terrassa | csv (auto detects it; see data/folders.py)."""
    val_fraction: float = 0.2
    """folder datasets without a validation split: the share of training images held out (stratified)."""
    test_fraction: float = 0.0
    """folder datasets without a test split: the share of images held out for testing (stratified)."""
    ignore_splits: list[str] = field(default_factory=list)
    """folder datasets: the dataset's own splits to leave out (val, test), so that validation is carved from the
    training images instead: settings are then chosen without touching the split whose figure is reported."""
    image_size: int = 0
    """folder datasets: the side of the square images fed to the model (0 = the model's own input size)."""
    cache_dir: str | None = None
    """Where decoded images and extracted features are cached (None: $CNNLAB_CACHE, else
    ~/.cache/cnnlab/cache); a folder you may write to even when the data folder is read-only."""
    download: bool = True
    """Download the dataset when it is not under root."""
    val_size: int = 5000
    """Validation images carved from the training set (stratified, seeded); 0 trains on all of it."""
    split_seed: int = 0
    """Seed of the validation split, apart from train.seed so that runs of several seeds share one split."""
    limit_train: int | None = None
    """Train on the first N training images only (after the validation split); None = all."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    low_res_size: int = 0
    """Progressive resizing: train the first `low_res_epochs` epochs on images downscaled to this side
    (0 = off). Compute scales with the pixel count, so early epochs get cheaper; the last ones see full size."""
    low_res_epochs: float = 0.0
    """Epochs at low resolution; a fraction switches mid-epoch (a time budget stretches this with the rest)."""


@dataclass
class ModelConfig:
    name: str = "cnn4"
    args: dict[str, Any] = field(default_factory=dict)
    """The model's keyword arguments; in YAML they sit beside ``name`` (``model: {name: cnn4, batchnorm: true}``)."""


@dataclass
class OptimConfig:
    name: str = "rmsprop"
    """sgd | rmsprop | adam | adamw | muon (see engine/optim.py)."""
    lr: float = 1e-3
    lr_batch_size: int | None = None
    """When set, lr is per this many examples: the lr used is lr x train.batch_size / lr_batch_size (weight
    decay, being multiplied by lr, follows), so a recipe keeps its behaviour when the batch size changes."""
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    decay: float = 0.0
    """Keras-style learning-rate decay per iteration: lr / (1 + decay * iteration)."""
    alpha: float = 0.9
    """RMSprop smoothing constant (Keras' rho = 0.9; PyTorch's default would be 0.99)."""
    eps: float = 1e-7
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    muon_lr: float | None = None
    """muon: learning rate of the orthogonalized matrix updates (None = lr); other parameters use SGD at lr."""
    muon_momentum: float = 0.6
    muon_ns_steps: int = 3
    """Newton-Schulz iterations per Muon update (3 suffices for conv filters, Keller Jordan's airbench)."""
    muon_normalize: bool = False
    """Rescale each Muon-updated weight to norm sqrt(out) before its step (for layers followed by BN)."""


@dataclass
class ScheduleConfig:
    name: str = "constant"
    """constant | step | cosine | onecycle | linear | plateau (see engine/optim.py)."""
    warmup_epochs: float = 0.0
    """Linear warm-up from start_factor to 1 (cosine, linear, onecycle)."""
    warmup_fraction: float = 0.0
    """Warm-up as a fraction of all steps (used when larger than warmup_epochs); survives an epochs override."""
    start_factor: float = 0.0
    """Learning-rate fraction at the start of warm-up."""
    final_factor: float = 0.0
    """Learning-rate fraction reached at the last step (cosine, linear, onecycle)."""
    step_epochs: float = 30.0
    """step: multiply by gamma every step_epochs."""
    gamma: float = 0.1
    patience: int = 5
    """plateau: epochs without improvement of the monitored metric before the lr is multiplied by factor."""
    factor: float = 0.1
    monitor: str = "val_loss"
    """plateau: val_loss (lower is better) or val_accuracy (higher is better)."""
    min_lr: float = 0.0


@dataclass
class EMAConfig:
    """Exponential moving average of the weights, evaluated instead of the raw weights."""

    decay: float = 0.0
    """0 = off. Per update, applied every `every` steps."""
    every: int = 1
    warmup_epochs: float = 0.0
    """No averaging before this point (the early weights are poor)."""


@dataclass
class LookaheadConfig:
    """Lookahead-style averaging (airbench): every `every` steps the weights are pulled into a running
    average and replaced by it; the average's decay grows as decay_base**every * progress**decay_pow."""

    every: int = 0
    """0 = off."""
    start_epochs: float = 3.0
    decay_base: float = 0.95
    decay_pow: float = 3.0


@dataclass
class TrainConfig:
    epochs: float = 10
    """Epochs; a fraction trains the last epoch partly (e.g. 9.9)."""
    batch_size: int = 512
    eval_batch_size: int = 1000
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"
    """auto (cuda when present, else cpu) | cpu | cuda | cuda:N."""
    precision: str = "auto"
    """auto | fp32 | bf16 (autocast). auto: bf16 where the hardware computes it natively (a CUDA GPU with bf16,
    a CPU with AVX-512 BF16, AMX or Arm BF16), fp32 elsewhere (see engine/device.py)."""
    channels_last: str = "auto"
    """auto | true | false: NHWC memory format for the convolutions (auto: on; faster on every device measured)."""
    threads: int | None = None
    """Compute threads; default and maximum: the cores this process may use."""
    tta: str = "none"
    """Test-time augmentation for validation and test: none | flip | flip_translate."""
    ema: EMAConfig = field(default_factory=EMAConfig)
    lookahead: LookaheadConfig = field(default_factory=LookaheadConfig)
    compile: bool = False
    """torch.compile the model (fuses norm/activation kernels; the first steps pay for compilation)."""
    grad_clip: float | None = None
    budget_minutes: float | None = None
    """Fit the whole run (training, final evaluation, writing the run directory) into this many minutes on
    this machine: a short calibration measures the step time, and the recipe (schedule, warm-up,
    low-resolution share, fractional last epoch) is stretched over the steps that end in time, so the model
    is properly annealed (engine/budget.py). train.epochs is then the recipe's length, not the run's."""
    budget_schedule: str = "anneal"
    """With budget_minutes: anneal (a constant or plateau schedule also decays to schedule.final_factor by
    the last step) | recipe (keep the recipe's schedule as it is; a budget then only sets the length)."""
    max_train_minutes: float | None = None
    """A hard cap on training time: stop mid-schedule when reached (the model is not annealed). For a fixed
    time, prefer budget_minutes; this cap is for comparing recipes truncated at the same time."""
    final_test: bool = True
    """Evaluate on the test set at the end. Sweeps that choose a recipe set it false: they rank on
    validation and never see a test figure."""
    validate: str = "epoch"
    """epoch: validate after every epoch (best weights = best validation epoch); end: after the last epoch
    only (cheaper: validation with test-time augmentation is a large part of a short CPU run)."""
    progress: bool = True
    """Show a progress bar per epoch."""
    sync_batchnorm: bool = False
    """Under torchrun on GPUs: batch norms use the statistics of the whole global batch instead of each
    process's share (PyTorch's SyncBatchNorm; CUDA only, an error on CPU processes, nothing in one process)."""
    detect_anomaly: bool = False
    """Debugging a loss that turns NaN: autograd's anomaly mode names the operation that produced it (several
    times slower; off by default)."""
    deterministic: bool = False
    """Deterministic kernels (bit-identical reruns on a GPU; a little slower). CPU runs are deterministic anyway."""


@dataclass
class TransferConfig:
    """Training a model on a new dataset from what another learned (see transfer/)."""

    from_run: str | None = None
    """A cnnlab run directory whose model keeps every layer but its classifier (cnnlab transfer --from)."""
    trainable: str = "all"
    """What trains: head | all | N (the last N parameterised layers, head included) | a block name (it and
    everything after it). Frozen layers keep their batch-norm statistics (see models/surgery.py)."""
    backbone_lr_factor: float = 1.0
    """Discriminative rates: the trainable backbone layers learn at lr x this factor, the head at lr."""
    head_epochs: float = 0.0
    """Two stages: the head alone trains for this many epochs, then `trainable` applies (0: one stage)."""
    early_stopping: int = 0
    """Stop after this many epochs without a better validation accuracy (0: off); the best epoch's weights
    are the run's weights either way."""
    features: bool = False
    """Extract the backbone's pooled features once (cached), then train only a softmax classifier on them."""
    head_from: str | None = None
    """Fine-tuning: start the new classifier from a features run's (same backbone and classes), so that the
    fine-tuning begins where features + softmax ended instead of from a random head (cnnlab finetune
    --head-from RUN_DIR)."""
    extract_backend: str = "auto"
    """Feature extraction (features runs): auto (ONNX Runtime where installed, on a CPU in fp32; else torch) |
    torch | onnxruntime (see transfer/features.py)."""
    bn_statistics: str = "update"
    """Batch norm of the layers that train: update (running statistics follow the new data's batches) or
    frozen (kept as pretrained, scale and shift still learn; see models/surgery.py). Frozen layers' batch
    norm keeps its statistics either way."""


@dataclass
class Config:
    """Everything that defines one training run."""

    name: str = "run"
    out: str | None = None
    """Run directory; default runs/<name>-<timestamp>."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict in the YAML layout (model arguments beside ``name``)."""
        d = dataclasses.asdict(self)
        d["model"] = {"name": self.model.name, **self.model.args}
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# Fields that may differ when a run is resumed: where it runs, not what it computes.
RESUME_EXEMPT = {"out", "train.threads", "train.progress", "train.device", "data.root", "data.download",
                 "train.detect_anomaly"}

VALID_CHOICES = {
    "train.precision": ("auto", "fp32", "bf16"),
    "train.channels_last": ("auto", "true", "false"),
    "train.validate": ("epoch", "end"),
    "train.tta": ("none", "flip", "flip_translate"),
    "data.augment.flip_mode": ("random", "alternating"),
    "data.augment.pad_mode": ("reflect", "zeros", "edge"),
    "schedule.monitor": ("val_loss", "val_accuracy"),
    "data.layout": ("auto", "imagefolder", "terrassa", "csv"),
    "transfer.bn_statistics": ("update", "frozen"),
    "transfer.extract_backend": ("auto", "torch", "onnxruntime"),
}

# ----------------------------------------------------------------------------------------------- parsing


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """(T, True) for ``T | None``; (tp, False) otherwise."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the field's declared type, or raise a UserError naming the key."""
    tp, optional = _strip_optional(tp)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and tp is not str):
        if optional:
            return None
        raise UserError(f"config field '{key}' may not be empty; give a value")
    origin = typing.get_origin(tp)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
                return value.lower() in ("true", "yes", "on", "1")
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if tp is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            result = float(value)
            if not math.isfinite(result):
                raise ValueError
            return result
        if tp is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        if origin is list:
            (item_tp,) = typing.get_args(tp)
            if isinstance(value, str):
                try:
                    value = yaml.safe_load(value)
                except yaml.YAMLError:  # not a YAML list (control characters, bad syntax): a wrong value
                    raise ValueError from None
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        if origin is dict or tp is dict:
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
    except (TypeError, ValueError):
        name = getattr(tp, "__name__", str(tp))
        raise UserError(f"config field '{key}' must be {name}, got {value!r}") from None
    return value


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys with a suggestion."""
    if not isinstance(data, dict):
        raise UserError(f"config section '{prefix.rstrip('.') or 'top level'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise UserError(f"unknown config key '{dotted}'{did_you_mean(dotted, all_keys())}")
        tp = hints[key]
        if _is_dataclass_type(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, f"{dotted}.")
        else:
            kwargs[key] = _coerce(value, tp, dotted)
    return cls(**kwargs)


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the config (model arguments excluded: they depend on the model)."""
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            keys += all_keys(tp, f"{prefix}{f.name}.")
        elif not (cls is ModelConfig and f.name == "args"):
            keys.append(f"{prefix}{f.name}")
    return keys


def from_dict(data: dict[str, Any] | None) -> Config:
    """Config from a YAML-shaped dict; model arguments may sit beside ``model.name``."""
    data = dict(data or {})
    model = data.get("model")
    if isinstance(model, str):
        data["model"] = {"name": model}
    elif isinstance(model, dict):
        model = dict(model)
        args = dict(model.pop("args", None) or {})
        args.update({k: v for k, v in model.items() if k != "name"})
        data["model"] = {"name": model.get("name", ModelConfig.name), "args": args}
    cfg = _build(Config, data, "")
    cfg.train.channels_last = normalize_switch(cfg.train.channels_last)
    return cfg


def normalize_switch(value: Any) -> str:
    """auto | true | false from a bool or a yes/no/on/off/1/0 string (unknown text is left to validate())."""
    text = str(value).strip().lower()
    return {"yes": "true", "on": "true", "1": "true", "no": "false", "off": "false", "0": "false"}.get(text, text)


PRESETS_DIR = Path(__file__).resolve().parent / "configs"


def presets() -> list[str]:
    """Names of the configs shipped inside the package (src/cnnlab/configs, linked as configs/ in a checkout)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def find_config(path: str | Path) -> Path:
    """A config file by path, or a shipped preset by name ('fast89' or 'fast89.yaml'): presets live in the
    package, so they are found the same way from a checkout, an editable install or a wheel."""
    path = Path(path)
    if path.is_file() or len(path.parts) > 1:
        return path
    preset = PRESETS_DIR / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    return preset if preset.is_file() else path


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors for a missing or malformed file."""
    path = find_config(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        hint = "check the path" if len(path.parts) > 1 else f"check the path, or name a preset: {', '.join(presets())}"
        raise UserError(f"config file {path} does not exist; {hint}") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"config file {path} is not valid YAML{where}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of sections (data, model, optim, ...)")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """'train.epochs=5' -> ('train.epochs', 5). Values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise UserError(f"override '{text}' must look like section.key=value, e.g. train.epochs=5")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string; a number is meant
        try:
            value = float(value)
        except ValueError:
            pass
    return key, value


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a YAML-shaped dict (before validation, so errors name the key)."""
    data = _deep_copy(data)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if parts[0] == "model" and len(parts) == 2 and isinstance(data.get("model"), str):
            data["model"] = {"name": data["model"]}
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def resolve(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None,
            base: dict[str, Any] | None = None) -> Config:
    """The validated Config from (base dict) <- (YAML file) <- (dotted overrides)."""
    data = _deep_copy(base or {})
    if config_file is not None:
        data = merge(data, load_yaml(config_file))
    data = apply_overrides(data, overrides or {})
    cfg = from_dict(data)
    validate(cfg)
    return cfg


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; values of ``top`` win."""
    out = _deep_copy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = _deep_copy(value)
    return out


# ----------------------------------------------------------------------------------------------- checks


def validate(cfg: Config) -> None:
    """Range and choice checks that types alone cannot express; one UserError per problem.

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
    for key, choices in VALID_CHOICES.items():
        value = get_field(cfg, key)
        if value not in choices:
            raise UserError(f"config field '{key}' must be one of {', '.join(choices)}, got '{value}'"
                            f"{did_you_mean(str(value), choices)}")
    # Names (model, optimizer, schedule, dataset) are checked by their own registries, which import this
    # module: see classify.check_names. Imports flow one way: config knows no registry.


def get_field(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differences(a: Config, b: Config, exempt: set[str] = RESUME_EXEMPT) -> list[str]:
    """'key: a -> b' for each field that differs (exempt keys ignored)."""
    fa, fb = flatten(a.to_dict()), flatten(b.to_dict())
    return [f"{k}: {fa.get(k)!r} -> {fb.get(k)!r}" for k in sorted(set(fa) | set(fb))
            if k not in exempt and fa.get(k) != fb.get(k)]
