"""The sections of a run's Config: every field with its type, its default and why (the docstring under it).

The docstring under a field is also its command-line help (cli/_common.py derives flags from the fields),
and a field made with ``one_of(...)`` declares the values it takes. Loading, overrides and checks are in
loader.py and checks.py; this module holds only what a run is made of.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml

from .loader import one_of

# ----------------------------------------------------------------------------------------------- sections


@dataclass
class AugmentConfig:
    """Batched training augmentation (applied to whole uint8 batches, see ``data/augment.py``)."""

    translate: float = 0.0
    """Random shift: pixels when >= 1, else a fraction of the image side (Keras' shift_range 0.1 = 3 px)."""
    flip: bool = False
    """Random horizontal flip."""
    flip_mode: str = one_of("random", "alternating")
    """'random' (each image, p=0.5, every epoch) or 'alternating' (a random half, the other half next epoch)."""
    pad_mode: str = one_of("reflect", "zeros", "edge")
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
    layout: str = one_of("auto", "imagefolder", "terrassa", "csv")
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
    args: dict[str, Any] = field(default_factory=dict, metadata={"hidden_key": True})
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
    monitor: str = one_of("val_loss", "val_accuracy")
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
    precision: str = one_of("auto", "fp32", "bf16")
    """auto | fp32 | bf16 (autocast). auto: bf16 where the hardware computes it natively (a CUDA GPU with bf16,
    a CPU with AVX-512 BF16, AMX or Arm BF16), fp32 elsewhere (see engine/device.py)."""
    channels_last: str = one_of("auto", "true", "false")
    """auto | true | false: NHWC memory format for the convolutions (auto: on; faster on every device measured)."""
    threads: int | None = None
    """Compute threads; default and maximum: the cores this process may use."""
    tta: str = one_of("none", "flip", "flip_translate")
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
    budget_schedule: str = one_of("anneal", "recipe")
    """With budget_minutes: anneal (a constant or plateau schedule also decays to schedule.final_factor by
    the last step) | recipe (keep the recipe's schedule as it is; a budget then only sets the length)."""
    max_train_minutes: float | None = None
    """A hard cap on training time: stop mid-schedule when reached (the model is not annealed). For a fixed
    time, prefer budget_minutes; this cap is for comparing recipes truncated at the same time."""
    final_test: bool = True
    """Evaluate on the test set at the end. Sweeps that choose a recipe set it false: they rank on
    validation and never see a test figure."""
    validate: str = one_of("epoch", "end")
    """epoch: validate after every epoch (best weights = best validation epoch); end: after the last epoch
    only (cheaper: validation with test-time augmentation is a large part of a short CPU run)."""
    progress: bool = True
    """Show a progress bar per epoch."""
    tensorboard: bool = False
    """Also write TensorBoard logs in RUN_DIR/tensorboard/: metrics.csv's values per row, and the run's figures
    (needs pip install 'cnnlab[tensorboard]'; view with: tensorboard --logdir RUN_DIR)."""
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
    extract_backend: str = one_of("auto", "torch", "onnxruntime")
    """Feature extraction (features runs): auto (ONNX Runtime where installed, on a CPU in fp32; else torch) |
    torch | onnxruntime (see transfer/features.py)."""
    bn_statistics: str = one_of("update", "frozen")
    """Batch norm of the layers that train: update (running statistics follow the new data's batches) or
    frozen (kept as pretrained, scale and shift still learn; see models/surgery.py). Frozen layers' batch
    norm keeps its statistics either way."""


@dataclass
class Config:
    """Everything that defines one training run (config.yaml of its run directory)."""

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

    @classmethod
    def prepare_data(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The loader's hook before typing: model arguments may sit beside ``model.name`` (or the model be
        just its name), and train.channels_last takes booleans and yes/no words."""
        data = dict(data)
        model = data.get("model")
        if isinstance(model, str):
            data["model"] = {"name": model}
        elif isinstance(model, dict):
            model = dict(model)
            args = model.pop("args", None) or {}
            args = dict(args) if isinstance(args, dict) else args  # not a mapping: the loader names it
            if isinstance(args, dict):
                args.update({k: v for k, v in model.items() if k != "name"})
            data["model"] = {"name": model.get("name", ModelConfig.name), "args": args}
        train = data.get("train")
        if isinstance(train, dict) and isinstance(train.get("channels_last"), (str, bool, int, float)):
            data["train"] = {**train, "channels_last": normalize_switch(train["channels_last"])}
        return data

    def check(self) -> None:
        """The loader's hook after typing: ranges and choices (checks.validate)."""
        from .checks import validate

        validate(self)


def normalize_switch(value: Any) -> str:
    """auto | true | false from a bool or a yes/no/on/off/1/0 string (unknown text is left to validate())."""
    text = str(value).strip().lower()
    return {"yes": "true", "on": "true", "1": "true", "no": "false", "off": "false", "0": "false"}.get(text, text)
