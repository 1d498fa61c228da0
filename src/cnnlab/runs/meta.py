"""RunMeta: what a classifier's weights need beside them to be used (stored in best.safetensors' metadata).

The class names, the input shape and the normalization travel inside the weights file, so a run folder
(or the file alone) is enough to rebuild the model and feed it photos. This module is the one place that
writes and parses that metadata; `RunMeta.view()` is the preprocessing a photo gets before the model sees it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from .files import BEST, RunDir


def _epoch(text: str) -> int | float:
    """A budget run's rows, its last epoch included, may end part-way through an epoch ("8.75")."""
    value = float(text)
    return int(value) if value.is_integer() else value


@dataclass(frozen=True)
class RunMeta:
    """A classifier's classes and input contract."""

    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]
    """(channels, height, width) the network takes."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    epoch: int | float | None = None
    """The epoch the weights are from (best validation epoch, else the last); a time budget's last epoch may be
    fractional (8.75: the run ended three quarters into its ninth)."""
    resize: int | None = None
    """The shorter side a photo is resized to before its center crop to the input side (an ImageNet backbone's
    256 for 224); None: straight to the input side (CIFAR networks, and runs written before it was stored)."""

    @property
    def side(self) -> int:
        return int(self.image_shape[-1])

    def view(self):
        """The photo preprocessing: resized and cropped to the input side, normalized like training."""
        from ..data.preprocess import Preprocess

        return Preprocess(self.resize or self.side, self.side, self.mean, self.std, fixed_size=True)

    def to_metadata(self) -> dict[str, str]:
        """safetensors metadata (string values only)."""
        meta = {"classes": json.dumps(list(self.classes)), "image_shape": json.dumps(list(self.image_shape)),
                "mean": json.dumps(list(self.mean)), "std": json.dumps(list(self.std))}
        if self.epoch is not None:
            meta["epoch"] = str(self.epoch)
        if self.resize is not None:
            meta["resize"] = str(self.resize)
        return meta

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "image_shape": list(self.image_shape), "mean": list(self.mean),
                "std": list(self.std)}

    @classmethod
    def from_metadata(cls, meta: dict[str, str], where: str = "the weights file") -> RunMeta:
        try:
            return cls(classes=tuple(json.loads(meta["classes"])),
                       image_shape=tuple(int(v) for v in json.loads(meta["image_shape"])),  # type: ignore[arg-type]
                       mean=tuple(float(v) for v in json.loads(meta["mean"])),
                       std=tuple(float(v) for v in json.loads(meta["std"])),
                       epoch=_epoch(meta["epoch"]) if meta.get("epoch") else None,
                       resize=int(meta["resize"]) if meta.get("resize") else None)
        except (KeyError, ValueError, TypeError):
            raise UserError(f"{where} lacks cnnlab's classifier metadata (classes, image shape, normalization); "
                            f"is it a classifier run's weights?") from None

    @classmethod
    def of_run(cls, folder: str | Path | RunDir, name: str = BEST) -> RunMeta:
        """The metadata of a run's weights (best.safetensors by default)."""
        run = folder if isinstance(folder, RunDir) else RunDir(folder)
        return cls.from_metadata(run.weights_metadata(name), str(run / name))
