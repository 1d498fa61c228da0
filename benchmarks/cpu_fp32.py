"""What makes fp32 training fast on a CPU without native bf16: each trick measured against the landed path.

    python benchmarks/cpu_fp32.py [--repeats 5] [--steps 4] [--model-widths 32 96 192]

A training step of the fast recipe's network (fastnet, fast89's widths, batch 500, Muon + SGD as in
configs/fast89.yaml) through the real engine (Trainer.train_step and the batch pipeline), at 32 px and at the
24 px of progressive resizing. Every variant runs in a fresh process (the allocator setting is process-wide)
and reports the median of `repeats` timings of `steps` steps after 2 warm-up steps; the ratio column
compares with the first row ("as landed"), measured in the same run. Prints the CPU class first.

Variants, each adding one change to the one before, then alternatives that were tried:
  as landed          contiguous tensors, glibc's default allocator, Muon's Newton-Schulz in bf16 (what
                     torch.optim.Muon does), fp32 autocast off: the landed configs with precision=fp32
  + channels_last    NHWC memory format for model and batches
  + fp32 Newton-Schulz   Muon's orthogonalization in fp32 (bf16 is emulated on this class of CPU)
  + allocator        glibc keeps freed memory (mallopt): cnnlab's path on such a CPU
  batch 250 / 1000   the same path with another batch size (images/s compared)
  torch.compile      the same path with the model compiled (inductor; compile time reported apart)
  bf16 autocast      the landed configs' choice, for reference (emulated on CPUs without native bf16)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TITLE = "# fp32 training speed on this CPU: each trick against the landed path"
ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "as landed": dict(channels_last=False, ns="bf16", allocator=False),
    "+ channels_last": dict(channels_last=True, ns="bf16", allocator=False),
    "+ fp32 Newton-Schulz": dict(channels_last=True, ns="fp32", allocator=False),
    "+ allocator (cnnlab's path)": dict(channels_last=True, ns="fp32", allocator=True),
    "cnnlab's path, batch 250": dict(channels_last=True, ns="fp32", allocator=True, batch=250),
    "cnnlab's path, batch 1000": dict(channels_last=True, ns="fp32", allocator=True, batch=1000),
    "cnnlab's path + torch.compile": dict(channels_last=True, ns="fp32", allocator=True, compile=True),
    "cnnlab's path in bf16 autocast": dict(channels_last=True, ns="bf16", allocator=True, precision="bf16",
                                           steps=2, repeats=2),  # emulated where not native: slow, fewer steps
}


def measure(spec: dict, size: int, steps: int, repeats: int, widths: list[int]) -> dict:
    """Runs in the child process: images/s of one variant at one image size."""
    import torch

    from cnnlab import models
    from cnnlab.config import AugmentConfig, OptimConfig, ScheduleConfig
    from cnnlab.data.augment import BatchAugment
    from cnnlab.data.loader import TensorBatches
    from cnnlab.engine import Trainer
    from cnnlab.engine.device import configure_threads, memory_format, tune_cpu_allocator
    from cnnlab.engine.optim import LrSchedule, build_optimizer

    configure_threads(2)
    allocator = tune_cpu_allocator() if spec["allocator"] else "default"
    batch = spec.get("batch", 500)
    precision = spec.get("precision", "fp32")
    torch.manual_seed(0)
    model = models.create("fastnet", widths=widths).to(memory_format=memory_format(spec["channels_last"]))
    cfg = OptimConfig(name="muon", lr=106 * batch / 2000, muon_lr=0.24, momentum=0.85, nesterov=True,
                      weight_decay=3.77e-5, muon_momentum=0.6, muon_ns_steps=3, muon_normalize=True)
    optimizer = build_optimizer(model, cfg, precision=spec["ns"])  # "bf16" -> Newton-Schulz in bf16
    schedule = LrSchedule(optimizer, ScheduleConfig(name="linear"), steps_per_epoch=100, total_steps=10 ** 6)
    train_module = model
    compile_seconds = 0.0
    if spec.get("compile"):
        train_module = torch.compile(model)
    trainer = Trainer(model, optimizer, schedule, device=torch.device("cpu"), precision=precision,
                      channels_last=spec["channels_last"], label_smoothing=0.2, train_module=train_module)
    n = batch * (steps + 2)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    batches = TensorBatches(images, torch.randint(0, 10, (n,)), batch, mean=(0.5,) * 3, std=(0.25,) * 3,
                            shuffle=True, augment=BatchAugment(AugmentConfig(translate=2, flip=True), 32),
                            channels_last=spec["channels_last"], low_res=(size, 1e9) if size != 32 else None)
    start = time.perf_counter()
    for x, y in batches.epoch(0, 2):  # warm-up (and compilation)
        float(trainer.train_step(x, y)[0])
    if spec.get("compile"):
        compile_seconds = time.perf_counter() - start
    samples = []
    for r in range(repeats):
        data = list(batches.epoch(r + 1, steps))
        t = time.perf_counter()
        for x, y in data:
            loss, _ = trainer.train_step(x, y)
        float(loss)
        samples.append(time.perf_counter() - t)
    return {"images_per_second": batch * steps / statistics.median(samples), "compile_seconds": compile_seconds,
            "allocator": allocator}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--model-widths", type=int, nargs=3, default=[32, 96, 192])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 24])
    parser.add_argument("--only", nargs="+", metavar="VARIANT", help="a subset of the variants (by name)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec, size = json.loads(args.child)
        print(json.dumps(measure(spec, size, args.steps, args.repeats, args.model_widths)))
        return
    from _common import cpu_banner, save_result, table

    print(cpu_banner(), flush=True)
    print(f"fastnet widths {args.model_widths}, median of {args.repeats} x {args.steps} steps, 2 threads\n", flush=True)
    rows, base = [], {}
    for name, spec in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        cells = [name]
        for size in args.sizes:
            env = {**os.environ, "OMP_NUM_THREADS": "2"}
            env.pop("CNNLAB_NO_MALLOPT", None)
            steps, repeats = spec.get("steps", args.steps), spec.get("repeats", args.repeats)
            proc = subprocess.run([sys.executable, __file__, "--child", json.dumps([spec, size]), "--steps",
                                   str(steps), "--repeats", str(repeats), "--model-widths",
                                   *map(str, args.model_widths)], capture_output=True, text=True, env=env, cwd=ROOT)
            if proc.returncode != 0:
                raise SystemExit(f"variant {name!r} failed:\n{proc.stderr[-2000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            ips = result["images_per_second"]
            base.setdefault(size, ips)
            extra = f", compile {result['compile_seconds']:.0f} s" if result["compile_seconds"] else ""
            cells.append(f"{ips:,.0f} img/s ({ips / base[size]:.2f}x{extra})")
        rows.append(cells)
        print("  " + " | ".join(cells), flush=True)
    text = table(["variant", *[f"{s} px" for s in args.sizes]], rows)
    print()
    print(text)
    save_result("cpu-fp32", f"{TITLE}\n\n{cpu_banner()}\n\nWritten by `python benchmarks/cpu_fp32.py` (fastnet "
                f"{args.model_widths}, batch 500 unless named, median of {args.repeats} x {args.steps} steps, each "
                f"variant in a fresh process).\n\n{text}\n")


if __name__ == "__main__":
    main()
