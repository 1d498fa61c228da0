"""torchrun / DistributedDataParallel helpers; every function is a no-op in a single process.

Launch: ``torchrun --nproc-per-node 2 -m cnnlab train ...``. torchrun sets RANK, LOCAL_RANK and
WORLD_SIZE. ``train.batch_size`` is the global batch: each process takes batch_size / world_size images of
every step (see data/loader.py), gradients are averaged by DDP, so the learning rate and the schedule are
those of one process with the same batch; only rank 0 writes the run directory.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def init(device: torch.device) -> None:
    """Join the process group torchrun set up (nccl on GPUs, gloo on CPUs)."""
    if world_size() > 1 and not is_active():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def check_sync_batchnorm(enabled: bool, device: torch.device) -> None:
    """SyncBatchNorm (batch statistics over the global batch, not each process's share) exists in PyTorch for
    GPUs only: asked for on CPU processes, say so before anything starts."""
    from ..errors import UserError

    if enabled and world_size() > 1 and device.type != "cuda":
        raise UserError("train.sync_batchnorm needs GPUs (PyTorch's SyncBatchNorm runs on CUDA only); on CPU "
                        "processes leave it off: each process then normalizes with its own share of the batch")


def wrap(model: nn.Module, device: torch.device, sync_batchnorm: bool = False) -> nn.Module:
    """DDP wrapper for the forward/backward when distributed, else the model itself. `sync_batchnorm`: batch
    norms use the statistics of the whole global batch (converted in place: the parameters, which the
    optimizer holds, stay the same objects)."""
    if not is_active():
        return model
    if sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def replicas_differ(model: nn.Module) -> str | None:
    """After training under DDP every rank must hold the same weights (the same averaged gradients, the same
    optimizer): None when they do, else the first parameter that differs on some rank (every rank gets the
    same answer). Each parameter is compared with rank 0's copy, once per run; the tolerance only forgives
    last-bit differences of processes on different hardware."""
    if not is_active():
        return None
    names, flags = [], []
    for name, p in model.named_parameters():
        mine = p.detach()
        reference = mine.clone()
        dist.broadcast(reference, src=0)
        names.append(name)
        flags.append(0.0 if torch.allclose(mine.float(), reference.float(), rtol=1e-5, atol=1e-7,
                                           equal_nan=True) else 1.0)
    if not names:
        return None
    flags = all_reduce_max(flags, next(model.parameters()).device)
    return next((n for n, f in zip(names, flags) if f), None)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few numbers over all ranks (e.g. loss sums and counts for epoch metrics)."""
    if not is_active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_max(values: list[float], device: torch.device) -> list[float]:
    """The largest value of each entry over all ranks (e.g. calibration timings, so every rank plans alike)."""
    if not is_active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any rank (an agreed stop)."""
    if not is_active():
        return flag
    return all_reduce_max([1.0 if flag else 0.0], device)[0] > 0


def all_gather_object(obj: object) -> list:
    """[obj of rank 0, obj of rank 1, ...]; [obj] in one process."""
    if not is_active():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_active():
        dist.barrier()


def shutdown() -> None:
    if is_active():
        dist.destroy_process_group()
