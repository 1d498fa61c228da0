"""Timing a narrower CPU on this one: PyTorch, oneDNN and MKL told to use only one vector ISA's code paths.

A figure promised for an AVX2 CPU cannot be measured on an AVX-512 machine as it stands, but the three
libraries that do the work each read a variable at start-up that caps the instructions they dispatch to:
ATen's own kernels (ATEN_CPU_CAPABILITY), oneDNN's convolutions (ONEDNN_MAX_CPU_ISA) and MKL's BLAS
(MKL_ENABLE_INSTRUCTIONS). They are read once, when the library loads, so they must be set in the environment of
a new process, never in a running one. What the cap cannot change: the clock, caches and memory of this machine
stay as they are, so such a figure is "this machine restricted to AVX2", not a real AVX2 CPU.
`restriction_report` checks, in a child process, that the cap took effect (ATen's capability and the oneDNN
implementation of every convolution), since a silently ignored variable would give the unrestricted speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping

ISA_ENVIRONMENT = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}
_VARIABLES = {key for env in ISA_ENVIRONMENT.values() for key in env} | {"DNNL_MAX_CPU_ISA", "ONEDNN_VERBOSE"}
# oneDNN implementation names of instruction sets wider than each cap: any of these under the cap means it failed
_WIDER = {"avx2": ("avx512", "avx10", "amx")}


def isa_environment(isa: str | None, base: Mapping[str, str]) -> dict[str, str]:
    """`base` with `isa`'s caps set (None: no cap; any cap `base` inherited is removed, so a baseline is one)."""
    if isa is not None and isa not in ISA_ENVIRONMENT:
        raise SystemExit(f"--isa {isa}: not one of {', '.join(ISA_ENVIRONMENT)}")
    env = {key: value for key, value in base.items() if key not in _VARIABLES}
    env.update(ISA_ENVIRONMENT.get(isa or "", {}))
    return env


def onednn_implementations(verbose_output: str) -> Counter:
    """(primitive kind, implementation) -> count of executions, from ONEDNN_VERBOSE=1 output
    (lines like `onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,forward_inference,...`)."""
    found: Counter = Counter()
    for line in verbose_output.splitlines():
        fields = line.split(",")
        if fields[0] == "onednn_verbose" and "exec" in fields[:4] and fields[fields.index("exec") + 1] == "cpu":
            at = fields.index("exec")
            found[(fields[at + 2], fields[at + 3])] += 1
    return found


_CHECK = """
import json, sys, torch
from cnnlab.style.transformer import TransformNet
torch.set_num_threads(1)
convolutions = 0
for arguments in json.loads(sys.argv[2]):
    model = TransformNet(**arguments).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        for fmt in (torch.contiguous_format, torch.channels_last):
            model.to(memory_format=fmt)(x.contiguous(memory_format=fmt))
            convolutions += sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
with open(sys.argv[1], "w") as f:
    json.dump({"capability": str(torch.backends.cpu.get_cpu_capability()), "convolutions": convolutions}, f)
"""


def restriction_report(isa: str | None, networks: list[Mapping], env: Mapping[str, str], record: str) -> dict:
    """Runs each network (TransformNet arguments) once, fp32, contiguous and channels_last, in a child process
    under `isa`'s caps with oneDNN's verbose log on; returns ATen's capability, the oneDNN convolutions' count
    against the networks' Conv2d count and their implementations. Raises SystemExit where a cap did not hold."""
    child = {**isa_environment(isa, env), "ONEDNN_VERBOSE": "1"}
    proc = subprocess.run([sys.executable, "-c", _CHECK, record, json.dumps([dict(n) for n in networks])],
                          capture_output=True, text=True, env=child)
    if proc.returncode != 0:
        raise SystemExit(f"the ISA check failed:\n{proc.stderr[-2000:]}")
    with open(record) as f:
        report = json.load(f)
    used = onednn_implementations(proc.stdout)
    convolutions = {impl: n for (kind, impl), n in used.items() if kind == "convolution"}
    report.update(onednn_convolutions=sum(convolutions.values()), implementations=convolutions)
    if isa is not None:
        wider = sorted(impl for (_, impl) in used if any(w in impl for w in _WIDER[isa]))
        if report["capability"].lower() != isa or wider:
            raise SystemExit(f"the {isa} restriction did not take effect: ATen capability {report['capability']}, "
                             f"oneDNN implementations {wider or 'within ' + isa}")
    return report


def describe(report: dict) -> str:
    """One sentence: what the check saw."""
    impls = ", ".join(f"{impl} ({n})" for impl, n in sorted(report["implementations"].items()))
    return (f"ATen capability {report['capability']}; {report['onednn_convolutions']} of the networks' "
            f"{report['convolutions']} convolutions ran in oneDNN, as {impls or 'none'}")
