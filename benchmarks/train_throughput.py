"""Training throughput of the course networks: images/s and seconds per epoch in each precision and memory
format, and which one `precision: auto` / `channels_last: auto` picks on this CPU.

    python benchmarks/train_throughput.py [--threads 2] [--steps 12] [--repeats 5]

Each figure is the median of `repeats` timed runs of `steps` optimizer steps through the real engine
(Trainer.train_step) and the real batch pipeline (uint8 batches, random shift + flip, normalization), on
synthetic CIFAR-shaped data, with cnnlab's CPU allocator setting. Seconds per epoch = 45,000 training
images (CIFAR-10 minus the validation split) / images per second. The ratio column compares each row with
fp32 contiguous of the same model, measured in the same run. The first line names the CPU class: bf16 is
fast only with native bf16 (AVX-512 BF16 / AMX), and emulated (many times slower) elsewhere.
"""

from __future__ import annotations

import argparse

import torch

from _common import cpu_banner, median_time, save_result, table
from cnnlab import models
from cnnlab.config import AugmentConfig, OptimConfig, ScheduleConfig
from cnnlab.data.augment import BatchAugment
from cnnlab.data.loader import TensorBatches
from cnnlab.engine import Trainer
from cnnlab.engine.device import configure_threads, resolve_execution, tune_cpu_allocator
from cnnlab.engine.optim import LrSchedule, build_optimizer

TITLE = "# Training throughput by precision and memory format"
EPOCH_IMAGES = 45_000


def throughput(model_name: str, model_args: dict, precision: str, channels_last: bool, batch_size: int,
               steps: int, repeats: int) -> float:
    torch.manual_seed(0)
    model = models.create(model_name, **model_args)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, OptimConfig(name="rmsprop", lr=1e-3))
    schedule = LrSchedule(optimizer, ScheduleConfig(), steps_per_epoch=steps, total_steps=10 ** 9)
    trainer = Trainer(model, optimizer, schedule, device=torch.device("cpu"), precision=precision,
                      channels_last=channels_last)
    images = torch.randint(0, 256, (batch_size * steps, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (batch_size * steps,))
    batches = TensorBatches(images, labels, batch_size, mean=(0.5,) * 3, std=(0.25,) * 3, shuffle=True,
                            augment=BatchAugment(AugmentConfig(translate=0.1, flip=True), 32),
                            channels_last=channels_last)
    counter = iter(range(10 ** 9))

    def run():
        trainer.train_epoch(batches.epoch(next(counter)))

    seconds, _ = median_time(run, repeats=repeats, warmup=1)
    return batch_size * steps / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args()
    threads = configure_threads(args.threads)
    tune_cpu_allocator()
    auto = resolve_execution(torch.device("cpu"))
    print(cpu_banner())
    print(f"{threads} threads, batch {args.batch_size}, {args.steps} steps x {args.repeats} repeats (median); "
          f"auto picks {auto.precision} + {'channels_last' if auto.channels_last else 'contiguous'}\n")
    cases = [("mlp", {}), ("cnn4", {"batchnorm": True}), ("cnn4", {"batchnorm": False}),
             ("fastnet", {"widths": [32, 96, 192]})]
    rows = []
    for name, margs in cases:
        base = None
        for precision, cl in (("fp32", False), ("fp32", True), ("bf16", True)):
            if precision == "bf16" and not auto.native_bf16 and args.steps > 4:
                steps = 4  # emulated bf16 is slow: fewer steps suffice to show it
            else:
                steps = args.steps
            ips = throughput(name, margs, precision, cl, args.batch_size, steps, args.repeats)
            base = base or ips
            label = name + (" + bn" if margs.get("batchnorm") else "")
            picked = " (auto)" if (precision == auto.precision and cl == auto.channels_last) else ""
            rows.append([label, precision + (" + channels_last" if cl else "") + picked, f"{ips:,.0f}",
                         f"{EPOCH_IMAGES / ips:.1f}", f"{ips / base:.2f}x"])
            print(f"  {rows[-1]}", flush=True)
    text = table(["model", "precision", "images/s", "s/epoch (45k)", "vs fp32 contiguous"], rows)
    print()
    print(text)
    save_result("train-throughput", f"{TITLE}\n\n{cpu_banner()}\n\nWritten by `python benchmarks/train_throughput.py` "
                f"({threads} threads, batch {args.batch_size}, median of {args.repeats}).\n\n{text}\n")


if __name__ == "__main__":
    main()
