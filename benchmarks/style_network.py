"""One fast style network trained within a time budget on this machine, and what it gives on photos it never saw.

    python benchmarks/style_network.py                      # 30 minutes of training (the issue's goal)
    python benchmarks/style_network.py --minutes 5 --out runs/bench-style-5   # a quick look
    python benchmarks/style_network.py --content-weight 3 --name style-network-cw3 --out runs/bench-style-cw3

Trains `cnnlab stylize train --minutes M` as a whole process (the painting, the content photos, image size,
batch and loss weights below; previews every --preview-every steps), then `cnnlab stylize apply` on shared
photos that are not in the training set, at their own size (longest side --apply-size). Writes
benchmarks/results/<name>-<CPU class>.md (--name, default style-network; image size, batch, steps,
photos seen, minutes, loss per epoch, apply seconds), <name>-evolution-<CPU class>.jpg (the previews over
training) and <name>-apply-<CPU class>.jpg (photo, stylized). A finished run in --out with the same settings is reused
(delete it, or pass --fresh, to train again). Judge the pictures by eye: that is the point of them.
The script's --content-weight default (1) is the first measurement; `stylize train` itself defaults to 3 since
(the README's style section shows both).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import cnnlab_env, cpu_banner, cpu_class, save_result, table

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CNNLAB_DATA", ROOT.parent / "shared" / "data"))
PHOTOS = ["chelsea.png", "china.jpg", "astronaut.png"]


def cnnlab(*args: str) -> float:
    """Run one cnnlab command as its own process; its wall seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cnnlab", *args], check=True, env=cnnlab_env())
    return time.perf_counter() - start


def train_args(args) -> list[str]:
    return ["--style", str(args.style), "--content-dir", str(args.content_dir), "--image-size", str(args.image_size),
            "--style-size", str(args.image_size), "--batch-size", str(args.batch_size), "--epochs", "1000",
            "--minutes", str(args.minutes), "--content-weight", str(args.content_weight), "--style-weight",
            str(args.style_weight), "--tv-weight", str(args.tv_weight), "--loss-net", args.loss_net,
            "--preview-every", str(args.preview_every), "--no-progress"]


def trained(out: Path, args) -> bool:
    """A finished run made with these very arguments (kept in the run folder beside it)."""
    stamp = out / "benchmark-args.json"
    return (out / "summary.json").exists() and stamp.exists() and json.loads(stamp.read_text()) == train_args(args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--style", type=Path, default=DATA / "images" / "styles" / "starry_night.jpg")
    parser.add_argument("--content-dir", type=Path, default=DATA / "scenes6")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--content-weight", type=float, default=1.0)
    parser.add_argument("--style-weight", type=float, default=10.0)
    parser.add_argument("--tv-weight", type=float, default=10.0)
    parser.add_argument("--loss-net", default="efficientnet_lite0")
    parser.add_argument("--preview-every", type=int, default=100)
    parser.add_argument("--apply-size", type=int, default=512)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-style-network")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--name", default="style-network", help="results file names: <name>-<CPU class>.md, ...")
    args = parser.parse_args()
    banner = cpu_banner()
    print(banner, flush=True)
    out: Path = args.out
    if args.fresh or not trained(out, args):
        if out.exists() and any(out.iterdir()) and not (out / "benchmark-args.json").exists() \
                and not (out / "style.json").exists():
            raise SystemExit(f"--out {out} holds files this script did not make; give an empty or new folder")
        shutil.rmtree(out, ignore_errors=True)
        train_seconds = cnnlab("stylize", "train", *train_args(args), "--out", str(out))
        (out / "benchmark-args.json").write_text(json.dumps(train_args(args)))
        (out / "benchmark-seconds.json").write_text(json.dumps({"process_seconds": train_seconds}))
    summary = json.loads((out / "summary.json").read_text())
    process_seconds = json.loads((out / "benchmark-seconds.json").read_text())["process_seconds"]
    stylized, apply_rows = apply_to_photos(out, args.apply_size)
    pictures(out, stylized, summary, args.name)
    with open(out / "metrics.csv") as f:
        epochs = [[r["epoch"], r["train_images"], f"{float(r['train_loss']):.3f}", f"{float(r['epoch_seconds']):.0f}"]
                  for r in csv.DictReader(f)]
    s = summary["settings"]
    text = "\n".join([
        "# A fast style network in a time budget", "", banner, "",
        f"Written by `python benchmarks/style_network.py {' '.join(sys.argv[1:])}`.", "",
        f"Painting {Path(s['style']).name}, content photos {s['content_dir']} ({summary['photos']} photos), "
        f"training crops {s['image_size']} px, batch {s['batch_size']}, width {s['width']}, "
        f"{s['residual_blocks']} residual blocks, loss network {summary['loss_net']}, content weight "
        f"{s['content_weight']}, style weight {s['style_weight']}, TV weight {s['tv_weight']}, lr {s['lr']}, "
        f"{summary['precision']}, {summary['threads']} threads.", "",
        table(["budget (min)", "steps", "photos seen", "training seconds", "whole process (min)", "first epoch loss",
               "final loss", "stopped because"],
              [[s["minutes"], summary["steps"], summary["steps"] * s["batch_size"], f"{summary['train_seconds']:.0f}",
                f"{process_seconds / 60:.1f}", f"{summary['first_epoch_loss']:.3f}", f"{summary['final_loss']:.3f}",
                summary.get("stop_reason", "")]]), "",
        "Loss per epoch (an epoch is one pass over the photos; the last one is cut by the budget):", "",
        table(["epoch", "photos", "mean loss", "seconds"], epochs), "",
        f"`stylize apply` on photos the network never saw (longest side {args.apply_size} px, one process each):",
        "", table(["photo", "size", "seconds, whole process"], apply_rows), "",
        f"Pictures: {args.name}-evolution-{cpu_class()}.jpg (previews over training), "
        f"{args.name}-apply-{cpu_class()}.jpg (photo, stylized).", ""])
    save_result(args.name, text)
    print(text)


def apply_to_photos(out: Path, size: int):
    """Each photo resized to `size` (longest side), stylized by its own `cnnlab stylize apply` process."""
    from cnnlab.data.images import read_image, save_png
    from cnnlab.style.optimize import resize_longest

    work = out / "apply"
    work.mkdir(exist_ok=True)
    pairs, rows = [], []
    for name in PHOTOS:
        photo = resize_longest(read_image(DATA / "images" / "photos" / name), size)[0]  # float [3, h, w] in [0, 1]
        source = save_png(photo, work / f"{Path(name).stem}-input.png")
        target = work / f"{Path(name).stem}-stylized.png"
        seconds = cnnlab("stylize", "apply", "--model", str(out), "--input", str(source), "--out", str(target),
                         "--no-progress")
        pairs.append((photo, read_image(target).float() / 255))
        rows.append([name, f"{photo.shape[-1]}x{photo.shape[-2]}", f"{seconds:.1f}"])
    return pairs, rows


def pictures(out: Path, stylized, summary: dict, name: str) -> None:
    from PIL import Image

    from cnnlab.report.plots import image_grid

    results = ROOT / "benchmarks" / "results"
    Image.open(out / "evolution.png").convert("RGB").save(results / f"{name}-evolution-{cpu_class()}.jpg",
                                                        quality=85)
    image_grid([[photo, styled] for photo, styled in stylized],
               [["photo", f"after {summary['steps']} steps"] for _ in stylized],
               results / f"{name}-apply-{cpu_class()}.jpg",
               title=f"{Path(summary['style']).stem}: a style network trained {summary['train_seconds'] / 60:.0f} "
                     f"min on 2 cores ({cpu_class()}), content weight {summary['settings']['content_weight']:g}, "
                     f"style weight {summary['settings']['style_weight']:g}")


if __name__ == "__main__":
    main()
