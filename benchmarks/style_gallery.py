"""The README's style-transfer pictures: photos x paintings, the content-weight study, and what makes a non-VGG
loss network work (classic raw loss terms vs per-layer relative terms vs Wang et al.'s softmax smoothing), all
with `cnnlab.style.optimize`.

    python benchmarks/style_gallery.py [--size 256] [--iterations 200] [--loss-net efficientnet_lite0]

Writes benchmarks/results/style-gallery-<CPU class>.jpg (photos x paintings, smoothing on),
style-losses-<CPU class>.jpg (the same pairs with raw, relative and smoothed loss terms), style-content-weights-<CPU class>.jpg
and a .md file with the settings and seconds. Judge the pictures by eye: that is the point of them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from _common import cpu_banner, cpu_class, save_result
from cnnlab import style
from cnnlab.data.images import read_image
from cnnlab.engine.device import configure_threads
from cnnlab.report.plots import image_grid
from cnnlab.style.optimize import resize_longest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "images"
PHOTOS = ["chelsea.png", "china.jpg", "astronaut.png"]
PAINTINGS = ["starry_night.jpg", "the_scream.jpg", "great_wave.jpg", "woman-with-hat-matisse.jpg"]


def run(photo: str, painting: str, args, work: Path, style_weight: float | None = None,
        tv_weight: float | None = None, **kw) -> tuple[torch.Tensor, dict]:
    settings = style.OptimizeSettings(size=args.size, iterations=args.iterations,
                                      style_weight=args.style_weight if style_weight is None else style_weight,
                                      tv_weight=args.tv_weight if tv_weight is None else tv_weight)
    out = work / f"{Path(photo).stem}-{Path(painting).stem}-{len(list(work.iterdir()))}"
    summary = style.optimize(DATA / "photos" / photo, [DATA / "styles" / painting], out, settings,
                             loss_net=args.loss_net, progress=False, **kw)
    print(f"  {photo} x {painting} {kw or ''}: style {summary['initial']['style_loss']:.3f} -> "
          f"{summary['final']['style_loss']:.3f} in {summary['seconds']:.0f} s", flush=True)
    return read_image(out / "stylized.png").float() / 255, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--style-weight", type=float, default=10.0)
    parser.add_argument("--tv-weight", type=float, default=10.0)
    parser.add_argument("--loss-net", default="efficientnet_lite0")
    parser.add_argument("--content-weights", default="0.3,1,3")
    parser.add_argument("--only", nargs="+", choices=["gallery", "losses", "weights"],
                        default=["gallery", "losses", "weights"])
    args = parser.parse_args()
    configure_threads(2)
    banner = cpu_banner()
    print(banner, flush=True)
    work = Path(tempfile.mkdtemp(prefix="cnnlab-style-gallery-"))
    results = Path(__file__).resolve().parent / "results"
    klass, start, lines = cpu_class(), time.perf_counter(), []
    paintings = [resize_longest(read_image(DATA / "styles" / p), args.size)[0] for p in PAINTINGS]
    if "gallery" in args.only:
        rows, labels = [[None] + paintings], [[""] + [Path(p).stem for p in PAINTINGS]]
        for photo in PHOTOS:
            row = [resize_longest(read_image(DATA / "photos" / photo), args.size)[0]]
            row += [run(photo, painting, args, work)[0] for painting in PAINTINGS]
            rows.append(row)
            labels.append([Path(photo).stem] + ["stylized"] * len(PAINTINGS))
        image_grid(rows, labels, results / f"style-gallery-{klass}.jpg",
                   title=f"{args.loss_net}, {args.iterations} L-BFGS iterations at {args.size} px")
        lines.append(f"- style-gallery-{klass}.jpg: {len(PHOTOS)} photos x {len(PAINTINGS)} paintings")
    if "losses" in args.only:
        rows, labels = [], []
        for photo, painting in (("chelsea.png", "starry_night.jpg"), ("china.jpg", "the_scream.jpg")):
            row = [resize_longest(read_image(DATA / "styles" / painting), args.size)[0]]
            row += [run(photo, painting, args, work, relative=False, style_weight=w, tv_weight=0.0)[0]
                    for w in (1e2, 1e4)]
            row += [run(photo, painting, args, work)[0], run(photo, painting, args, work, smooth=True)[0]]
            rows.append(row)
            labels.append([Path(painting).stem, "raw terms, style 1e2", "raw terms, style 1e4",
                           f"relative (default), style {args.style_weight:g}", "relative + softmax smoothing"])
        image_grid(rows, labels, results / f"style-losses-{klass}.jpg",
                   title=f"{args.loss_net}: what makes a non-VGG loss network work")
        lines.append(f"- style-losses-{klass}.jpg: raw loss terms (style weight 1e2, 1e4; no TV), relative terms, "
                     f"relative + Wang et al.'s softmax smoothing")
    if "weights" in args.only:
        weights = [float(w) for w in args.content_weights.split(",")]
        images = [run("chelsea.png", "great_wave.jpg", args, work, content_weights=[w])[0] for w in weights]
        image_grid([images], [[f"content weight {w:g}" for w in weights]],
                   results / f"style-content-weights-{klass}.jpg", title="content weight vs style (style weight "
                   f"{args.style_weight:g})")
        lines.append(f"- style-content-weights-{klass}.jpg: content weights {args.content_weights}")
    minutes = (time.perf_counter() - start) / 60
    save_result("style-gallery", f"# Style transfer pictures\n\n{banner}\n\nWritten by `python "
                                 f"benchmarks/style_gallery.py` with size {args.size}, {args.iterations} iterations, "
                                 f"style weight {args.style_weight:g}, TV weight {args.tv_weight:g}, loss network "
                                 f"{args.loss_net} ({minutes:.1f} min in all).\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
