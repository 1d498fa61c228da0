"""TorchScript files (.pt): written with torch.jit.trace, read with torch.jit.load.

A TorchScript archive runs without cnnlab's (or any) Python source: C++ (libtorch) and Python programs load it
with torch alone. Tracing records the operations one example performed; every cnnlab network has the same
operations whatever its input's values, and the batch size (and a style network's height and width) stay
free. torch marks torch.jit as deprecated in favour of torch.export; it still writes and loads these files,
and its warnings are not the user's to act on, so they are silenced here.

A TorchScript file is a program: load only files you trust (an .onnx file holds no code). torch.jit.load
reads no Python pickle, so a tampered file can fail to load but cannot run a pickle's payload.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..runs import atomic_write_bytes
from .metadata import TORCHSCRIPT_FILE, ExportMeta


def write_torchscript(model: nn.Module, example: torch.Tensor, meta: ExportMeta, path: Path) -> None:
    """`model` (eval mode, fp32, CPU) traced on `example`, saved with the metadata as an extra file."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (example,), check_trace=False)  # export() checks the file instead
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_FILE: meta.to_json()})
    atomic_write_bytes(path, buffer.getvalue())


class TorchScriptModel:
    """An exported .pt file loaded by torch.jit: float32 tensors in, float32 tensors out (on the CPU)."""

    def __init__(self, path: Path, device: torch.device):
        files = {TORCHSCRIPT_FILE: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.module = torch.jit.load(str(path), map_location=device, _extra_files=files)
        except Exception as exc:  # RuntimeError for most damage; ValueError, OSError for others
            raise UserError(f"cannot read {path} as a TorchScript model ({type(exc).__name__}); is it a file "
                            f"written by cnnlab export --format torchscript?") from None
        self.device = device
        self.meta = ExportMeta.from_json(files[TORCHSCRIPT_FILE], str(path))

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.to(self.device, torch.float32)).float().cpu()
