"""`cnnlab doctor`: what this machine is and what cnnlab will run on it, for bug reports.

CPU model, PyTorch's CPU capability, native bf16 yes/no, cores and threads, GPUs, the precision and
memory format that ``auto`` picks (and why), a short throughput probe of cnn4 and fastnet in each
precision, and the library versions.
"""

from __future__ import annotations

import platform
import sys
import time
from typing import Any

import torch

from .engine.device import (available_cores, configure_threads, cpu_flags, cpu_name, resolve_execution,
                            select_device)

PROBE_MODELS = (("cnn4", {"batchnorm": True}), ("fastnet", {"widths": [32, 96, 192]}))
PROBE_BATCH = 64


def probe(name: str, kwargs: dict[str, Any], precision: str, channels_last: bool, device: torch.device,
          seconds: float) -> float:
    """Training images/s of `name` for about `seconds` (random 32x32 data, SGD, one warm-up step)."""
    from . import models
    from .engine.device import autocast, memory_format

    torch.manual_seed(0)
    model = models.create(name, **kwargs).to(device, memory_format=memory_format(channels_last))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(PROBE_BATCH, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (PROBE_BATCH,), device=device)

    def step() -> None:
        with autocast(device, precision):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()
    steps, start = 0, time.perf_counter()
    while steps < 2 or time.perf_counter() - start < seconds:
        step()
        steps += 1
    return steps * PROBE_BATCH / (time.perf_counter() - start)


def doctor(probe_seconds: float = 10.0, threads: int | None = None, device_name: str = "auto") -> dict[str, Any]:
    """The facts `cnnlab doctor` prints (see the module docstring); probe_seconds 0 skips the probe."""
    import numpy
    import torchvision

    used = configure_threads(threads)
    device = select_device(device_name)
    execution = resolve_execution(device, "auto", "auto")
    flags = cpu_flags()
    facts: dict[str, Any] = {
        "cpu": cpu_name(), "cpu_capability": execution.cpu_capability, "cpu_class": execution.cpu_class,
        "cpu_bf16_flags": sorted(flags & {"avx512_bf16", "amx_bf16", "bf16"}),
        "avx512f": "avx512f" in flags, "onednn_says_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "cores_available": available_cores(), "threads": used, "device": str(device),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "auto_precision": execution.precision, "auto_channels_last": execution.channels_last,
        "reason": execution.reason, "python": sys.version.split()[0], "platform": platform.platform(),
        "torch": torch.__version__, "torchvision": torchvision.__version__, "numpy": numpy.__version__,
        "probe": [],
    }
    if probe_seconds > 0:
        each = probe_seconds / (2 * len(PROBE_MODELS))
        for name, kwargs in PROBE_MODELS:
            base = None
            for precision in ("fp32", "bf16"):
                ips = probe(name, kwargs, precision, execution.channels_last, device, each)
                base = base or ips
                facts["probe"].append({"model": name, "precision": precision, "images_per_second": ips,
                                       "vs_fp32": ips / base})
    return facts


def format_report(facts: dict[str, Any]) -> str:
    fmt = "channels_last" if facts["auto_channels_last"] else "contiguous"
    flags = facts["cpu_bf16_flags"]
    emulated = " (emulated on plain AVX-512: not used as the rule)" if facts["onednn_says_bf16"] and not flags else ""
    lines = [
        f"cpu              {facts['cpu']}",
        f"cpu capability   {facts['cpu_capability']} (class: {facts['cpu_class']})",
        f"native bf16      {'yes (' + ', '.join(flags) + ')' if flags else 'no'}; "
        f"oneDNN reports bf16 support: {'yes' if facts['onednn_says_bf16'] else 'no'}{emulated}",
        f"cores            {facts['cores_available']} available, {facts['threads']} compute threads",
        f"device           {facts['device']}" + (f" ({', '.join(facts['gpus'])})" if facts["gpus"] else ""),
        f"auto picks       {facts['auto_precision']} + {fmt}: {facts['reason']}",
    ]
    for row in facts["probe"]:
        lines.append(f"probe            {row['model']:8s} {row['precision']:5s} {row['images_per_second']:9,.0f} img/s "
                     f"({row['vs_fp32']:.2f}x fp32, batch {PROBE_BATCH}, {fmt})")
    lines.append(f"versions         python {facts['python']}, torch {facts['torch']}, torchvision "
                 f"{facts['torchvision']}, numpy {facts['numpy']}")
    lines.append(f"platform         {facts['platform']}")
    return "\n".join(lines)
