"""export(): a finished run's network written as one ONNX or TorchScript file, then checked against the run.

What is exported is what the run's own inference computes, in fp32 on the CPU:
- a classifier run (train, transfer, features, finetune): the network load_trained rebuilds; for a features
  run that is the frozen backbone with the trained softmax classifier as its head, so the file maps a
  normalized image batch to logits like every other classifier's;
- a style-network run: the transform network with the clamp to [0, 1] that `stylize apply` applies.

After writing, the file is opened the way `cnnlab predict` opens it and run on a batch of another size
than the one traced (another height and width too, for a style network), so that a wrong free axis or a
numerical difference shows at export time; the largest absolute difference from the run's model is returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import runs
from ..errors import UserError, unknown_name
from .loading import SUFFIXES, load_exported
from .metadata import ExportMeta

FORMATS = {fmt: suffix for suffix, fmt in SUFFIXES.items()}
"""onnx -> .onnx, torchscript -> .pt"""
RUN_KINDS = "a cnnlab train, transfer, features, finetune or stylize train run"


@dataclass
class Exportable:
    """What goes into the file: the network, an example input to trace, the contract, the free axes."""

    model: nn.Module
    example: torch.Tensor
    probe: torch.Tensor
    """Another input (other batch size; other sides for a style network) to check the written file with."""
    meta: ExportMeta
    dynamic: dict[int, str]


class ClampedStyle(nn.Module):
    """A style network with its output clamped to [0, 1], the image `stylize apply` makes of it."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).clamp(0, 1)


def default_path(run_dir: str | Path, fmt: str) -> Path:
    """RUN_DIR/export/model.onnx or model.pt."""
    return Path(run_dir) / "export" / f"model{FORMATS[fmt]}"


def export(run_dir: str | Path, fmt: str = "onnx", out: str | Path | None = None) -> dict[str, Any]:
    """Write the run's network to `out` (default: default_path) in `fmt` (onnx | torchscript), with its
    ExportMeta inside, and check the file; returns what was written and the measured difference."""
    if fmt not in FORMATS:
        raise unknown_name("export format", fmt, FORMATS)
    if fmt == "onnx":
        from .onnx_file import require

        require("onnx", "cnnlab export --format onnx")
    run = _run_folder(run_dir)
    target = Path(out) if out is not None else default_path(run.path, fmt)
    if target.suffix.lower() != FORMATS[fmt]:
        raise UserError(f"--out {target} must end in {FORMATS[fmt]} for --format {fmt} (predict tells the format "
                        f"by the name)")
    if target.is_dir():
        raise UserError(f"--out {target} is a folder; give a file name ending in {FORMATS[fmt]}")
    item = _style(run) if _is_style(run) else _classifier(run)
    runs.RunDir(target.parent).create()  # writable, with a one-line error if not
    if fmt == "onnx":
        from .onnx_file import write_onnx

        write_onnx(item.model, item.example, item.meta, target, item.dynamic)
    else:
        from .torchscript_file import write_torchscript

        write_torchscript(item.model, item.example, item.meta, target)
    return {"file": str(target), "format": fmt, "task": item.meta.task, "kind": item.meta.kind,
            "run": str(run.path), "bytes": target.stat().st_size, "classes": list(item.meta.classes),
            "input_shape": list(item.meta.input_shape), **_check(item, target, fmt)}


def _run_folder(run_dir: str | Path) -> runs.RunDir:
    run = runs.RunDir(run_dir)
    if not run.path.is_dir():
        what = "a file" if run.path.exists() else "no such folder"
        raise UserError(f"{run} is not a run folder ({what}); pass the --out folder of {RUN_KINDS}")
    if not run.exists(runs.BEST):
        if not any(run.exists(name) for name in (runs.CONFIG, runs.SUMMARY, runs.CHECKPOINT, "style.json")):
            raise UserError(f"{run} is not a run folder (no {runs.CONFIG}, no {runs.BEST}); pass the --out folder "
                            f"of {RUN_KINDS}")
        raise UserError(f"{run} has no trained weights ({runs.BEST}) yet; let the run finish an epoch (or resume "
                        f"it), then export it")
    return run


def _is_style(run: runs.RunDir) -> bool:
    from ..style.train import WEIGHTS_KIND

    return run.weights_metadata(runs.BEST).get("kind") == WEIGHTS_KIND


def _versions(run: runs.RunDir) -> dict[str, str]:
    from .. import __version__

    return {"run": str(run.path.resolve()), "cnnlab_version": __version__, "torch_version": torch.__version__}


def _classifier(run: runs.RunDir) -> Exportable:
    from ..models.trained import load_trained
    from ..transfer.ways import kind

    model, cfg, _, meta = load_trained(run.path)
    shape = tuple(int(v) for v in meta.image_shape)
    generator = torch.Generator().manual_seed(0)
    info = ExportMeta(task="classifier", kind=kind(cfg), input_shape=("batch", *shape), classes=tuple(meta.classes),
                      mean=tuple(meta.mean), std=tuple(meta.std), resize=meta.resize or meta.side, crop=meta.side,
                      epoch=meta.epoch, **_versions(run))
    return Exportable(model.float().cpu().eval(), torch.randn(2, *shape, generator=generator),
                      torch.randn(3, *shape, generator=generator), info, {0: "batch"})


def _style(run: runs.RunDir) -> Exportable:
    from ..style.train import load_network
    from ..style.transformer import MIN_SIDE

    net, meta = load_network(run.path)
    generator = torch.Generator().manual_seed(0)
    info = ExportMeta(task="style", kind="style-network", input_shape=("batch", 3, "height", "width"),
                      style=meta.get("style"), network=net.arguments(), min_side=MIN_SIDE, **_versions(run))
    return Exportable(ClampedStyle(net.float().cpu().eval()), torch.rand(1, 3, 64, 64, generator=generator),
                      torch.rand(2, 3, 72, 100, generator=generator), info, {0: "batch", 2: "height", 3: "width"})


def _check(item: Exportable, target: Path, fmt: str) -> dict[str, Any]:
    """The file run on `item.probe` as predict runs it, against the run's model: the largest absolute
    difference (None where ONNX Runtime is not installed to run an .onnx file)."""
    from importlib.util import find_spec

    if fmt == "onnx" and find_spec("onnxruntime") is None:
        return {"max_abs_diff": None, "checked_on": None}
    with torch.no_grad():
        expected = item.model(item.probe).float()
    got = load_exported(target, "cpu")(item.probe)
    if got.shape != expected.shape:
        raise RuntimeError(f"the exported {target} gives shape {tuple(got.shape)} for an input of shape "
                           f"{tuple(item.probe.shape)}, the run's model {tuple(expected.shape)}")
    return {"max_abs_diff": float((got - expected).abs().max()), "checked_on": list(item.probe.shape)}
