"""The course's content-weight study (task 5: content weights 15, 50, 100) on cnnlab's loss scale, measured: the
style and content loss `cnnlab.style.optimize` reaches at each mapped weight (style/course_weights.py), on
photo x painting pairs, and how the map's anchor was chosen.

    python benchmarks/style_content_weights.py [--size 256] [--iterations 80,150]

Writes benchmarks/results/style-content-weights-<CPU class>.md: for each iteration count, (1) the anchor sweep
on the one pair the map was chosen on (chelsea x starry_night): candidate anchors k (course weight w -> w·k)
with the style losses they give at course 15 and 100; (2) the check on held-out pairs (other photos, every
painting) with the chosen map: style loss at course 15 at most half of that at course 100, as the course's
lesson needs. And style-content-weights-course-<CPU class>.jpg, the pictures: photo, painting, course 15 / 50 /
100. The losses are those of one deterministic L-BFGS run each (no timing here, so no medians).

`content_weight_table` is also what benchmarks/style_quality.py imports.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from _common import cpu_banner, cpu_class, save_result, table
from cnnlab.data import data_root
from cnnlab.data.images import read_image
from cnnlab.style import lossnet
from cnnlab.style.course_weights import (COURSE_CONTENT_WEIGHTS, DEFAULT_STYLE_WEIGHT, content_weight_label,
                                         course_content_weight)
from cnnlab.style.optimize import OptimizeSettings, resize_longest, stylize

LOSS_NET = "efficientnet_lite0"  # the only loss network with weights everywhere (lossnet.py)
TUNING_PAIR = ("chelsea.png", "starry_night.jpg")  # the one pair the anchor was chosen on
HELD_OUT_PHOTOS = ["astronaut.png", "china.jpg", "coffee.png"]
PAINTINGS = ["starry_night.jpg", "the_scream.jpg", "great_wave.jpg", "woman-with-hat-matisse.jpg"]
ANCHORS = [0.01, 0.03, 0.1, 0.3, 1.0]  # candidate k of course weight -> k · course weight (0.1: the chosen map;
# 1: the course's numbers unmapped, what task 5 ran before: the baseline)


def _image(name: str | Path, folder: str) -> torch.Tensor:
    """A path, or a file name under the data root's images/<folder> (CNNLAB_DATA)."""
    path = Path(name)
    return read_image(path if path.exists() else data_root() / "images" / folder / path)


def _run(net, photo: torch.Tensor, painting: torch.Tensor, size: int, iterations: int, content_weight: float) -> dict:
    """One stylization at `content_weight` (the other settings cnnlab's defaults): its final losses, its mean
    absolute pixel distance to the photo and the image."""
    s = OptimizeSettings(size=size, iterations=iterations, content_weight=content_weight)
    result = stylize(net, photo, [painting], s)
    base = resize_longest(photo, size)
    return {"content_weight": content_weight, "style_loss": result.final["style_loss"],
            "content_loss": result.final["content_loss"], "initial_style_loss": result.initial["style_loss"],
            "distance": (result.image - base).abs().mean().item(), "seconds": result.seconds, "image": result.image}


def content_weight_table(photos: Sequence[str | Path], paintings: Sequence[str | Path], size: int = 256,
                         iterations: int = 150, *, course_weights: Sequence[float] = COURSE_CONTENT_WEIGHTS,
                         net=None, images: dict | None = None) -> tuple[str, list[dict]]:
    """Every photo x painting pair optimized at the course's content weights mapped onto cnnlab's scale.

    Returns (a Markdown table, one line per pair: style and content loss per course weight, style loss at the
    lowest course weight over that at the highest, and whether that is at most 1/2, the course's contrast) and
    the rows (one dict per pair and weight: photo, painting, course_weight, content_weight, style_loss,
    content_loss, initial_style_loss, distance: mean |output - photo| in [0, 1] pixels, seconds). `images`, when
    given, is filled with {(photo, painting): [photo, output per course weight]} for pictures."""
    net = net or lossnet.build(LOSS_NET)
    rows: list[dict] = []
    lines = []
    low, high = min(course_weights), max(course_weights)
    for photo_name in photos:
        photo = _image(photo_name, "photos")
        for painting_name in paintings:
            painting = _image(painting_name, "styles")
            pair = [{"photo": Path(photo_name).name, "painting": Path(painting_name).name, "course_weight": w,
                     **_run(net, photo, painting, size, iterations, course_content_weight(w))}
                    for w in course_weights]
            if images is not None:
                images[(Path(photo_name).name, Path(painting_name).name)] = \
                    [resize_longest(photo, size)] + [r["image"] for r in pair]
            for r in pair:
                del r["image"]
            rows += pair
            by = {r["course_weight"]: r for r in pair}
            ratio = by[low]["style_loss"] / by[high]["style_loss"]
            lines.append([pair[0]["photo"], pair[0]["painting"],
                          " / ".join(f"{r['style_loss']:.3f}" for r in pair),
                          " / ".join(f"{r['content_loss']:.3f}" for r in pair),
                          " / ".join(f"{r['distance']:.3f}" for r in pair),
                          f"{ratio:.2f}", "yes" if ratio <= 0.5 else "**no**"])
    course = " / ".join(f"{w:g}" for w in course_weights)
    mapped = " / ".join(f"{course_content_weight(w):g}" for w in course_weights)
    headers = ["photo", "painting", f"style loss at course {course} (cnnlab {mapped})", "content loss",
               "distance to the photo", f"style {low:g} / style {high:g}", "≤ 0.5"]
    return table(headers, lines), rows


def style_ratios(rows: list[dict], low: float = min(COURSE_CONTENT_WEIGHTS),
                 high: float = max(COURSE_CONTENT_WEIGHTS)) -> list[float]:
    """Per pair of content_weight_table's rows: the style loss at course `low` over that at course `high` (the
    course's lesson needs it at most 1/2)."""
    pairs: dict[tuple[str, str], dict[float, float]] = {}
    for r in rows:
        pairs.setdefault((r["photo"], r["painting"]), {})[r["course_weight"]] = r["style_loss"]
    return [by[low] / by[high] for by in pairs.values()]


def anchor_table(photo: str, painting: str, size: int, iterations: int, anchors: Sequence[float] = ANCHORS,
                 net=None) -> str:
    """The choice of the anchor k on one pair: for each candidate, the content weights course 15 and 100 become,
    the style losses there, their ratio and how far course 100's output moved from the photo."""
    net = net or lossnet.build(LOSS_NET)
    photo_x, painting_x = _image(photo, "photos"), _image(painting, "styles")
    done: dict[float, dict] = {}

    def at(weight: float) -> dict:
        if weight not in done:
            done[weight] = _run(net, photo_x, painting_x, size, iterations, weight)
        return done[weight]

    lines = []
    for k in anchors:
        low, high = at(15 * k), at(100 * k)
        note = " (chosen)" if abs(k - DEFAULT_STYLE_WEIGHT / 100) < 1e-9 else " (unmapped)" if k == 1 else ""
        lines.append([f"{k:g}{note}",
                      f"{15 * k:g} / {100 * k:g}", f"{low['style_loss']:.3f} / {high['style_loss']:.3f}",
                      f"{low['style_loss'] / high['style_loss']:.2f}",
                      f"{low['distance']:.3f} / {high['distance']:.3f}"])
    return table(["anchor k", "content weight at course 15 / 100", "style loss", "style ratio",
                  "distance to the photo"], lines)


def main() -> None:
    from cnnlab.engine.device import configure_threads
    from cnnlab.report.plots import image_grid

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iterations", default="80,150", help="L-BFGS iterations, one table per count")
    args = parser.parse_args()
    configure_threads(2)
    banner = cpu_banner()
    print(banner, flush=True)
    klass, start = cpu_class(), time.perf_counter()
    net = lossnet.build(LOSS_NET)
    counts = [int(i) for i in args.iterations.split(",")]
    sections, pictures = [], {}
    for iterations in counts:
        anchors = anchor_table(*TUNING_PAIR, args.size, iterations, net=net)
        images: dict = {}
        text, rows = content_weight_table(HELD_OUT_PHOTOS, PAINTINGS, args.size, iterations, net=net, images=images)
        ratios = style_ratios(rows)
        passed, pairs = sum(r <= 0.5 for r in ratios), len(ratios)
        sections.append(f"## {iterations} L-BFGS iterations\n\nChoosing the anchor on {TUNING_PAIR[0]} x "
                        f"{TUNING_PAIR[1]} (course weight w -> k · w):\n\n{anchors}\n\nThe chosen map (k = "
                        f"{DEFAULT_STYLE_WEIGHT / 100:g}) on held-out pairs: style loss at course 15 at most half "
                        f"of that at course 100 on {passed} of {pairs} pairs (ratios {min(ratios):.2f}-"
                        f"{max(ratios):.2f}).\n\n"
                        f"{text}\n")
        pictures = images  # the last (longest) iteration count's
        print(f"{iterations} iterations: {passed} of {pairs} held-out pairs pass", flush=True)
    keep = [(p, PAINTINGS[i % len(PAINTINGS)]) for i, p in enumerate(HELD_OUT_PHOTOS)]
    keep += [(HELD_OUT_PHOTOS[0], PAINTINGS[-1])]
    labels = [content_weight_label(course_content_weight(w)) for w in COURSE_CONTENT_WEIGHTS]
    picture = Path(__file__).resolve().parent / "results" / f"style-content-weights-course-{klass}.jpg"
    image_grid([pictures[k] for k in keep], [[f"photo, painting: {Path(k[1]).stem}"] + labels for k in keep], picture,
               title=f"the course's content weights on cnnlab's scale ({LOSS_NET}, {counts[-1]} L-BFGS iterations, "
                     f"{args.size} px, style weight {DEFAULT_STYLE_WEIGHT:g})")
    minutes = (time.perf_counter() - start) / 60
    save_result("style-content-weights", f"# The course's content weights on cnnlab's scale\n\n{banner}\n\n"
                f"Written by `python benchmarks/style_content_weights.py --size {args.size} --iterations "
                f"{args.iterations}` ({minutes:.1f} min in all): `cnnlab.style.optimize`, loss network {LOSS_NET}, "
                f"style weight {DEFAULT_STYLE_WEIGHT:g}, TV weight 10, L-BFGS from the photo. Style and content "
                f"losses are cnnlab's relative terms; distance: mean |output - photo| over pixels in [0, 1]. The "
                f"map: src/cnnlab/style/course_weights.py. Pictures: {picture.name}.\n\n" + "\n".join(sections))


if __name__ == "__main__":
    main()
