"""`python benchmarks/style_speed.py --isa avx2`: its forward-pass and clip tables on this CPU held to one ISA.

Two child processes of style_speed.py in the same run, fp32 (what apply's precision rule picks where bf16 is not
native; bf16 would be emulated there): one unrestricted, the baseline, and one restricted by benchmarks/_isa.py
(checked before timing). Writes benchmarks/results/style-speed-<isa>-isa-<CPU class>.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import cnnlab_env, cpu_banner, cpu_class, save_result, table
from _isa import ISA_ENVIRONMENT, describe, isa_environment, restriction_report
from style_speed import THREADS, VARIANTS, video_settings

SCRIPT = Path(__file__).resolve().parent / "style_speed.py"


def isa_main(args) -> None:
    """--isa: the forward-pass and clip tables in two child processes, fp32, unrestricted then restricted."""
    work, runs, checks = Path(tempfile.mkdtemp(prefix="style-speed-isa-")), {}, {}
    print(f"  the children's rows: {work}", flush=True)
    for isa in (None, args.isa):
        checks[isa] = describe(restriction_report(isa, list(VARIANTS.values()), os.environ, str(work / "check.json")))
        print(f"  {isa or 'unrestricted'}: {checks[isa]}", flush=True)
        rows = work / f"rows-{isa or 'unrestricted'}.json"
        cmd = [sys.executable, str(SCRIPT), "--child", str(rows), "--precision", "fp32",
               "--repeats", str(args.repeats), "--clip-frames", str(args.clip_frames)]
        subprocess.run(cmd, check=True, env=isa_environment(isa, cnnlab_env()))
        runs[isa] = json.loads(rows.read_text())
    text = isa_text(args, runs, checks)
    save_result(f"style-speed-{args.isa}-isa", text)
    print(text)


def isa_text(args, runs: dict, checks: dict) -> str:
    """The results file from the two children's rows (runs[None]: unrestricted) and the checks' sentences."""
    label, goal = f"apply ({runs[args.isa]['label']})", {"320x240": 25, "512x512": 6}
    body = []
    for low, base in zip(runs[args.isa]["rows"], runs[None]["rows"]):
        cells = [f"{row['fps'][key]:.1f}" for key in ("fp32", label) for row in (low, base)]
        body.append([low["variant"], low["flags"], low["size"], f"{low['gflop']:.2f}", *cells,
                     f"{low['fps'][label] / base['fps'][label]:.2f}x",
                     "yes" if low["fps"][label] >= goal[low["size"]] else "no"])
    meets = [v for v in VARIANTS if all(r[-1] == "yes" for r in body if r[0] == v)]
    clip = [[low[0], low[1], low[2], base[2], f"{float(low[2]) / float(base[2]):.2f}x",
             "" if not low[1] and "identity" in low[0] else "yes" if float(low[2]) >= goal["320x240"] else "no"]
            for low, base in zip(runs[args.isa]["clip"], runs[None]["clip"])]
    isa = args.isa.upper()
    return "\n".join([
        f"# Style network speed on this CPU restricted to {isa} code paths", "", cpu_banner(), "",
        f"Written by `python benchmarks/style_speed.py {' '.join(sys.argv[1:])}`.", "",
        f"**This {cpu_class()} machine with PyTorch and oneDNN restricted to {isa} code paths; not a real {isa} CPU "
        f"(clock, caches and memory differ).** Both columns come from the same run, each from its own process: "
        f"'{args.isa}' with {', '.join(f'{k}={v}' for k, v in ISA_ENVIRONMENT[args.isa].items())}, 'unrestricted' "
        f"without. Everything is fp32: what apply's precision rule picks where bf16 is not native (bf16 would be "
        f"emulated). Checked before timing (benchmarks/_isa.py): {args.isa}: {checks[args.isa]}; unrestricted: "
        f"{checks[None]}. The convolutions outside oneDNN (the 1x1 ones of separable blocks) run as ATen's "
        f"slow_conv2d, whose GEMM is MKL's; MKL does not name its code path on this CPU, so its cap is set but "
        f"not verified. The int8 table is left out: ONNX Runtime does not read these variables.", "",
        f"## The forward pass, frames/s ({THREADS} threads, batch 1, inference_mode, median of {args.repeats})", "",
        f"Goal (issue 26): `stylize apply` at >= 25 frames/s at 320x240 and >= 6 at 512x512 on 2 {isa} cores. "
        f"Variants whose forward pass on apply's path meets both under the restriction: {', '.join(meets) or 'none'}"
        f". This is the network alone, one frame repeated, median of short windows: the whole `stylize apply` "
        f"(next table, what the issue's check prints) runs well below it.", "",
        table(["variant", "`stylize train` flags", "size", "GFLOP/frame", f"fp32, {args.isa}", "fp32, unrestricted",
               f"{label}, {args.isa}", f"{label}, unrestricted", f"apply {args.isa} / unrestricted",
               "apply goal met"], body), "",
        f"## The whole `stylize apply` on a {args.clip_frames}-frame 320x240 H.264 clip (frames/s, median of 3)", "",
        f"Decode, stylize (apply's video settings {video_settings()}, fp32), encode H.264 (libx264 picks its own "
        "instructions: not restricted).",
        "", table(["network", "flags", f"frames/s, {args.isa}", "frames/s, unrestricted",
                   f"{args.isa} / unrestricted", ">= 25 frames/s"], clip), ""])

