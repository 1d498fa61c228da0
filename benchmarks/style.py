"""Speed of style transfer on this machine: apply (per frame), optimize (per iteration), train (per step).

    python benchmarks/style.py [--repeats 5] [--sizes 256 512] [--width 32]

1. apply: ms per frame of a style network (random weights: only the time matters; width --width, 5 residual
   blocks) at each size, batch 1, in the same run: plain eager fp32 (contiguous tensors, no_grad), each
   candidate path (channels_last; + inference_mode; TorchScript frozen; ONNX Runtime when installed), and the
   path cnnlab's `stylize apply` takes (style/apply.py Stylizer). Median of --repeats. Then the ceiling: the
   frame's GFLOP (FlopCounterMode), plain eager's GFLOP/s, and a large fp32 matrix product's GFLOP/s on the same
   threads: what a 3x faster path would need against what this CPU delivers at best.
2. optimize: seconds per iteration (one loss evaluation + backward, L-BFGS) at each size, loss network
   efficientnet_lite0 (the offline default) and vgg19 with random weights (timing only).
3. train: seconds per step at 256 px, batch 4, width 32, loss network efficientnet_lite0.
Prints the CPU class first and writes benchmarks/results/style-<CPU class>.md.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from _common import cpu_banner, median_time, save_result, table
from cnnlab.engine.device import configure_threads, resolve_execution, tune_cpu_allocator
from cnnlab.style.apply import Stylizer
from cnnlab.style.transformer import TransformNet

ROOT = Path(__file__).resolve().parents[1]


def apply_paths(size: int, width: int, repeats: int) -> tuple[list[list[str]], float]:
    """The table rows of each inference path at this size, and plain eager's seconds per frame."""
    torch.manual_seed(0)
    model = TransformNet(width=width).eval()
    frame = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8)
    x = frame.float() / 255
    execution = resolve_execution(torch.device("cpu"))

    def eager():
        with torch.no_grad():
            model(x)

    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def channels_last():
        with torch.no_grad():
            cl_model(x_cl)

    def inference_cl():
        with torch.inference_mode():
            cl_model(x_cl)

    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(copy.deepcopy(model), x))

    def torchscript():
        with torch.no_grad():
            frozen(x)

    stylizer = Stylizer(copy.deepcopy(model), torch.device("cpu"), execution.precision, execution.channels_last)

    def cnnlab_path():
        stylizer(frame)

    cases = [("plain eager fp32", eager), ("channels_last", channels_last),
             ("channels_last + inference_mode", inference_cl), ("TorchScript frozen", torchscript)]
    session = onnx_session(model, size)
    if session is not None:
        cases.append(("ONNX Runtime (CPU provider)", lambda: session.run(None, {"x": x.numpy()})))
    cases.append((f"cnnlab apply ({execution.precision}, {'channels_last' if execution.channels_last else 'contiguous'})",
                  cnnlab_path))
    times = {}
    for label, fn in cases:
        times[label], _ = median_time(fn, repeats)
        print(f"  apply {size} px {label}: {1000 * times[label]:.1f} ms", flush=True)
    base = times["plain eager fp32"]
    return [[f"{size} px", label, f"{1000 * t:.1f}", f"{base / t:.2f}x"] for label, t in times.items()], base


def frame_gflop(size: int, width: int) -> float:
    """Floating-point work of one frame (convolutions, counted by torch's FlopCounterMode on meta tensors: no
    compute). Instance norms, padding and activations are memory-bound extras it does not count."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = TransformNet(width=width).eval()
        frame = torch.empty(1, 3, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(frame)
    return counter.get_total_flops() / 1e9


def matmul_gflops(repeats: int, n: int = 2048) -> float:
    """This CPU's dense fp32 throughput as the threads in use reach it: a large matrix product, the kernel
    closest to peak. No convolution path runs faster than this, so it bounds what any inference path can gain."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    seconds, _ = median_time(lambda: torch.mm(a, b), repeats)
    return 2 * n ** 3 / seconds / 1e9


def ceiling_rows(eager_seconds: dict[int, float], width: int, repeats: int, goal: float = 3.0) -> list[list[str]]:
    """Why a faster *path* cannot give `goal`x here: the GFLOP/s the goal needs against the measured ceiling."""
    ceiling = matmul_gflops(repeats)
    print(f"  fp32 matrix product: {ceiling:.0f} GFLOP/s", flush=True)
    rows = []
    for size, seconds in eager_seconds.items():
        work = frame_gflop(size, width)
        rows.append([f"{size} px", f"{work:.1f}", f"{work / seconds:.0f}", f"{goal * work / seconds:.0f}",
                     f"{ceiling:.0f}", f"{(work / seconds) / ceiling:.0%}"])
    return rows


def onnx_session(model, size: int):
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    path = Path(tempfile.mkdtemp()) / "style.onnx"
    torch.onnx.export(model, torch.rand(1, 3, size, size), str(path), input_names=["x"], output_names=["y"],
                      dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def optimize_rows(sizes: list[int], repeats: int) -> list[list[str]]:
    from cnnlab.style import lossnet
    from cnnlab.style.optimize import StyleObjective

    rows = []
    for name, weights in (("efficientnet_lite0", None), ("vgg19", "none")):
        net = lossnet.build(name, weights)
        for size in sizes:
            content = torch.rand(1, 3, size, size)
            objective = StyleObjective(net, [torch.rand(1, 3, size, size)], [1.0], 1.0, 10.0, 1e-3)
            targets = objective.content_targets(content)
            image = content.clone().requires_grad_(True)

            def iteration():
                image.grad = None
                objective(image, targets)["total_loss"].backward()

            seconds, _ = median_time(iteration, repeats)
            rows.append([name + (" (random weights)" if weights else ""), f"{size} px", f"{seconds:.3f}"])
            print(f"  optimize {name} {size} px: {seconds:.3f} s/iteration", flush=True)
    return rows


def train_rows(repeats: int) -> list[list[str]]:
    from cnnlab.style import lossnet
    from cnnlab.style.optimize import StyleObjective
    from cnnlab.style.network_objective import PerceptualObjective

    net = lossnet.build("efficientnet_lite0")
    model = TransformNet(width=32)
    objective = PerceptualObjective(StyleObjective(net, [torch.rand(1, 3, 256, 256)], [1.0], 1.0, 10.0, 1e-3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = torch.rand(4, 3, 256, 256)

    def step():
        optimizer.zero_grad()
        objective(model(batch), batch, None).backward()
        optimizer.step()

    seconds, _ = median_time(step, repeats)
    print(f"  train step: {seconds:.3f} s", flush=True)
    return [["256 px, batch 4, width 32, 5 residual blocks, efficientnet_lite0", f"{seconds:.3f}"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--only", nargs="+", choices=["apply", "optimize", "train"],
                        default=["apply", "optimize", "train"])
    args = parser.parse_args()
    threads = configure_threads(2)
    tune_cpu_allocator()
    banner = cpu_banner()
    print(banner, flush=True)
    start = time.perf_counter()
    sections = []
    if "apply" in args.only:
        rows, eager_seconds = [], {}
        for size in args.sizes:
            size_rows, eager_seconds[size] = apply_paths(size, args.width, args.repeats)
            rows += size_rows
        sections.append(f"## apply: ms per frame (batch 1, width {args.width}, {threads} threads, median of "
                        f"{args.repeats})\n\n" + table(["size", "path", "ms per frame", "vs plain eager"], rows))
        sections.append(
            "## apply: how far plain eager is from this CPU's fp32 ceiling\n\n"
            "Work per frame counted by torch's FlopCounterMode (convolutions only); the ceiling is a 2048 x 2048 "
            f"fp32 matrix product on the same {threads} threads, the kernel closest to peak. The 3x goal needs the "
            "GFLOP/s of the fourth column; no fp32 inference path of the same network can run above the fifth.\n\n"
            + table(["size", "GFLOP per frame", "plain eager GFLOP/s", "GFLOP/s for 3x", "fp32 matmul GFLOP/s",
                     "eager / matmul"], ceiling_rows(eager_seconds, args.width, args.repeats)))
    if "optimize" in args.only:
        sections.append("## optimize: seconds per iteration (loss + backward)\n\n" +
                        table(["loss network", "size", "seconds"], optimize_rows(args.sizes, args.repeats)))
    if "train" in args.only:
        sections.append("## train: seconds per step\n\n" + table(["setting", "seconds"], train_rows(args.repeats)))
    text = "\n\n".join(sections)
    print("\n" + text + f"\n\n({time.perf_counter() - start:.0f} s)")
    save_result("style", f"# Style transfer speed\n\n{banner}\n\nWritten by `python benchmarks/style.py`.\n\n{text}\n")


if __name__ == "__main__":
    main()
