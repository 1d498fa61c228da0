"""An exported file opened for inference, by its suffix: .onnx with ONNX Runtime, .pt with torch.jit.

Both give an object that maps a float32 tensor to a float32 tensor and carries the file's ExportMeta
(`.meta`), so that `cnnlab predict` treats the two formats, and a run folder, alike.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError

SUFFIXES = {".onnx": "onnx", ".pt": "torchscript"}
"""The file names `cnnlab export` writes, per format (the format is told by the suffix)."""


def is_exported_file(path: str | Path) -> bool:
    """Whether `path` names an exported file rather than a run folder (by its suffix; it may not exist)."""
    p = Path(path)
    return p.suffix.lower() in SUFFIXES and not p.is_dir()


def load_exported(path: str | Path, device: torch.device | str = "cpu"):
    """The exported model at `path` (OnnxModel or TorchScriptModel), ready to run; UserError if it is not one."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p} does not exist; pass a run folder or a file written by cnnlab export "
                        f"({', '.join(SUFFIXES)})")
    device = torch.device(device)
    if SUFFIXES.get(p.suffix.lower()) == "onnx":
        from .onnx_file import OnnxModel

        return OnnxModel(p, device)
    if SUFFIXES.get(p.suffix.lower()) == "torchscript":
        from .torchscript_file import TorchScriptModel

        return TorchScriptModel(p, device)
    raise UserError(f"{p} is not an exported model: its name must end in {' or '.join(SUFFIXES)}")
