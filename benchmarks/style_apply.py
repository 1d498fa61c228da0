"""Frames per second of the whole video pipeline of `stylize apply` (decode, stylize, encode) per setting.

    python benchmarks/style_apply.py [--runs 3] [--frames 100] [--no-avx2] [--blend-only]

Issue 26 asks for >= 25 frames/s at 320x240 on 2 cores; the slim network's forward pass alone reached that,
the whole apply with batches of 8 did not. This times style/apply.py's stylize_video on a --frames 320x240
H.264 clip (benchmarks/style_speed.py's camera pan) with the slim network `--width 16 --separable
--edge-kernel 5 --downsamples 3` (random weights: speed does not depend on them) for each setting compared:
frames per batch, the codec threads (FFmpeg's automatic count, or 1 for decoder and encoder) and the x264
preset. Settings are timed round-robin (drift on a shared machine hits all alike), median of --runs; the ratio
divides by the settings apply used before this benchmark (batch 8, automatic threads, preset medium) measured
in the same process. Each precision runs in its own process: fp32, bf16 where the CPU computes it natively,
and fp32 with PyTorch and oneDNN restricted to AVX2 code paths (an approximation of an AVX2 CPU, not one).

Beside speed, each setting's output size (kbit/s at x264's default CRF 23) and its closeness to the network's
own forward pass on the decoded input frames (PSNR over all frames, dB): what a faster preset costs.
Writes benchmarks/results/style-apply-<CPU class>.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cnnlab_env, cpu_banner, save_result, table  # noqa: E402
from _isa import isa_environment  # noqa: E402

THREADS = 2
NETWORK = {"width": 16, "separable": True, "edge_kernel": 5, "downsamples": 3}
BEFORE = "batch 8, auto threads, medium (before)"
# name -> stylize_video keyword arguments (codec_threads 0: FFmpeg's automatic count; preset "medium": x264's default).
# The settings compared before the temporal blend existed run without it (temporal_blend 0), as they ran then.
NO_BLEND = {"temporal_blend": 0.0}
SETTINGS: dict[str, dict] = {
    BEFORE: {"batch": 8, "codec_threads": 0, "preset": "medium", **NO_BLEND},
    "batch 4, auto threads, medium": {"batch": 4, "codec_threads": 0, "preset": "medium", **NO_BLEND},
    "batch 1, auto threads, medium": {"batch": 1, "codec_threads": 0, "preset": "medium", **NO_BLEND},
    "batch 1, 1 thread, medium": {"batch": 1, "codec_threads": 1, "preset": "medium", **NO_BLEND},
    "batch 1, auto threads, veryfast": {"batch": 1, "codec_threads": 0, "preset": "veryfast", **NO_BLEND},
    "batch 1, 1 thread, veryfast": {"batch": 1, "codec_threads": 1, "preset": "veryfast", **NO_BLEND},
    "batch 2, 1 thread, veryfast": {"batch": 2, "codec_threads": 1, "preset": "veryfast", **NO_BLEND},
    "apply's defaults without the temporal blend": NO_BLEND,
    "apply's defaults (now)": {},
}
# decode + encode alone (a network that returns its input): the ceiling of any network, and (c) of the brief:
# what the per-frame uint8 array copies and codec work cost (and the blend's own cost: its optical flow)
IDENTITY = {"identity network, before": SETTINGS[BEFORE],
            "identity network, apply's defaults without the temporal blend": NO_BLEND,
            "identity network, apply's defaults (now)": {}}
FORWARD_BATCHES = (1, 2, 4, 8)
# --blend-only: the rows that show what the temporal blend costs (and the baseline the ratios divide by)
BLEND_ROWS = {BEFORE, "apply's defaults without the temporal blend", "apply's defaults (now)",
              *IDENTITY}


def selected(blend_only: bool) -> tuple[dict[str, dict], dict[str, dict]]:
    """(SETTINGS, IDENTITY), or only their BLEND_ROWS."""
    if not blend_only:
        return SETTINGS, IDENTITY
    return ({k: v for k, v in SETTINGS.items() if k in BLEND_ROWS},
            {k: v for k, v in IDENTITY.items() if k in BLEND_ROWS})


def _psnr_and_bitrate(stylizer, clip: Path, output: Path) -> tuple[float, float]:
    """PSNR (dB) of the encoded output against the network's forward pass on each decoded input frame, and kbit/s."""
    import av
    import torch

    def frames(path: Path) -> list[torch.Tensor]:
        with av.open(str(path)) as f:
            return [torch.from_numpy(fr.to_ndarray(format="rgb24")).permute(2, 0, 1) for fr in f.decode(video=0)]

    source, encoded = frames(clip), frames(output)
    assert len(source) == len(encoded), (len(source), len(encoded))
    squared = sum(((stylizer(s[None])[0].float() - e.float()) ** 2).sum().item() for s, e in zip(source, encoded))
    mse = squared / sum(s.numel() for s in source)
    with av.open(str(output)) as f:
        seconds = float(f.streams.video[0].frames / f.streams.video[0].average_rate)
    return 10 * torch.log10(torch.tensor(255.0 ** 2 / mse)).item(), output.stat().st_size * 8 / 1000 / seconds


def worker(precision: str, frames: int, runs: int, blend_only: bool = False) -> dict:
    """One precision's measurements in this process (the parent sets the ISA environment)."""
    import torch

    from cnnlab.engine.device import configure_threads, cpu_capability
    from cnnlab.style.apply import Stylizer, stylize_video
    from style_speed import _clip, _network

    configure_threads(THREADS)
    work = Path(tempfile.mkdtemp(prefix="style-apply-"))
    clip = _clip(work / "clip.mp4", frames)
    stylizer = Stylizer(_network(NETWORK), torch.device("cpu"), precision, True)
    stylize_video(stylizer, clip, work / "warm.mp4")  # warm-up: oneDNN's kernels, the codec libraries
    settings, identity = selected(blend_only)
    rates: dict[str, list[float]] = {name: [] for name in [*settings, *identity]}
    for _ in range(runs):
        for name, kwargs in settings.items():
            rates[name].append(stylize_video(stylizer, clip, work / "out.mp4", **kwargs)["frames_per_second"])
        for name, kwargs in identity.items():
            rates[name].append(stylize_video(lambda frames: frames, clip, work / "out.mp4", **kwargs)
                               ["frames_per_second"])
    quality = {}
    for name, kwargs in settings.items():
        out = work / f"q-{len(quality)}.mp4"
        stylize_video(stylizer, clip, out, **kwargs)
        quality[name] = _psnr_and_bitrate(stylizer, clip, out)
    return {"capability": cpu_capability(), "rates": rates, "quality": quality,
            "forward": {str(b): _forward_rate(stylizer, b, runs) for b in FORWARD_BATCHES}}


def _forward_rate(stylizer, batch: int, runs: int) -> float:
    """Median frames/s of the Stylizer alone (uint8 in and out) on batches of `batch` random 320x240 frames,
    windows of about 24 frames after warm-up: hypothesis (a), whether a frame costs more in a batch."""
    import time

    import torch

    frames = torch.randint(0, 256, (batch, 3, 240, 320), dtype=torch.uint8)
    for _ in range(2):
        stylizer(frames)
    calls, samples = max(1, 24 // batch), []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(calls):
            stylizer(frames)
        samples.append(calls * batch / (time.perf_counter() - start))
    return statistics.median(samples)


def _run_worker(precision: str, frames: int, runs: int, isa: str | None, blend_only: bool) -> dict:
    """One column's measurements in a child process, under `isa`'s caps (benchmarks/_isa.py; None: none)."""
    cmd = [sys.executable, __file__, "--worker", precision, "--frames", str(frames), "--runs", str(runs),
           *(["--blend-only"] if blend_only else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=isa_environment(isa, cnnlab_env()))
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--no-avx2", action="store_true", help="skip the AVX2-restricted fp32 process")
    parser.add_argument("--blend-only", action="store_true",
                        help="only the rows that show the temporal blend's cost (and the baseline)")
    parser.add_argument("--name", help="results file: benchmarks/results/<name>-<CPU class>.md "
                                       "(default: style-apply, or style-apply-blend with --blend-only)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.frames, args.runs, args.blend_only)))
        return
    settings, identity = selected(args.blend_only)
    from cnnlab.engine.device import cpu_native_bf16
    from cnnlab.style.apply import VIDEO_SETTINGS
    from style_speed import flags_for

    banner = cpu_banner()
    print(banner, flush=True)
    modes = {"fp32": ("fp32", None)}
    if cpu_native_bf16():
        modes["bf16"] = ("bf16", None)
    if not args.no_avx2:
        modes["fp32, AVX2-restricted"] = ("fp32", "avx2")
    results = {}
    for label, (precision, isa) in modes.items():
        results[label] = _run_worker(precision, args.frames, args.runs, isa, args.blend_only)
        print(f"  {label}: " + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in results[label]["rates"].items()),
              flush=True)
    headers = ["setting", *[f"{label} (frames/s)" for label in modes], *[f"{label} vs before" for label in modes],
               ">= 25 frames/s (all columns)"]
    rows = []
    for name, kwargs in [*settings.items(), *identity.items()]:
        medians = [statistics.median(results[label]["rates"][name]) for label in modes]
        base = "identity network, before" if name in identity else BEFORE
        befores = [statistics.median(results[label]["rates"][base]) for label in modes]
        shown = name if kwargs else f"{name}: {VIDEO_SETTINGS}"
        rows.append([shown, *[f"{m:.1f}" for m in medians], *[f"{m / b:.2f}x" for m, b in zip(medians, befores)],
                     "yes" if min(medians) >= 25 else "no"])
    first = next(iter(modes))
    quality_rows = [[name, f"{results[first]['quality'][name][1]:.0f}", f"{results[first]['quality'][name][0]:.2f}"]
                    for name in settings]
    capabilities = ", ".join(f"{label}: ATen {r['capability']}" for label, r in results.items())
    forward_rows = [[str(b), *[f"{results[label]['forward'][str(b)]:.1f}" for label in modes],
                     *[f"{results[label]['forward'][str(b)] / results[label]['forward']['1']:.2f}x" for label in modes]]
                    for b in FORWARD_BATCHES]
    text = "\n".join([
        "# `stylize apply` on video: the pipeline's settings", "", banner, "",
        f"Written by `python benchmarks/style_apply.py {' '.join(sys.argv[1:])}`.", "",
        f"The slim network `{flags_for(NETWORK)}` (random weights), {THREADS} threads, a {args.frames}-frame 320x240 "
        f"H.264 clip decoded, stylized and encoded by style/apply.py's stylize_video; median frames/s of "
        f"{args.runs} runs, settings interleaved; ratios to the settings before ({BEFORE}) in the same process "
        f"(identity rows: to the identity network before). "
        f"Each column is its own process ({capabilities}); the AVX2-restricted one is this CPU with PyTorch and "
        f"oneDNN held to AVX2 code paths (libx264 is not restricted), not a real AVX2 CPU.", "",
        table(headers, rows), "",
        f"## The network alone by frames per batch (frames/s, median of {args.runs})", "",
        "style/apply.py's Stylizer (uint8 frames in and out) on random 320x240 frames, no codec; ratio to batch 1.",
        "",
        table(["frames per batch", *[f"{label} (frames/s)" for label in modes],
               *[f"{label} vs batch 1" for label in modes]], forward_rows), "",
        f"## Output size and closeness ({first})", "",
        "kbit/s of the video stream at x264's default CRF 23; PSNR of the decoded output against the network's "
        "forward pass on each decoded input frame (the codec's loss alone; with the temporal blend, also the "
        "blend's departure from the network's frames, which is its purpose), all frames.", "",
        table(["setting", "kbit/s", "PSNR vs forward pass (dB)"], quality_rows), ""])
    save_result(args.name or ("style-apply-blend" if args.blend_only else "style-apply"), text)
    print(text)


if __name__ == "__main__":
    main()
