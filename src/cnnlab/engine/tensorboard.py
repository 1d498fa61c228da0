"""TensorBoard logs of a run (``train.tensorboard: true``, ``--tensorboard``), under RUN_DIR/tensorboard/.

TensorBoard shows what metrics.csv holds, so the two never disagree: each row of metrics becomes scalars
at the row's optimizer step (train and validation loss and accuracy, the learning rate, images/s, and the
row's ``epoch`` value, a fraction for the rows a time budget writes inside an epoch), values that are NaN
in the row (no validation split, a style network's accuracy) are left out. Figures the run writes become
images: a style network's preview at each epoch's end, and at the end of the run its figures (a
classifier's confusion matrix and learning curves, a style network's evolution strip).

Written through ``torch.utils.tensorboard`` by the main process only; tensorboard is an extra (``pip
install 'cnnlab[tensorboard]'``), imported when a run asks for it, so that a run refuses to start without
it instead of failing after training. Event files are append-only logs written by TensorBoard's own
writer (not atomically, unlike the run's other files); each row is flushed when written.

A resumed run appends: its writer starts a new event file whose first event tells TensorBoard to drop
every step after the checkpoint it resumes from (``purge_step``), that is any row the interrupted process
logged but never checkpointed, which the resumed run logs again; no step appears twice. That is why the
rows are logged before the run's checkpoint is written (RunSession.recording puts this callback first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UserError
from .loop import Callback, Trainer

FOLDER = "tensorboard"
# metrics.csv column -> TensorBoard tag (grouped by what is measured: train and val side by side)
TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_accuracy": "accuracy/train",
        "val_accuracy": "accuracy/val", "lr": "lr", "images_per_second": "speed/images_per_second",
        "epoch": "epoch"}
PREVIEW = "preview-epoch-{epoch}.png"  # a style network's preview after each epoch (style/train.py)
FIGURES = ("confusion_matrix.png", "curves.png", "evolution.png")  # the end's figures, where the run has them
INSTALL = "pip install 'cnnlab[tensorboard]'"


def summary_writer() -> type:
    """torch.utils.tensorboard.SummaryWriter, or a one-line UserError saying how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(f"train.tensorboard needs the tensorboard package: {INSTALL} "
                        f"(or leave it off: train.tensorboard=false)") from None
    return SummaryWriter


def read_png(path: Path):
    """A PNG as an RGB uint8 array [H, W, 3] (what add_image takes with dataformats='HWC')."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


class TensorBoardLog(Callback):
    """Writes RUN_DIR/tensorboard/ (module docstring). Made by RunSession.start, closed by RunSession.close."""

    def __init__(self, run_dir: str | Path):
        self.folder = Path(run_dir) / FOLDER
        self.run_dir = Path(run_dir)
        self.writer_class = summary_writer()  # before anything is computed: a missing package fails the run here
        self.writer = None
        self.step = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        self.step = trainer.state.steps or 0  # steps already done: 0, or those of the checkpoint resumed from
        if self.writer is None:
            self.writer = self.writer_class(log_dir=str(self.folder), purge_step=self.step + 1)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self.step = trainer.state.steps
        for key, tag in TAGS.items():
            value = row.get(key)
            if value is not None and value == value:  # NaN: not measured in this run
                self.writer.add_scalar(tag, float(value), self.step)
        preview = self.run_dir / PREVIEW.format(epoch=row["epoch"])
        if preview.is_file():
            self.writer.add_image("previews", read_png(preview), self.step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        """The run's figures as images at its last step, and the files closed (before summary.json)."""
        if self.writer is None:
            return
        for name in FIGURES:
            if (self.run_dir / name).is_file():
                self.writer.add_image(f"figures/{Path(name).stem}", read_png(self.run_dir / name), self.step,
                                      dataformats="HWC")
        self.writer.close()
        self.writer = None
