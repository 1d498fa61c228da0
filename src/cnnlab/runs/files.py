"""RunDir: a run directory's files, each written atomically (see the package docstring for the layout).

Every file is written to a temporary name in the same folder, flushed to disk (fsync), renamed over the
old one, and the folder's entry is flushed too: an interruption or a power cut never leaves half a file,
and a file that was there stays whole until its replacement is. Files get the usual permissions (the
umask), not the private ones of a temporary file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from ..errors import UserError

CONFIG = "config.yaml"
SUMMARY = "summary.json"
METRICS = "metrics.csv"
CHECKPOINT = "checkpoint.pt"
BEST = "best.safetensors"
ENVIRONMENT = "environment.json"


def _file_mode() -> int:
    """0o666 less the process's umask: what open() would give a new file (mkstemp gives 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename is durable only then); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# Fault injection (tests/test_crash_safety.py): seconds to pause in the middle of every write, so that a kill
# lands inside one. Never set in normal use.
SLOW_WRITES = float(os.environ.get("CNNLAB_SLOW_WRITES", "0") or 0)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, rename over `path`, fsync the folder."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as fh:
            if SLOW_WRITES:
                fh.write(data[: len(data) // 2])
                fh.flush()
                time.sleep(SLOW_WRITES)
                data = data[len(data) // 2:]
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class RunDir:
    """A run directory on disk; see the module docstring for its files."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------------------------------ create

    def create(self) -> RunDir:
        """Make the folder (and parents) and check that it is writable, with a one-line error if not."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if int(os.environ.get("RANK", "0")) == 0:  # other torchrun ranks never write the run's files
                self.remove_stale_temporaries()
            probe = self.path / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UserError(f"output directory {self.path} is not writable ({exc.strerror}); "
                            f"choose another --out") from None
        return self

    def remove_stale_temporaries(self) -> None:
        """Temporary files of writes a killed process never finished (atomic_write_bytes' ``.NAME.*.tmp``, the
        writability probe): never results, since a result only appears by the rename that ends a write."""
        for stale in [*self.path.glob(".*.tmp"), *self.path.glob(".write-test-*")]:
            if stale.is_file() and not stale.is_symlink():
                stale.unlink(missing_ok=True)

    def exists(self, name: str) -> bool:
        return (self.path / name).is_file()

    @property
    def finished(self) -> bool:
        return self.exists(SUMMARY)

    # ------------------------------------------------------------------------------------------ write

    def write_text(self, name: str, text: str) -> Path:
        atomic_write_bytes(self.path / name, text.encode())
        return self.path / name

    def write_json(self, name: str, data: dict[str, Any]) -> Path:
        return self.write_text(name, json.dumps(_json_safe(data), indent=2) + "\n")

    def write_csv(self, name: str, rows: list[dict[str, Any]]) -> Path:
        buf = io.StringIO()
        if rows:
            fields = list(dict.fromkeys(k for row in rows for k in row))
            writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _fmt(v) for k, v in row.items()})
        return self.write_text(name, buf.getvalue())

    def save_checkpoint(self, state: dict[str, Any]) -> Path:
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.path / CHECKPOINT, buf.getvalue())
        return self.path / CHECKPOINT

    def save_weights(self, state_dict: dict[str, torch.Tensor], name: str = BEST,
                     metadata: dict[str, str] | None = None) -> Path:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        atomic_write_bytes(self.path / name, safetensors_bytes(tensors, metadata=metadata))
        return self.path / name

    # ------------------------------------------------------------------------------------------ read

    def read_json(self, name: str) -> dict[str, Any]:
        try:
            return json.loads((self.path / name).read_text())
        except FileNotFoundError:
            raise UserError(f"{self.path / name} does not exist; is {self.path} a finished cnnlab run?") from None
        except json.JSONDecodeError:
            raise UserError(f"{self.path / name} is not valid JSON; the run directory is damaged") from None

    def read_metrics(self) -> list[dict[str, Any]]:
        try:
            with open(self.path / METRICS, newline="") as fh:
                return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(fh)]
        except FileNotFoundError:
            return []

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """The training state; weights_only=True, so a tampered file cannot run code."""
        path = self.path / CHECKPOINT
        if not path.is_file():
            raise UserError(f"{path} does not exist: the run has no finished epoch to resume from; "
                            f"start it again without --resume")
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:
            raise UserError(f"cannot read checkpoint {path} ({type(exc).__name__}); it is damaged or not a "
                            f"cnnlab checkpoint") from None

    def weights_metadata(self, name: str = BEST) -> dict[str, str]:
        """The string metadata stored in a safetensors file (classes, image shape, normalization)."""
        path = self.path / name
        if not path.is_file():
            raise UserError(f"{path} does not exist; is {self.path} a cnnlab run directory with trained weights?")
        try:
            with safe_open(str(path), framework="pt") as fh:
                return dict(fh.metadata() or {})
        except Exception as exc:
            raise UserError(f"cannot read weights {path} ({type(exc).__name__}); the file is damaged") from None

    def load_weights(self, name: str = BEST) -> dict[str, torch.Tensor]:
        path = self.path / name
        if not path.is_file():
            raise UserError(f"{path} does not exist; is {self.path} a cnnlab run directory with trained weights?")
        try:
            return load_file(str(path))
        except Exception as exc:
            raise UserError(f"cannot read weights {path} ({type(exc).__name__}); the file is damaged") from None


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def _parse(text: str) -> Any:
    if text == "":
        return float("nan")
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text in ("True", "False"):
        return text == "True"
    return text
