"""Where and how computation runs: device, thread count, and the one precision / memory-format rule.

Every command asks :func:`resolve_execution` what to run in; nothing else decides precision.

The rule (``precision: auto``): bf16 autocast only where the hardware computes in bf16 natively, fp32
everywhere else.
- CUDA: bf16 when ``torch.cuda.is_bf16_supported()`` (Ampere and later).
- CPU: bf16 when the CPU reports ``avx512_bf16`` or ``amx_bf16`` (x86) or ``bf16`` (Arm). oneDNN's
  ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is *not* the rule: it answers yes on plain AVX-512,
  where bf16 is emulated and slower than fp32. On a CPU with AVX2 only, bf16 autocast is 4-8x slower than
  fp32 (benchmarks/train_throughput.py measures it), so an explicit ``bf16`` there runs after a warning.

``channels_last: auto``: on for convolutional training on every device. Measured on a 2-core AVX2 CPU in
fp32 (``python benchmarks/train_throughput.py``): fastnet 1.3-1.4x and cnn4 faster in channels_last than
contiguous; with native bf16 it is what oneDNN's bf16 kernels want; on CUDA it is the tensor-core layout.
The mlp has no convolutions, so the format does not matter for it.
"""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")
MEMORY_FORMATS = ("auto", "true", "false")
EMULATED_BF16_SLOWDOWN = "4-12x"  # 10-12x measured on a 2-core AVX2 EPYC (cnnlab doctor)


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


_ALLOCATOR_TUNED: str | None = None


def tune_cpu_allocator() -> str:
    """Keep freed memory in glibc's heap instead of returning it to the system after every step.

    glibc serves large blocks (a batch's activations are tens of MB) with mmap and gives them back on
    free, so every training step pays page faults for fresh memory; its adaptive threshold only partly
    helps. ``mallopt(M_MMAP_MAX, 0)`` + a 1 GiB trim threshold reuse the heap instead: measured on a 2-core
    AVX2 CPU, a fastnet step (batch 500, fp32) went from 0.77-0.85 s to 0.69 s, and the first steps are no
    longer slower than the rest (which also makes a time budget's calibration accurate). The cost: the
    process keeps its peak memory until it ends. Linux/glibc only; ``CNNLAB_NO_MALLOPT=1`` turns it off.
    Returns what was done (recorded in environment.json).
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED is not None:
        return _ALLOCATOR_TUNED
    _ALLOCATOR_TUNED = "default"
    if os.environ.get("CNNLAB_NO_MALLOPT") or platform.system() != "Linux":
        return _ALLOCATOR_TUNED
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        if libc.mallopt(m_mmap_max, 0) == 1 and libc.mallopt(m_trim_threshold, 1 << 30) == 1:
            _ALLOCATOR_TUNED = "glibc: no mmap for large blocks, 1 GiB trim threshold"
    return _ALLOCATOR_TUNED


def select_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' -> cuda (this process's GPU) when present, else cpu; explicit cuda without a GPU is an error."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"config field 'train.device' is '{name}' but no CUDA GPU is available; use auto or cpu")
    if name == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)


# ----------------------------------------------------------------------------------------------- CPU facts


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags (x86 'flags', Arm 'Features' of /proc/cpuinfo; macOS through sysctl)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    if not flags and platform.system() == "Darwin":  # Apple silicon: FEAT_BF16 from M2 on
        with contextlib.suppress(Exception):
            import subprocess

            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                 timeout=5).stdout.strip()
            if out == "1":
                flags.add("bf16")
    return flags


def cpu_name(cpuinfo: str | None = None) -> str:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.startswith("model name") or line.startswith("Model"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_capability() -> str:
    """PyTorch's name for the vector ISA it dispatches to on this CPU: DEFAULT, AVX2, AVX512, ..."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # very old builds
        return "unknown"


def cpu_native_bf16(flags: set[str] | None = None) -> bool:
    """True where the CPU computes bf16 in hardware (AVX-512 BF16, AMX, Arm BF16); see the module docstring."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def cpu_class(flags: set[str] | None = None, capability: str | None = None) -> str:
    """The CPU class every published figure names: 'native-bf16' or '<ISA>-no-bf16' (e.g. 'avx2-no-bf16')."""
    if cpu_native_bf16(flags):
        return "native-bf16"
    isa = (capability or cpu_capability()).lower()
    return f"{isa}-no-bf16"


# ----------------------------------------------------------------------------------------------- the rule


@dataclass(frozen=True)
class Execution:
    """What a run computes in, and why (printed as the first line of every run, recorded in its files)."""

    device: str
    precision: str          # fp32 | bf16
    channels_last: bool
    reason: str             # one sentence: why this precision
    native_bf16: bool
    cpu_capability: str
    cpu_class: str
    warning: str = ""       # set when an explicit choice is expected to be slow here

    def describe(self) -> str:
        fmt = "channels_last" if self.channels_last else "contiguous"
        return f"{self.precision} + {fmt} on {self.device}: {self.reason}"

    def record(self) -> dict:
        return asdict(self)


def device_native_bf16(device: torch.device, flags: set[str] | None = None) -> tuple[bool, str]:
    """(native bf16?, the sentence that says why) for a device."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name(device)
        return ok, f"this GPU ({name}) {'computes' if ok else 'does not compute'} bf16 natively"
    capability = cpu_capability()
    flags = cpu_flags() if flags is None else flags
    if cpu_native_bf16(flags):
        which = sorted(flags & {"avx512_bf16", "amx_bf16", "bf16"})
        return True, f"this CPU ({capability}, {', '.join(which)}) has native bf16"
    return False, f"this CPU ({capability}) has no native bf16"


def normalize_switch(value: object, key: str, choices: tuple[str, ...] = MEMORY_FORMATS) -> str:
    """'auto' | 'true' | 'false' from a bool or a yes/no/on/off/1/0/auto string (config and CLI)."""
    text = str(value).strip().lower()
    text = {"yes": "true", "on": "true", "1": "true", "no": "false", "off": "false", "0": "false"}.get(text, text)
    if text not in choices:
        raise UserError(f"config field '{key}' must be one of {', '.join(choices)}, got '{value}'")
    return text


def resolve_execution(device: torch.device, precision: str = "auto", channels_last: object = "auto", *,
                      flags: set[str] | None = None) -> Execution:
    """The precision and memory format for `device`, by the rule of the module docstring."""
    if precision not in PRECISIONS:
        raise UserError(f"precision '{precision}' is not one of {', '.join(PRECISIONS)}; use auto (the rule of "
                        f"this hardware), fp32 or bf16")
    fmt = normalize_switch(channels_last, "train.channels_last")
    flags = cpu_flags() if flags is None and device.type == "cpu" else (flags or set())
    native, why = device_native_bf16(device, flags)
    warning = ""
    if precision == "auto":
        chosen = "bf16" if native else "fp32"
        reason = why
    else:
        chosen = precision
        reason = f"{precision} as requested ({why})"
        if precision == "bf16" and not native:
            slow = EMULATED_BF16_SLOWDOWN if device.type == "cpu" else "several times"
            warning = (f"bf16 requested but {why}: bf16 is emulated here and expected to be {slow} slower "
                       f"than fp32; use precision auto or fp32")
    use_cl = fmt == "true" or fmt == "auto"
    capability = cpu_capability()
    klass = "gpu" if device.type == "cuda" else cpu_class(flags, capability)
    return Execution(str(device), chosen, use_cl, reason, native, capability, klass, warning)


def autocast(device: torch.device, precision: str):
    """bf16 autocast for 'bf16' (matmuls/convs in bf16, reductions in fp32); a no-op for 'fp32'."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.preserve_format
