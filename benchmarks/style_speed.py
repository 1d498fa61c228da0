"""Frames per second of slimmer style networks on this CPU: what `stylize train`'s architecture flags buy.

    python benchmarks/style_speed.py [--repeats 9] [--clip-frames 100] [--int8-weights RUN] [--quick]
    python benchmarks/style_speed.py --isa avx2 [--repeats 5]    # 1 and 2 on this CPU restricted to AVX2

1. The network's forward pass, per variant (TransformNet arguments; the paper's network first: every ratio
   divides by it, measured in the same run) at 320x240 and 512x512: batch 1 (a frame, as apply takes an image),
   2 threads, inference_mode, random weights (speed does not depend on them), median of --repeats timed runs
   after warm-up. Paths: fp32 contiguous; fp32 channels_last; bf16 autocast (apply's path before, only where
   apply's default precision is bf16); and apply's own (style/apply.py Stylizer: uint8 frame in, uint8 out,
   apply's default precision on this CPU). Parameters and GFLOP per frame (convolutions, FlopCounterMode).
2. The whole `stylize apply` (the API call: decode, stylize, encode H.264 with apply's video settings,
   style/apply.py VIDEO_SETTINGS) on a --clip-frames 320x240 clip, for the paper's network and the
   candidates, and with an identity network (decode + encode alone: the ceiling of any network).
3. int8 on the best candidate: ONNX Runtime fp32 and static int8 (QDQ, per channel, calibrated on photos),
   PyTorch FX int8 (x86 backend), against fp32 eager, with the output's distance from fp32 in levels of 255
   (with --int8-weights a trained network's; random weights otherwise, whose distances mean less).

Writes benchmarks/results/style-speed-<CPU class>.md. benchmarks/style_quality.py imports speed_table.

--isa avx2 measures 1 and 2 instead in two child processes of the same run, fp32 (what apply's precision rule
picks on a CPU without native bf16): one unrestricted (the baseline) and one with PyTorch, oneDNN and MKL
restricted to AVX2 code paths (benchmarks/_isa.py, checked before timing). It writes
benchmarks/results/style-speed-avx2-isa-<CPU class>.md: this machine held to AVX2, not a real AVX2 CPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_banner, save_result, table  # noqa: E402
from _isa import ISA_ENVIRONMENT  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = Path(os.environ.get("CNNLAB_DATA", ROOT.parent / "shared" / "data")) / "images" / "photos"
THREADS = 2
PAPER = "paper (today)"
# name -> TransformNet arguments; the flags of `stylize train` that build each one are flags_for(arguments)
VARIANTS: dict[str, dict] = {
    PAPER: {},
    "w16": {"width": 16},
    "w16 sep k5": {"width": 16, "separable": True, "edge_kernel": 5},
    "w16 k5 d3": {"width": 16, "edge_kernel": 5, "downsamples": 3},
    "w16 sep k5 d3": {"width": 16, "separable": True, "edge_kernel": 5, "downsamples": 3},
    "w16 sep k3 d3": {"width": 16, "separable": True, "edge_kernel": 3, "downsamples": 3},
    "w12 sep k5 d3": {"width": 12, "separable": True, "edge_kernel": 5, "downsamples": 3},
    "w8 sep k5 d3": {"width": 8, "separable": True, "edge_kernel": 5, "downsamples": 3},
}
# w8: the one slimmer network timed in the whole apply after none reached 25 frames/s there on AVX2 (not trained)
CANDIDATES = ["w16 sep k5 d3", "w16 sep k3 d3", "w12 sep k5 d3", "w8 sep k5 d3"]


def video_settings() -> str:
    """apply's video settings (style/apply.py VIDEO_SETTINGS) as the tables name them."""
    from cnnlab.style.apply import VIDEO_SETTINGS

    return ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in VIDEO_SETTINGS.items())


def flags_for(arguments: Mapping) -> str:
    """The `stylize train` flags that build a network with these arguments."""
    parts = []
    for key, value in arguments.items():
        flag = "--" + key.replace("_", "-")
        parts.append(flag if value is True else f"{flag} {value}")
    return " ".join(parts) or "(defaults)"


def _network(arguments: Mapping, seed: int = 0) -> torch.nn.Module:
    from cnnlab.style.transformer import TransformNet

    torch.manual_seed(seed)
    return TransformNet(**arguments).eval()


def gflop(arguments: Mapping, size: tuple[int, int]) -> float:
    """Convolutions' floating-point work per frame, counted on meta tensors (no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = _network(arguments)
        frame = torch.empty(1, 3, size[1], size[0])
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(frame)
    return counter.get_total_flops() / 1e9


def frames_per_second(fn: Callable[[], object], repeats: int) -> float:
    """Median frames/s of `fn` (one frame a call) over `repeats` timed runs of about 0.2 s each, after warm-up."""
    for _ in range(3):
        fn()
    start = time.perf_counter()
    fn()
    calls = max(1, round(0.2 / max(time.perf_counter() - start, 1e-6)))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append(calls / (time.perf_counter() - start))
    return statistics.median(samples)


def _paths(arguments: Mapping, size: tuple[int, int], precision: str = "auto") -> dict[str, Callable[[], object]]:
    """The timed paths of one network at one size (see the module docstring)."""
    from cnnlab.engine.device import resolve_execution
    from cnnlab.style.apply import Stylizer

    execution = resolve_execution(torch.device("cpu"), precision)
    model = _network(arguments)
    frame = torch.randint(0, 256, (1, 3, size[1], size[0]), dtype=torch.uint8)
    x = frame.float() / 255
    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    stylizer = Stylizer(copy.deepcopy(model), torch.device("cpu"), execution.precision, execution.channels_last)

    def fp32():
        with torch.inference_mode():
            model(x)

    def fp32_cl():
        with torch.inference_mode():
            cl_model(x_cl)

    def autocast_bf16():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            cl_model(x_cl)

    paths = {"fp32": fp32, "fp32 channels_last": fp32_cl}
    if execution.precision == "bf16":
        paths["bf16 autocast, channels_last (apply before)"] = autocast_bf16
    paths[f"apply ({apply_path_label(precision)})"] = lambda: stylizer(frame)
    return paths


def apply_path_label(precision: str = "auto") -> str:
    from cnnlab.engine.device import resolve_execution

    execution = resolve_execution(torch.device("cpu"), precision)
    return f"{execution.precision}, {'channels_last' if execution.channels_last else 'contiguous'}, uint8 in/out"


def speed_table(variants: Mapping[str, Mapping], sizes=((320, 240), (512, 512)), repeats: int = 9,
                precision: str = "auto") -> tuple[str, list[dict]]:
    """Frames/s of each variant's forward pass (name -> TransformNet arguments) at each size (width, height),
    with the paper's network measured first in the same run (added when absent) as the ratios' baseline;
    `precision` is apply's (auto: its rule on this CPU). Returns a Markdown table and its rows as dicts."""
    torch.set_num_threads(THREADS)
    paper = _network({}).arguments()
    baseline_name = next((name for name, a in variants.items() if _network(a).arguments() == paper), PAPER)
    variants = {baseline_name: {}, **variants}  # the baseline first
    rows: list[dict] = []
    for name, arguments in variants.items():
        params = sum(p.numel() for p in _network(arguments).parameters())
        for size in sizes:
            fps = {label: frames_per_second(fn, repeats) for label, fn in _paths(arguments, size, precision).items()}
            rows.append({"variant": name, "flags": flags_for(arguments), "arguments": dict(arguments),
                         "size": f"{size[0]}x{size[1]}", "parameters": params, "gflop": gflop(arguments, size),
                         "fps": fps})
            print(f"  {name} {size[0]}x{size[1]}: " + ", ".join(f"{k} {v:.1f}" for k, v in fps.items()), flush=True)
    for row in rows:
        base = next(r for r in rows if r["variant"] == baseline_name and r["size"] == row["size"])
        row["ratio"] = {label: row["fps"][label] / base["fps"][label] for label in row["fps"]}
    labels = list(rows[0]["fps"])
    apply_label = labels[-1]
    headers = ["variant", "`stylize train` flags", "size", "parameters", "GFLOP/frame",
               *[f"{label} (frames/s)" for label in labels], "fp32 vs paper", "apply vs paper"]
    body = [[r["variant"], r["flags"], r["size"], f"{r['parameters']:,}", f"{r['gflop']:.2f}",
             *[f"{r['fps'][label]:.1f}" for label in labels], f"{r['ratio']['fp32']:.1f}x",
             f"{r['ratio'][apply_label]:.1f}x"] for r in rows]
    return table(headers, body), rows


def _clip(path: Path, frames: int, size: tuple[int, int] = (320, 240), fps: int = 25) -> Path:
    """A camera pan across a photo: `frames` frames of `size`, H.264 (every frame differs, as in a video)."""
    import av
    import torch.nn.functional as F

    from cnnlab.data.images import read_image

    photo = read_image(PHOTOS / "china.jpg").float()[None]
    photo = F.interpolate(photo, size=(size[1] * 2, size[0] * 2), mode="bilinear", antialias=True)[0]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            x0, y0 = (i * size[0]) // frames, (i * size[1]) // (2 * frames)
            crop = photo[:, y0:y0 + size[1], x0:x0 + size[0]].round().clamp(0, 255).to(torch.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(crop.permute(1, 2, 0).numpy(), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _saved_network(folder: Path, arguments: Mapping) -> Path:
    """A random network of these arguments saved as `stylize train` saves one (what `stylize apply` loads)."""
    import json

    from cnnlab.runs import RunDir
    from cnnlab.style.train import WEIGHTS_KIND

    net = _network(arguments)
    run = RunDir(folder).create()
    run.save_weights(net.state_dict(), metadata={"kind": WEIGHTS_KIND, "arguments": json.dumps(net.arguments()),
                                                 "style": "random", "loss_net": "none", "image_size": "256"})
    return run.path


def apply_clip_rows(names: list[str], frames: int, runs: int = 3, precision: str = "auto") -> list[list[str]]:
    """The whole apply (decode, stylize, encode) on a 320x240 clip: median frames/s of `runs` runs."""
    from cnnlab.style.apply import apply, stylize_video

    work = Path(tempfile.mkdtemp(prefix="style-speed-"))
    clip = _clip(work / "clip.mp4", frames)
    rows = []

    def identity(batch: torch.Tensor) -> torch.Tensor:
        return batch

    rates = [stylize_video(identity, clip, work / "identity.mp4")["frames_per_second"] for _ in range(runs)]
    rows.append(["identity network (decode + encode only)", "", f"{statistics.median(rates):.1f}", ""])
    base = None
    for name in names:
        model = _saved_network(work / name.replace(" ", "-").replace("(", "").replace(")", ""), VARIANTS[name])
        rates = [apply(model, clip, work / "out.mp4", threads=THREADS, precision=precision, progress=False)
                 ["frames_per_second"] for _ in range(runs)]
        rate = statistics.median(rates)
        base = base or rate
        rows.append([name, flags_for(VARIANTS[name]), f"{rate:.1f}", f"{rate / base:.1f}x"])
        print(f"  apply on the clip, {name}: {rate:.1f} frames/s", flush=True)
    return rows


def _photo_frames(size: tuple[int, int], count: int) -> torch.Tensor:
    """`count` real photos cropped to `size`, floats in [0, 1] (calibration and closeness need real pictures)."""
    from cnnlab.data.images import read_image
    from cnnlab.style.optimize import resize_longest

    frames = []
    for path in sorted(p for p in PHOTOS.iterdir() if p.suffix in (".png", ".jpg", ".bmp"))[:count]:
        x = resize_longest(read_image(path), max(size) * 2)
        h, w = x.shape[-2:]
        if h >= size[1] and w >= size[0]:
            frames.append(x[..., (h - size[1]) // 2:(h - size[1]) // 2 + size[1],
                          (w - size[0]) // 2:(w - size[0]) // 2 + size[0]])
    return torch.cat(frames)


def int8_rows(arguments: Mapping, weights: str | None, size: tuple[int, int], repeats: int) -> list[list[str]]:
    """fp32 eager against ONNX Runtime fp32 / static int8 and PyTorch FX int8, frames/s and distance from fp32."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if weights:
        from cnnlab.style.train import load_network

        model, _ = load_network(weights)
        arguments = model.arguments()
    else:
        model = _network(arguments)
    photos = _photo_frames(size, 10)
    calibration, test = photos[:-2], photos[-2:]
    with torch.inference_mode():
        reference = model(test).clamp(0, 1) * 255
    work = Path(tempfile.mkdtemp(prefix="style-int8-"))
    fp32_file, int8_file = work / "fp32.onnx", work / "int8.onnx"
    torch.onnx.export(model, test[:1], str(fp32_file), input_names=["x"], output_names=["y"], dynamo=False,
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})

    class Photos(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": calibration[i:i + 1].numpy()} for i in range(len(calibration))])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(fp32_file), str(int8_file), Photos(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    cases: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    cases["fp32 eager (PyTorch)"] = lambda x: model(x)
    for label, file in (("ONNX Runtime fp32", fp32_file), ("ONNX Runtime int8 (static, QDQ, per channel)", int8_file)):
        session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        cases[label] = lambda x, s=session: torch.from_numpy(s.run(None, {"x": x.numpy()})[0])
    fx = _fx_int8(model, calibration)
    if fx is not None:
        cases["PyTorch FX int8 (x86)"] = fx
    rows = []
    for label, fn in cases.items():
        with torch.inference_mode():
            out = fn(test).clamp(0, 1) * 255
            one = test[:1].contiguous()
            rate = frames_per_second(lambda: fn(one), repeats)
        diff = (out.round() - reference.round()).abs()
        rows.append([label, f"{rate:.1f}", f"{diff.mean():.2f}", f"{diff.max():.0f}"])
        print(f"  int8 table, {label}: {rate:.1f} frames/s, mean distance {diff.mean():.2f}", flush=True)
    note = "trained weights " + str(weights) if weights else "random weights (seed 0)"
    return [[r[0] + f" ({flags_for(arguments)}, {note})" if i == 0 else r[0], *r[1:]] for i, r in enumerate(rows)]


def _fx_int8(model: torch.nn.Module, calibration: torch.Tensor):
    """PyTorch's FX graph-mode post-training int8 (x86 backend), or None where it cannot convert this network."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    net = copy.deepcopy(model).eval()
    body = torch.nn.Sequential(net.down, net.res, net.up)  # without forward's size check and crop (not traceable)
    try:
        torch.backends.quantized.engine = "x86"
        prepared = prepare_fx(body, get_default_qconfig_mapping("x86"), (calibration[:1],))
        with torch.inference_mode():
            for i in range(len(calibration)):
                prepared(calibration[i:i + 1])
        quantized = convert_fx(prepared)
        with torch.inference_mode():
            quantized(calibration[:1])
        return lambda x: quantized(x)[..., :x.shape[-2], :x.shape[-1]]
    except Exception as exc:  # report why instead of failing the whole benchmark
        print(f"  PyTorch FX int8 failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--clip-frames", type=int, default=100)
    parser.add_argument("--int8-weights", help="a trained network (run folder or .safetensors) for the int8 table")
    parser.add_argument("--int8-variant", default=CANDIDATES[0], choices=list(VARIANTS))
    parser.add_argument("--quick", action="store_true", help="3 repeats, 20 clip frames (a smoke run)")
    parser.add_argument("--isa", choices=list(ISA_ENVIRONMENT), help="time 1 and 2 fp32, unrestricted and with this "
                        "machine restricted to this ISA's code paths (see the module docstring)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # --isa's timed process: its rows as JSON
    parser.add_argument("--precision", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.clip_frames = 3, 20
    if args.isa:
        from style_speed_isa import isa_main

        return isa_main(args)
    from cnnlab.engine.device import configure_threads

    configure_threads(THREADS)
    if args.child:
        rows = speed_table(VARIANTS, repeats=args.repeats, precision=args.precision)[1]
        clip = apply_clip_rows([PAPER, *CANDIDATES], args.clip_frames, precision=args.precision)
        args.child.write_text(json.dumps({"rows": rows, "clip": clip, "label": apply_path_label(args.precision)}))
        return
    banner = cpu_banner()
    print(banner, flush=True)
    speed, rows = speed_table(VARIANTS, repeats=args.repeats)
    clip = apply_clip_rows([PAPER, *CANDIDATES], args.clip_frames)
    int8 = int8_rows(VARIANTS[args.int8_variant], args.int8_weights, (320, 240), args.repeats)
    text = "\n".join([
        "# Style network speed: slimmer architectures", "", banner, "",
        f"Written by `python benchmarks/style_speed.py {' '.join(sys.argv[1:])}`.", "",
        f"## The forward pass, frames/s ({THREADS} threads, batch 1, inference_mode, median of {args.repeats})", "",
        f"`apply` is style/apply.py's Stylizer: a uint8 frame in, a uint8 frame out, in apply's default precision "
        f"on this CPU ({apply_path_label()}). GFLOP counts the convolutions only.", "",
        speed, "",
        f"## The whole `stylize apply` on a {args.clip_frames}-frame 320x240 H.264 clip (frames/s, median of 3)", "",
        f"Decode, stylize, encode H.264 with apply's video settings ({video_settings()}) in its default "
        "precision; random weights.", "",
        table(["network", "flags", "frames/s", "vs paper"], clip), "",
        "## int8 (320x240, batch 1): frames/s and distance from fp32 eager's output (levels of 255)", "",
        table(["path", "frames/s", "mean distance", "max distance"], int8), ""])
    save_result("style-speed", text)
    print(text)


if __name__ == "__main__":
    main()
