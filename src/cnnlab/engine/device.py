"""Where and how computation runs: device, thread count, precision, memory format."""

from __future__ import annotations

import contextlib
import os

import torch

from ..errors import UserError


def available_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def configure_threads(requested: int | None = None, world_size: int = 1) -> int:
    """Set torch's compute threads: the request, capped at this process's share of the cores.

    More threads than cores makes CPU training many times slower (oversubscription), so a larger request is
    capped rather than honoured. Under torchrun the cores are shared among the local processes.
    """
    share = max(1, available_cores() // max(1, world_size))
    threads = share if requested is None else min(requested, share)
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # interop threads can only be set before first parallel use
        torch.set_num_interop_threads(1)
    return threads


def select_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' -> cuda (this process's GPU) when present, else cpu; explicit cuda without a GPU is an error."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"config field 'train.device' is '{name}' but no CUDA GPU is available; use auto or cpu")
    if name == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    """bf16 autocast for 'bf16' (matmuls/convs in bf16, reductions in fp32); a no-op for 'fp32'."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
