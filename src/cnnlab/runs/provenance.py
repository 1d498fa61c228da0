"""Where a run came from: the source tree's commit and the machine (environment.json)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch


def git_commit() -> str:
    """The commit of the cnnlab source tree ('+dirty' when it has uncommitted changes), or 'unknown'."""
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=src,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(threads: int, device: torch.device, world_size: int = 1,
                execution: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a reader needs to reproduce or compare a run's timing (`execution`: precision, memory format,
    CPU capability and class, as resolved by engine.device.resolve_execution)."""
    import torchvision

    from ..engine.device import available_cores, cpu_name

    env = {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
           "platform": platform.platform(), "cpu": cpu_name(), "cores": os.cpu_count(),
           "cores_available": available_cores(), "threads": threads,
           "device": str(device), "world_size": world_size, "git_commit": git_commit(),
           "command": sys.argv, **(execution or {})}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env
