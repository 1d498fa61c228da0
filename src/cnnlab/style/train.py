"""Fast style transfer (Johnson et al., ECCV 2016): a transform network trained for one style on a folder of
content photos, with the same content, style and total-variation losses as the optimization method.

It trains in cnnlab's one training loop (engine/loop.py) with a pluggable objective instead of cross-entropy:
the loss network compares each output with its own input (content) and with the painting (style). The run
directory is a training run's: metrics.csv, checkpoint.pt after every epoch (resumable, same result),
best.safetensors (the latest epoch's network, with what rebuilds it in its metadata), and a preview of
fixed photos after every epoch (preview-epoch-N.png) and every `preview_every` steps, collected at the end
into evolution.png: how the output changes over training, as the course showed it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import runs
from ..config import OptimConfig, ScheduleConfig, one_of
from ..data.images import IMAGE_SUFFIXES, images_under, read_image
from ..engine import Callback, Trainer
from ..engine.callbacks import ProgressBar, TimeCapAnneal
from ..engine.optim import LrSchedule, build_optimizer
from ..engine.run import RunSession
from ..errors import UserError
from . import lossnet
from .network_objective import PerceptualObjective
from .optimize import StyleObjective, resize_longest
from .photos import load_photos, photos_digest  # decoded and cached once (style/photos.py)
from .transformer import TransformNet

SETTINGS = "style.json"
KIND = "style-network"  # summary.json's kind
WEIGHTS_KIND = "style_network"  # the weights file's metadata (unchanged, so older networks still load)


@dataclass
class StyleTrainSettings:
    """Everything that defines one style network's training (saved as style.json in the run directory).

    Loaded like every settings object (config.load_settings: YAML, KEY=VALUE, typed, checked); the docstring
    under each field is also its `cnnlab stylize train` flag's help."""

    style: str = ""
    """The painting whose style the network learns (required unless resuming)."""
    content_dir: str = ""
    """Photos to train on (any depth), e.g. a dataset folder."""
    image_size: int = 256
    """Side of the square crops of the content photos the network trains on."""
    style_size: int = 256
    """Longest side the painting is resized to for its Gram matrices (its brush strokes' scale: the network
    paints them at a fixed size in pixels, so the size of the pictures it will stylize is a good choice)."""
    batch_size: int = 4
    """Photos per training step."""
    epochs: float = 2.0
    """Passes over the photos."""
    iterations: int = 0
    """When set, train this many steps instead of `epochs`."""
    minutes: float = 0.0
    """When set, stop after this many minutes of training (the epoch under way is cut short; its preview,
    checkpoint and metrics are written as at any epoch's end), so a run fits a time budget."""
    lr: float = 1e-3
    """Adam's learning rate."""
    content_weight: float = 3.0
    """Content loss weight. Higher than optimize's 1: with 1, a network trained for minutes, not hours, loses the
    photo's subject under the painting (content weight 1 vs 3 by eye: benchmarks/results/style-network-cw3-*.md)."""
    style_weight: float = 10.0
    """Style loss weight."""
    tv_weight: float = 10.0
    """Total-variation weight (smoothness of the output)."""
    lr_anneal: str = one_of("none", "linear", "cosine")
    """none: a constant lr | linear, cosine: the lr decays to 0 at the run's last step, or at the --minutes cap
    (re-planned as the run measures its pace). Measured: no lower style loss at 5 minutes (see
    docs/benchmarks/style.md), so it is off by default."""
    stability_weight: float = 0.0
    """Stability weight (0: off): the mean squared change of the output when small noise is added to the photo,
    so that noise and compression in a video's frames do not flicker in its stylization (Gupta et al. 2017 trace
    flicker to this instability; the loss is Element AI's noise-resilience term, Rainy & de Berker 2018)."""
    stability_noise: float = 0.02
    """Standard deviation of that noise, in pixel values of 0 to 1 (0.02: about 5 of 255)."""
    stability_shift: int = 0
    """With a stability weight, also move the noisy photo by up to this many pixels (0: noise only): the output
    of the moved photo should be the moved output, as in a camera pan (the network's stride-2 layers make it
    change with shifts that are not multiples of 4: flicker on moving video; Wang et al. 2020's compound
    regularization: noise and motion)."""
    width: int = 32
    """Channels of the network's first layer (32, as the paper)."""
    residual_blocks: int = 5
    """Residual blocks of the network (5, as the paper)."""
    output: str = one_of("sigmoid", "linear")
    """The output layer: sigmoid (the loss sees exactly the colours a picture shows: no colour blobs, see
    transformer.py) | linear (the paper's; values clamped to [0, 1] only when applied)."""
    separable: bool = False
    """Depthwise-separable residual blocks (a depthwise 3x3 then a pointwise 1x1 per convolution): about 8x fewer
    operations in the blocks, for real time on a CPU (benchmarks/results/style-speed-*.md)."""
    edge_kernel: int = 9
    """Kernel of the first and last convolutions, which run at full resolution: 9 (the paper), 7, 5 or 3."""
    downsamples: int = 2
    """Stride-2 stages before the residual blocks: 2 (the paper: blocks at 1/4 of the resolution) or 3 (1/8)."""
    loss_net: str = ""
    """vgg19 | vgg16 | efficientnet_lite0; default: vgg19 where its weights are available, else efficientnet_lite0
    (see lossnet.py)."""
    loss_net_weights: str | None = None
    """The loss network's weights from a local file (default: its pretrained ones)."""
    preview_every: int = 0
    """Also write a preview every N steps (0: after every epoch only)."""
    preview_images: int = 4
    """Fixed photos stylized in each preview."""
    limit_images: int = 0
    """Train on the first N photos only (0: all)."""
    seed: int = 0
    """Seed of the network's initial weights and of the photos' order."""
    precision: str = one_of("auto", "fp32", "bf16")
    """auto: bf16 where the hardware computes it natively, else fp32 (engine/device.py)."""
    tensorboard: bool = False
    """Also write TensorBoard logs in RUN_DIR/tensorboard/: metrics.csv's values per epoch and the previews
    (needs pip install 'cnnlab[tensorboard]')."""

    def check(self) -> None:
        """Run by the loader after every load (and by train() before anything is computed)."""
        _check(self)


def content_files(folder: str | Path) -> list[Path]:
    """Every image file under `folder` (any depth: a dataset's class folders or splits work), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"--content-dir {root} is not a folder; pass a folder of photos")
    files = images_under(root)
    if not files:
        raise UserError(f"--content-dir {root} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


class PhotoBatches:
    """Shuffled batches of the photos as floats in [0, 1], randomly flipped; seeded per epoch so that a resumed
    run draws the same batches. The labels are placeholders (the style objective does not use them)."""

    def __init__(self, photos: torch.Tensor, batch_size: int, seed: int, device: torch.device):
        self.photos, self.batch_size, self.seed, self.device = photos, batch_size, seed, device
        self.labels = torch.zeros(len(photos), dtype=torch.long)

    def __len__(self) -> int:
        return max(1, len(self.photos) // self.batch_size)

    def epoch(self, epoch: int, max_batches: int | None = None):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.photos), generator=g)
        flips = torch.rand(len(self.photos), generator=g) < 0.5
        for i in range(min(len(self), max_batches or len(self))):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.photos[idx].float() / 255
            x = torch.where(flips[idx].view(-1, 1, 1, 1), x.flip(-1), x)
            yield x.to(self.device), self.labels[idx].to(self.device)


class Previews(Callback):
    """Stylizes fixed photos after every epoch (and every `every` steps): preview-*.png for each, and
    evolution.png (the first photos through every preview so far, one row per preview). The previews'
    images are kept in previews.safetensors, so a resumed run's evolution still starts at the beginning. It runs
    before the checkpoint is written: a crash between the two repeats that epoch and rewrites its preview."""

    FILE = "previews.safetensors"
    ROWS = 10  # snapshots in evolution.png at most

    def __init__(self, run: runs.RunDir, photos: torch.Tensor, every: int, device: torch.device):
        from safetensors.torch import load_file

        self.run, self.photos, self.every, self.device = run, photos.float() / 255, every, device
        self.kept: dict[str, torch.Tensor] = {}
        if run.exists(self.FILE):
            self.kept = dict(load_file(str(run / self.FILE)))

    def _write(self, trainer: Trainer, label: str) -> None:
        from safetensors.torch import save as to_bytes

        from ..report.plots import image_grid

        model = trainer.model
        was_training = model.training
        model.eval()
        with torch.no_grad():
            out = model(self.photos.to(self.device)).float().clamp(0, 1).cpu()
        model.train(was_training)
        image_grid([list(self.photos), list(out)], [["photo"] * len(out), [label] * len(out)],
                   self.run / f"preview-{label.replace(' ', '-')}.png", title=label)
        key = f"{trainer.schedule.step_count:09d} {label}"  # sorts by step
        self.kept[key] = (out[: 2] * 255).round().to(torch.uint8).contiguous()
        keys = sorted(self.kept)
        if len(keys) > 2 * self.ROWS:  # thin out every other snapshot (the first and the latest stay), so that
            keep = set(keys[::2]) | {keys[-1]}  # a run of many short epochs costs the same per snapshot
            self.kept = {k: v for k, v in self.kept.items() if k in keep}
        runs.atomic_write_bytes(self.run / self.FILE, to_bytes(self.kept))
        keys = sorted(self.kept)
        if len(keys) > self.ROWS:  # the strip: ROWS snapshots evenly spread, the first and the latest included
            keys = [keys[round(i * (len(keys) - 1) / (self.ROWS - 1))] for i in range(self.ROWS)]
        rows = [[self.photos[i] for i in range(min(2, len(self.photos)))]] + \
            [[t.float() / 255 for t in self.kept[k]] for k in keys]
        labels = [["photo"] * len(rows[0])] + [[k.split(" ", 1)[1]] * len(rows[0]) for k in keys]
        image_grid(rows, labels, self.run / "evolution.png", title="the style network over training", tile_inches=2.0)

    def on_step_end(self, trainer: Trainer) -> None:
        step = trainer.schedule.step_count
        if self.every and step % self.every == 0 and step % trainer.schedule.steps_per_epoch:
            self._write(trainer, f"step {step}")

    def on_epoch_end(self, trainer: Trainer, row: dict) -> None:
        self._write(trainer, f"epoch {row['epoch']}")


def _settings_to_run(settings: StyleTrainSettings, session: RunSession) -> StyleTrainSettings:
    """A new run's settings (paths made absolute, so --resume works from any folder), or a resumed run's
    saved ones: style.json fixes what the run computes."""
    if not session.resuming:
        settings.style, settings.content_dir = str(Path(settings.style).resolve()), str(Path(settings.content_dir).resolve())
        return settings
    saved = session.run.read_json(SETTINGS)
    saved.pop("photos_key", None)
    saved.setdefault("output", "linear")  # a run started before `output` existed resumes its linear network
    saved.setdefault("stability_weight", 0.0)  # ... and without the stability term
    saved.setdefault("lr_anneal", "none")  # ... and with a constant lr
    saved.setdefault("stability_shift", 0)  # ... and its stability term without motion
    try:
        return StyleTrainSettings(**saved)
    except TypeError:
        raise UserError(f"cannot resume {session.run}: its {SETTINGS} is not one cnnlab wrote") from None


def train(settings: StyleTrainSettings, out: str | Path, *, resume: bool = False, device: str = "auto",
          threads: int | None = None, cache_dir: str | None = None, progress: bool = True,
          callbacks: Sequence[Callback] = ()) -> dict:
    """Train a style network (see the module docstring); `resume` continues the run in `out` (the result
    equals an uninterrupted run's). Extra `callbacks` see every epoch (tests use them to interrupt)."""
    session = RunSession.open(out, kind=KIND, resume=resume, settings_file=SETTINGS)
    with session.removed_if_it_fails_early():
        return _train(session, settings, device=device, threads=threads, cache_dir=cache_dir, progress=progress,
                      callbacks=callbacks)


def _train(session: RunSession, settings: StyleTrainSettings, *, device: str, threads: int | None,
           cache_dir: str | None, progress: bool, callbacks: Sequence[Callback]) -> dict:
    from ..engine.device import autocast

    resume = session.resuming
    s = _settings_to_run(settings, session)
    run = session.run
    _check(s)
    style_image = read_image(s.style)
    files = content_files(s.content_dir)
    if s.limit_images:
        files = files[: s.limit_images]
    photos_key = photos_digest(files)
    if resume and run.read_json(SETTINGS).get("photos_key") not in (None, photos_key):
        raise UserError(f"cannot resume {run}: the photos in {s.content_dir} changed since it started (files added, "
                        f"removed or modified); start a new run")
    execution = session.start(device=device, threads=threads, precision=s.precision, channels_last=False,
                              announce=False, tensorboard=s.tensorboard)
    dev = session.device
    net = lossnet.build(s.loss_net or None, s.loss_net_weights).to(dev)
    s.loss_net = net.name
    session.write_settings(SETTINGS, json.dumps({**asdict(s), "photos_key": photos_key}, indent=2) + "\n")
    photos = load_photos(files, s.image_size, _cache_dir(cache_dir))
    batches = PhotoBatches(photos, min(s.batch_size, len(photos)), s.seed, dev)
    steps_total = s.iterations or int(math.ceil(s.epochs * len(batches)))
    epoch_steps = [len(batches)] * (steps_total // len(batches)) + \
        ([steps_total % len(batches)] if steps_total % len(batches) else [])

    torch.manual_seed(s.seed)
    model = TransformNet(s.width, s.residual_blocks, s.separable, s.edge_kernel, s.downsamples, s.output).to(dev)
    style_x = resize_longest(style_image, s.style_size).to(dev)
    with autocast(dev, execution.precision):
        objective = StyleObjective(net, [style_x], [1.0], s.content_weight, s.style_weight, s.tv_weight)
    optimizer = build_optimizer(model, OptimConfig(name="adam", lr=s.lr), execution.precision)
    schedule = LrSchedule(optimizer, ScheduleConfig(name="constant"), steps_per_epoch=len(batches),
                          total_steps=steps_total)
    meta = {"kind": WEIGHTS_KIND, "arguments": json.dumps(model.arguments()), "style": Path(s.style).name,
            "loss_net": net.name, "image_size": str(s.image_size)}
    previews = Previews(run, photos[: s.preview_images], s.preview_every, dev)
    perceptual = PerceptualObjective(objective, model, s.stability_weight, s.stability_noise, s.seed,
                                     lambda: schedule.step_count, s.stability_shift)
    trainer = Trainer(model, optimizer, schedule, device=dev, precision=execution.precision,
                      objective=perceptual, max_train_seconds=s.minutes * 60 or None,
                      callbacks=[previews, *session.recording(meta), *callbacks])  # previews first: see Previews
    if s.lr_anneal != "none":  # under --minutes the run's last step is known only as it trains
        if s.minutes:
            trainer.callbacks.append(TimeCapAnneal(schedule, s.minutes * 60, s.lr_anneal))
        else:
            schedule.anneal_to_end(s.lr_anneal)
    checkpoint = session.checkpoint()
    session.restore(trainer, checkpoint)
    print(f"training a style network ({sum(p.numel() for p in model.parameters()):,} parameters) for "
          f"{Path(s.style).name} on {len(photos)} photos at {s.image_size} px, {steps_total} steps of "
          f"{batches.batch_size}, loss network {net.name}, {execution.describe()} -> {run}", flush=True)
    state = session.fit(trainer, batches, None, epoch_steps, ProgressBar if progress else None)
    history = state.history
    summary = runs.StyleNetworkSummary(
        kind=KIND, name=run.path.name, style=s.style, photos=len(photos), steps=trainer.schedule.step_count,
        epochs=state.epoch, first_epoch_loss=history[0]["train_loss"] if history else None,
        final_loss=history[-1]["train_loss"] if history else None, train_seconds=state.train_seconds,
        stop_reason=state.stop_reason or None, budget_minutes=s.minutes or None, loss_net=net.name,
        settings=asdict(s), weights=str(run / runs.BEST), resumed=session.resuming)
    return session.close(summary).to_dict()


def _cache_dir(cache_dir: str | None) -> Path:
    from ..config import DataConfig
    from ..data.folders import cache_root

    return cache_root(DataConfig(cache_dir=cache_dir))


def _check(s: StyleTrainSettings) -> None:
    from .optimize import check_weights
    from .transformer import MIN_SIDE, check_architecture

    for name in ("batch_size", "width", "residual_blocks"):
        if getattr(s, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be 1 or more, got {getattr(s, name)}")
    check_architecture(s.edge_kernel, s.downsamples)
    if s.image_size < MIN_SIDE or s.style_size < MIN_SIDE:
        raise UserError(f"--image-size and --style-size must be {MIN_SIDE} or more, got {s.image_size} and "
                        f"{s.style_size}")
    if s.iterations < 0 or s.limit_images < 0 or s.preview_every < 0 or s.preview_images < 1:
        raise UserError("--iterations, --limit-images and --preview-every must be 0 or more")
    if not s.minutes >= 0:  # NaN fails too
        raise UserError(f"--minutes must be 0 (no limit) or more, got {s.minutes}")
    if not (s.epochs > 0 and s.lr > 0):
        raise UserError(f"--epochs and --lr must be more than 0, got {s.epochs} and {s.lr}")
    check_weights(content_weight=s.content_weight, style_weight=s.style_weight, tv_weight=s.tv_weight,
                  stability_weight=s.stability_weight, stability_noise=s.stability_noise)
    if s.stability_noise > 1:
        raise UserError(f"--stability-noise is a standard deviation in pixel values of 0 to 1, got {s.stability_noise}")
    if s.stability_shift and not s.stability_weight:
        raise UserError(f"--stability-shift {s.stability_shift} moves the photo of the stability term: give it a "
                        f"--stability-weight too (e.g. 300)")
    if not 0 <= s.stability_shift <= (s.image_size - MIN_SIDE) // 3:
        raise UserError(f"--stability-shift must be 0 to a third of --image-size less {MIN_SIDE} "
                        f"({(s.image_size - MIN_SIDE) // 3} at {s.image_size} px), got {s.stability_shift}")


def load_network(path: str | Path, device: torch.device | str = "cpu") -> tuple[TransformNet, dict[str, str]]:
    """A trained style network from its run directory or its .safetensors file (never a pickle)."""
    from safetensors import SafetensorError

    path = Path(path)
    file = path / runs.BEST if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"--model {path} is not a style network: neither a style training run directory nor a "
                        f".safetensors file")
    try:
        holder = runs.RunDir(file.parent)
        meta = holder.weights_metadata(file.name)
        state = holder.load_weights(file.name)
    except (SafetensorError, UserError, OSError, ValueError):
        raise UserError(f"--model {file} is not a style network (not a safetensors file cnnlab wrote)") from None
    if meta.get("kind") != WEIGHTS_KIND:
        raise UserError(f"--model {file} is not a style network (it holds a {meta.get('kind', 'classifier')}); "
                        f"train one with cnnlab stylize train")
    arguments = {"output": "linear", **json.loads(meta["arguments"])}  # networks saved before `output` existed
    model = TransformNet(**arguments)
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise UserError(f"--model {file}: its weights do not fit the network its metadata describes") from None
    return model.eval().to(device), meta


__all__ = ["StyleTrainSettings", "train", "load_network", "content_files"]
