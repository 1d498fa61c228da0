"""The one precision / memory-format rule, with the CPU's capability mocked both ways, and `cnnlab doctor`."""

import json

import pytest
import torch

from cnnlab import config, train
from cnnlab.engine import device as device_mod
from cnnlab.engine.device import cpu_class, cpu_flags, cpu_native_bf16, resolve_execution
from cnnlab.errors import UserError

CPU = torch.device("cpu")
X86_AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n"
X86_AVX512 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw avx512vl avx512_vnni\n"
X86_AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
X86_AMX = "processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_tile amx_bf16 amx_int8\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
ARM_OLD = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32\n"


def test_cpu_flags_are_read_from_cpuinfo_on_x86_and_arm():
    assert {"avx2", "fma"} <= cpu_flags(X86_AVX2)
    assert "bf16" in cpu_flags(ARM_BF16) and "asimd" in cpu_flags(ARM_OLD)


@pytest.mark.parametrize("cpuinfo,native", [(X86_AVX2, False), (X86_AVX512, False), (X86_AVX512_BF16, True),
                                             (X86_AMX, True), (ARM_BF16, True), (ARM_OLD, False)])
def test_auto_picks_bf16_only_with_native_support(cpuinfo, native, monkeypatch):
    # oneDNN says yes on plain AVX-512 too, where bf16 is emulated: the rule must not listen to it
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    flags = cpu_flags(cpuinfo)
    assert cpu_native_bf16(flags) is native
    ex = resolve_execution(CPU, "auto", "auto", flags=flags)
    assert ex.precision == ("bf16" if native else "fp32") and ex.native_bf16 is native
    assert ex.channels_last is True and ex.warning == ""
    assert ("has native bf16" if native else "has no native bf16") in ex.reason
    assert ex.cpu_class == ("native-bf16" if native else f"{ex.cpu_capability.lower()}-no-bf16")


def test_explicit_choices_are_honoured_with_a_warning_where_slow():
    slow = resolve_execution(CPU, "bf16", "auto", flags=cpu_flags(X86_AVX2))
    assert slow.precision == "bf16" and "emulated" in slow.warning and "slower than fp32" in slow.warning
    fast = resolve_execution(CPU, "bf16", "false", flags=cpu_flags(X86_AMX))
    assert fast.precision == "bf16" and fast.warning == "" and fast.channels_last is False
    assert resolve_execution(CPU, "fp32", "true", flags=cpu_flags(X86_AMX)).precision == "fp32"
    with pytest.raises(UserError, match="precision 'fp16' is not one of auto, fp32, bf16"):
        resolve_execution(CPU, "fp16")
    with pytest.raises(UserError, match="'train.channels_last' must be one of auto, true, false"):
        resolve_execution(CPU, "auto", "sideways")


def test_cpu_class_names_the_isa_without_native_bf16():
    assert cpu_class(cpu_flags(X86_AVX2), "AVX2") == "avx2-no-bf16"
    assert cpu_class(cpu_flags(X86_AVX512), "AVX512") == "avx512-no-bf16"
    assert cpu_class(cpu_flags(X86_AMX), "AVX512") == "native-bf16"


@pytest.mark.parametrize("cpuinfo,expected", [(X86_AVX2, "fp32"), (X86_AMX, "bf16")])
def test_a_run_records_and_announces_its_choice(cpuinfo, expected, tiny_overrides, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(device_mod, "cpu_flags", lambda text=None: cpu_flags(cpuinfo))
    out = tmp_path / expected
    train(config.resolve(None, {**tiny_overrides, "train.epochs": 1, "out": str(out)}))
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line.startswith(f"{expected} + channels_last on cpu: this CPU")
    summary = json.loads((out / "summary.json").read_text())
    env = json.loads((out / "environment.json").read_text())
    for record in (summary, env):
        assert record["precision"] == expected and record["channels_last"] is True
        assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
        assert record["native_bf16"] is (expected == "bf16")


def test_doctor_reports_the_choice_and_a_probe(capsys):
    from cnnlab.cli import main

    # in this process (torch is imported once)
    assert main(["doctor", "--seconds", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "auto picks" in out and "cpu capability" in out and "probe" in out
    ex = resolve_execution(CPU)
    assert f"auto picks       {ex.precision} + channels_last" in out
    assert main(["doctor", "--seconds", "0", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["auto_precision"] == ex.precision and facts["probe"] == [] and facts["threads"] >= 1
