"""benchmarks/_isa.py: the environment that holds PyTorch, oneDNN and MKL to one ISA, and the check that it held.

A cap the libraries silently ignored would publish the unrestricted speed under an AVX2 label, so the check is
tested against the real libraries, not only against a parser."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _isa  # noqa: E402

VERBOSE = """onednn_verbose,v1,info,cpu,isa:Intel AVX2
onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation,prop_kind
onednn_verbose,v1,primitive,exec,cpu,reorder,jit:blk,undef,src:f32::blocked:abcd::f0,,1x16x64x64,0.09
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,forward_inference,src:f32,,alg:convolution_direct,0.3
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,forward_inference,src:f32,,alg:convolution_direct,0.2
onednn_verbose,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core,forward_inference,src:f32,,mb1,0.1
some other line, exec, cpu
"""


def test_baseline_environment_drops_an_inherited_cap_and_the_restricted_one_sets_all_three():
    inherited = {"PATH": "/bin", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_VERBOSE": "1"}
    assert _isa.isa_environment(None, inherited) == {"PATH": "/bin"}
    restricted = _isa.isa_environment("avx2", {"PATH": "/bin"})
    assert restricted == {"PATH": "/bin", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                          "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    with pytest.raises(SystemExit, match="avx3"):
        _isa.isa_environment("avx3", {})


def test_verbose_parser_counts_executed_primitives_with_and_without_the_version_field():
    found = _isa.onednn_implementations(VERBOSE)
    assert found == {("reorder", "jit:blk"): 1, ("convolution", "jit:avx2"): 2,
                     ("convolution", "brg_conv_fwd:avx512_core"): 1}


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="AVX2 code paths exist on x86 CPUs only (every CI machine is one)")
def test_the_avx2_cap_holds_in_the_child_process(tmp_path):
    report = _isa.restriction_report("avx2", [{"width": 8, "residual_blocks": 1}], dict(os.environ),
                                     str(tmp_path / "check.json"))
    assert report["capability"] == "AVX2"
    assert report["onednn_convolutions"] > 0
    assert all("avx2" in impl for impl in report["implementations"]), report
