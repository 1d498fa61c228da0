"""Speed of transfer learning on a 2-core CPU: feature extraction three ways, and the three runs' costs.

    python benchmarks/transfer.py [--repeats 5] [--images 64] [--skip-runs]

1. Feature extraction, images/s at 224 px, batch 32, for efficientnet_lite0 (real weights) and resnet50
   (random weights: only the time matters), in the same run, on the same images:
   - plain eager fp32: the model called on contiguous float tensors, as most tutorials do;
   - cnnlab's torch backend: transfer.features.Extractor (batch norms folded into the convolutions, the run's
     precision, channels_last, no_grad; EfficientNet's symmetric same-padding done by the convolutions);
   - ONNX Runtime on the same network exported to ONNX (the usual reference for CPU inference; needs
     `pip install onnxruntime onnx`, the `bench` or `onnx` extra);
   - cnnlab's auto backend, what `cnnlab features` uses: ONNX Runtime on the folded network where installed.
   Medians of --repeats passes over --images images; ratios against plain eager, same run.
2. Seconds (whole `cnnlab` processes on ../shared/data/scenes6, 450 training + 180 validation photos):
   the softmax head on cached features, 10 fine-tuning epochs of efficientnet_lite0, and the cached second
   features run (it decodes and extracts nothing: checked in its summary).
Prints the CPU class first and writes benchmarks/results/transfer-<CPU class>.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import cpu_banner, median_time, save_result, table
from cnnlab import models
from cnnlab.engine.device import configure_threads, resolve_execution, tune_cpu_allocator
from cnnlab.transfer.features import Extractor, extraction_backend

ROOT = Path(__file__).resolve().parents[1]
SCENES = ROOT.parent / "shared" / "data" / "scenes6"


def plain_eager(model, images, mean, std, batch: int) -> None:
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = (images[i:i + batch].float() / 255 - torch.tensor(mean).view(1, -1, 1, 1)) / \
                torch.tensor(std).view(1, -1, 1, 1)
            model(x)


def onnx_session(model, batch: int):
    """An ONNX Runtime session of the model exported at a fixed batch size, or None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    path = Path(tempfile.mkdtemp()) / "model.onnx"
    torch.onnx.export(model.eval(), torch.randn(batch, 3, 224, 224), str(path), input_names=["x"],
                      output_names=["y"], dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_run(session, images, mean, std, batch: int) -> None:
    for i in range(0, len(images) - batch + 1, batch):
        x = (images[i:i + batch].float() / 255 - torch.tensor(mean).view(1, -1, 1, 1)) / \
            torch.tensor(std).view(1, -1, 1, 1)
        session.run(None, {"x": x.numpy()})


def extraction(args) -> str:
    execution = resolve_execution(torch.device("cpu"))
    images = torch.randint(0, 256, (args.images, 3, 224, 224), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    cpu = torch.device("cpu")
    auto = extraction_backend("auto", cpu, execution.precision)
    rows = []
    for name, kwargs in (("efficientnet_lite0", {}), ("resnet50", {"weights": "none"})):
        model = models.create(name, **kwargs).eval()
        pre = model.preprocess
        plain, _ = median_time(lambda: plain_eager(model, images, pre.mean, pre.std, args.batch), args.repeats)
        torch_path = Extractor(model, pre.mean, pre.std, cpu, execution.precision, execution.channels_last)
        ours_torch, _ = median_time(lambda: torch_path(images, args.batch), args.repeats)
        cases = [("plain eager fp32", plain),
                 (f"cnnlab, torch backend ({execution.precision}, channels_last, BN folded)", ours_torch)]
        onnx = None
        session = onnx_session(model, args.batch)
        if session is not None:
            onnx, _ = median_time(lambda: onnx_run(session, images, pre.mean, pre.std, args.batch), args.repeats)
            cases.append(("ONNX Runtime on the exported network (reference)", onnx))
        ours = ours_torch
        if auto == "onnxruntime":
            onnx_file = Path(tempfile.mkdtemp()) / f"{name}.onnx"
            ort_path = Extractor(model, pre.mean, pre.std, cpu, execution.precision, False, auto, onnx_file, images)
            ours, _ = median_time(lambda: ort_path(images, args.batch), args.repeats)
            cases.append(("cnnlab, auto backend (ONNX Runtime, BN folded)", ours))
        for label, seconds in cases:
            rows.append([name, label, f"{args.images / seconds:.1f}", f"{plain / seconds:.2f}x"])
            print(f"  {rows[-1]}", flush=True)
        if onnx is not None:
            rows.append([name, "cnnlab torch backend vs ONNX Runtime", "", f"{onnx / ours_torch:.2f}x"])
            rows.append([name, f"cnnlab auto backend ({auto}) vs ONNX Runtime", "", f"{onnx / ours:.2f}x"])
    return table(["backbone", "path", "images/s", "vs plain eager"], rows)


def cnnlab_run(args_list: list[str]) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cnnlab", *args_list, "--no-progress"], capture_output=True,
                          text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"cnnlab {' '.join(args_list)} failed:\n{proc.stderr[-2000:]}")
    out = args_list[args_list.index("--out") + 1]
    return seconds, json.loads((Path(out) / "summary.json").read_text())


def runs(args) -> str:
    work = Path(tempfile.mkdtemp(prefix="cnnlab-bench-transfer-"))
    cache = ["--cache-dir", str(work / "cache")]
    rows = []
    first, s1 = cnnlab_run(["features", "--data", str(SCENES), "--out", str(work / "f1"), *cache])
    rows.append(["features + softmax, first run (decode 630 photos, extract, train)", f"{first:.1f}",
                 f"{s1['train_seconds']:.1f}", f"{100 * s1['best_val_accuracy']:.1f} %",
                 f"decoded {s1['decoded_images']}, features {s1['feature_cache']}"])
    second, s2 = cnnlab_run(["features", "--data", str(SCENES), "--out", str(work / "f2"), *cache])
    rows.append(["features + softmax, cached second run", f"{second:.1f}", f"{s2['train_seconds']:.1f}",
                 f"{100 * s2['best_val_accuracy']:.1f} %",
                 f"decoded {s2['decoded_images']}, features {s2['feature_cache']}"])
    tune, s3 = cnnlab_run(["finetune", "--data", str(SCENES), "--out", str(work / "ft"), "--epochs", "10",
                           "transfer.early_stopping=0", *cache])
    rows.append([f"fine-tuning efficientnet_lite0, 10 epochs (trainable: {s3['trainable']})", f"{tune:.1f}",
                 f"{s3['train_seconds']:.1f}", f"{100 * s3['best_val_accuracy']:.1f} %",
                 f"{s3['epochs']} epochs"])
    return table(["run (scenes6)", "process seconds", "training seconds", "best val accuracy", "notes"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--skip-runs", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("CNNLAB_DATA", str(ROOT.parent / "shared" / "data"))
    threads = configure_threads(2)
    tune_cpu_allocator()
    banner = cpu_banner()
    print(banner, flush=True)
    sections = [f"## Feature extraction ({args.images} images, batch {args.batch}, {threads} threads, median of "
                f"{args.repeats})\n\n{extraction(args)}"]
    if not args.skip_runs:
        sections.append(f"## Runs on scenes6\n\n{runs(args)}")
    text = "\n\n".join(sections)
    print("\n" + text)
    save_result("transfer", f"# Transfer learning speed\n\n{banner}\n\nWritten by `python benchmarks/transfer.py`."
                            f"\n\n{text}\n")


if __name__ == "__main__":
    main()
