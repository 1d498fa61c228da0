"""Style networks against `optimize` on photos no network saw: style loss, content loss, outlier colours, pictures.

    python benchmarks/style_quality.py --minutes 15                        # today's default network
    python benchmarks/style_quality.py --minutes 15 --variant default= --variant slim="--block separable"
    python benchmarks/style_quality.py --minutes 15 --speed --content-weights   # + the speed and content-weight tables

Each --variant NAME=FLAGS trains `cnnlab stylize train --style S --content-dir D --minutes M --no-progress
--out <out>/NAME FLAGS` as a whole process (an earlier run with the very same arguments is reused), then
stylizes each held-out photo (longest side --size) with the network's forward pass as `stylize apply` runs it.
The reference is `cnnlab stylize optimize`'s algorithm on the same photo (L-BFGS, its default weights, --iterations).
Both are scored with the same loss network and relative terms (cnnlab.style.quality):
- style loss and content loss of the finished picture against the painting and the photo, and the style loss
  as a ratio to optimize's (goal: at most 1.5x, at equal or lower content loss);
- the outlier-colour share: pixels whose colour is more than 50 (RGB, 0-255) from every colour of the painting
  and of the photo (goal: at most 0.05 % on every photo, as optimize).
Writes benchmarks/results/<name>-<CPU class>.md and <name>-<CPU class>.jpg (rows: photos; columns: the photo,
optimize, each network). --speed adds benchmarks/style_speed.py's frames/s table, --content-weights
benchmarks/style_content_weights.py's table of the course's content weights, --ratio A/B a table of network A's
style loss over network B's on each photo (the course's lesson for networks: course-15/course-100 at most 0.5).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from _common import cnnlab_env, cpu_banner, cpu_class, save_result, table

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CNNLAB_DATA", ROOT.parent / "shared" / "data"))
# Photos of many kinds none of the networks trains on (they train on scenes6), with bright flat regions
# (a white coat, a sky, a cup) where blobs showed: every photo of images/photos that is not a diagram.
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "hot_dog.jpg", "parrot.jpg", "rocket.png"]


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, flags = text.partition("=")
    if not name:
        raise SystemExit(f"--variant {text!r}: give NAME=FLAGS, e.g. default= or slim='--width 16'")
    return name, shlex.split(flags)


def parse_ratio(text: str, names: list[str]) -> tuple[str, str]:
    a, _, b = text.partition("/")
    if a not in names or b not in names:
        raise SystemExit(f"--ratio {text!r}: give A/B, two of the variants ({', '.join(names)})")
    return a, b


def ratio_table(scores: dict, photos: list[str], a: str, b: str) -> str:
    """Per photo: a's and b's style and content losses and a's style loss over b's, then the median and worst."""
    rows, quotients = [], []
    for photo in photos:
        sa, sb = scores[photo][a], scores[photo][b]
        quotients.append(sa["style_loss"] / sb["style_loss"])
        rows.append([photo, f"{sa['style_loss']:.4f}", f"{sb['style_loss']:.4f}", f"{quotients[-1]:.2f}",
                     f"{sa['content_loss']:.4f}", f"{sb['content_loss']:.4f}"])
    rows.append(["median", "", "", f"{sorted(quotients)[len(quotients) // 2]:.2f}", "", ""])
    rows.append(["worst (highest)", "", "", f"{max(quotients):.2f}", "", ""])
    return table(["photo", f"style loss, {a}", f"style loss, {b}", f"{a} / {b}", f"content loss, {a}",
                  f"content loss, {b}"], rows)


def train(name: str, flags: list[str], args) -> Path:
    """The variant's network: trained now, or reused when a finished run has the very same arguments."""
    out = args.out / name
    command = ["stylize", "train", "--style", str(args.style), "--content-dir", str(args.content_dir),
               "--minutes", str(args.minutes), "--epochs", "1000", "--no-progress", "--out", str(out), *flags]
    stamp = out / "benchmark-args.json"
    if (out / "summary.json").exists() and stamp.exists() and json.loads(stamp.read_text()) == command:
        return out
    if out.exists():
        import shutil
        shutil.rmtree(out)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cnnlab", *command], check=True, env=cnnlab_env())
    stamp.write_text(json.dumps(command))
    (out / "benchmark-seconds.json").write_text(json.dumps({"process_seconds": time.perf_counter() - start}))
    return out


def optimized(photo_name: str, photo, painting, args):
    """optimize's picture of the photo (cached as a PNG in --out/optimize, keyed by its settings)."""
    from cnnlab.data.images import read_image, save_png
    from cnnlab.style import lossnet
    from cnnlab.style.optimize import OptimizeSettings, stylize

    key = f"{Path(photo_name).stem}-{args.size}px-{args.iterations}it-{Path(args.style).stem}.png"
    path = args.out / "optimize" / key
    if not path.exists():
        net = lossnet.build("efficientnet_lite0")
        result = stylize(net, photo, [painting], OptimizeSettings(size=args.size, iterations=args.iterations))
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(result.image[0], path)
    return read_image(path).float().unsqueeze(0) / 255


def score(pictures: dict[str, object], photo, painting, loss_net) -> dict[str, dict]:
    """Each picture's losses and outlier share against this photo and painting."""
    from cnnlab.style.optimize import StyleObjective, resize_longest
    from cnnlab.style.quality import outlier_colour_share, picture_losses

    size = max(photo.shape[-2:])
    objective = StyleObjective(loss_net, [resize_longest(painting, size)], [1.0], 1.0, 1.0, 0.0)
    out = {}
    for method, picture in pictures.items():
        row = picture_losses(objective, picture, photo)
        row["outliers"] = outlier_colour_share(picture, [painting, photo[0]])
        out[method] = row
    return out


def out_of_range_share(network, picture, photo, painting) -> float | None:
    """Of the picture's outlier-colour pixels, the share where the network's raw output (fp32, before apply
    clamps it) has a channel outside [-0.05, 1.05]; None without outliers."""
    import torch

    from cnnlab.style.quality import outlier_colour_mask

    mask = outlier_colour_mask(picture, [painting, photo[0]])
    if not mask.any():
        return None
    with torch.inference_mode():
        raw = network(photo)[0]
    outside = ((raw < -0.05) | (raw > 1.05)).any(0)
    return float(outside[mask].float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                        help="a network to train and score (repeatable; default: default=, today's settings)")
    parser.add_argument("--style", type=Path, default=DATA / "images" / "styles" / "starry_night.jpg")
    parser.add_argument("--content-dir", type=Path, default=DATA / "scenes6")
    parser.add_argument("--photos", nargs="+", default=PHOTOS, help="names under images/photos of the data root")
    parser.add_argument("--size", type=int, default=384, help="longest side of the scored pictures")
    parser.add_argument("--iterations", type=int, default=300, help="optimize's L-BFGS iterations")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-style-quality")
    parser.add_argument("--name", default="style-quality")
    parser.add_argument("--speed", action="store_true", help="also the frames/s table (benchmarks/style_speed.py)")
    parser.add_argument("--content-weights", action="store_true",
                        help="also the course's content-weight table (benchmarks/style_content_weights.py)")
    parser.add_argument("--ratio", action="append", default=[], metavar="A/B",
                        help="also a table of variant A's style loss over variant B's on each photo (repeatable)")
    args = parser.parse_args()
    variants = [parse_variant(v) for v in (args.variant or ["default="])]
    ratio_pairs = [parse_ratio(r, [name for name, _ in variants]) for r in args.ratio]  # checked before training
    banner = cpu_banner()
    print(banner, flush=True)
    import torch

    from cnnlab.data.images import read_image
    from cnnlab.engine.device import configure_threads, resolve_execution
    from cnnlab.style import lossnet
    from cnnlab.style.apply import Stylizer
    from cnnlab.style.optimize import resize_longest
    from cnnlab.style.train import load_network

    runs = {name: train(name, flags, args) for name, flags in variants}
    configure_threads(2)
    cpu = torch.device("cpu")
    precision = resolve_execution(cpu, "auto", False).precision
    networks = {name: load_network(run)[0] for name, run in runs.items()}  # fp32: the Stylizer converts a copy
    stylizers = {name: Stylizer(network, cpu, precision) for name, network in networks.items()}
    painting = read_image(args.style)
    loss_net = lossnet.build("efficientnet_lite0")
    rows, grid, labels, scores = [], [], [], {}
    for photo_name in args.photos:
        photo = resize_longest(read_image(DATA / "images" / "photos" / photo_name), args.size)
        pictures = {"optimize": optimized(photo_name, (photo[0] * 255).round().to(torch.uint8), painting, args)}
        for name, stylizer in stylizers.items():
            pictures[name] = stylizer((photo * 255).round().to(torch.uint8)).float() / 255
        scores[photo_name] = score(pictures, photo, painting, loss_net)
        for name, network in networks.items():  # where the outliers come from: the network's unclamped output
            scores[photo_name][name]["out_of_range"] = out_of_range_share(network, pictures[name], photo, painting)
        reference = scores[photo_name]["optimize"]
        for method, s in scores[photo_name].items():
            rows.append([photo_name, method, f"{s['style_loss']:.4f}", f"{s['style_loss'] / reference['style_loss']:.2f}",
                         f"{s['content_loss']:.4f}", f"{100 * s['outliers']:.3f}",
                         "" if s.get("out_of_range") is None else f"{100 * s['out_of_range']:.0f}"])
        grid.append([photo[0], *[p[0] for p in pictures.values()]])
        labels.append([photo_name, *pictures])
    summary = []
    for method in ["optimize", *runs]:
        ratios = [scores[p][method]["style_loss"] / scores[p]["optimize"]["style_loss"] for p in args.photos]
        content = [scores[p][method]["content_loss"] / scores[p]["optimize"]["content_loss"] for p in args.photos]
        worst = max(scores[p][method]["outliers"] for p in args.photos)
        summary.append([method, f"{sorted(ratios)[len(ratios) // 2]:.2f}", f"{max(ratios):.2f}",
                        f"{sorted(content)[len(content) // 2]:.2f}", f"{100 * worst:.3f}",
                        # the goal, on every photo: style loss within 1.5x optimize's AT equal or lower content
                        # loss (a picture further from the photo than optimize's buys style with content), few outliers
                        "yes" if max(ratios) <= 1.5 and max(content) <= 1.0 and worst <= 0.0005 else "no"])
    from cnnlab.report.plots import image_grid

    picture_file = ROOT / "benchmarks" / "results" / f"{args.name}-{cpu_class()}.jpg"
    image_grid(grid, labels, picture_file, title=f"{args.style.stem}: optimize ({args.iterations} L-BFGS iterations) "
               f"and networks trained {args.minutes:g} min ({cpu_class()}), photos no network saw")
    settings = {name: " ".join(flags) or "(defaults)" for name, flags in variants}
    trained = {name: json.loads((run / "summary.json").read_text()) for name, run in runs.items()}
    parts = [
        "# Style networks against optimize, on photos no network saw", "", banner, "",
        f"Written by `python benchmarks/style_quality.py {' '.join(sys.argv[1:])}`.", "",
        f"Painting {args.style.name}; networks trained {args.minutes:g} minutes on {args.content_dir.name} "
        f"(`cnnlab stylize train --minutes {args.minutes:g}`, whole process); pictures at {args.size} px (longest "
        f"side), networks run as `stylize apply` runs them ({precision}); optimize: L-BFGS, {args.iterations} "
        f"iterations, its default weights. Scored with efficientnet_lite0's relative terms (cnnlab.style.quality).",
        "", table(["network", "flags", "steps", "precision"],
                  [[n, settings[n], trained[n]["steps"], trained[n].get("precision", "")] for n in runs]), "",
        "Goals: style loss at most 1.5x optimize's at equal or lower content loss; at most 0.05 % outlier colours "
        "on every photo.", "",
        table(["method", "style loss / optimize's (median)", "(worst)", "content loss / optimize's (median)",
               "outlier colours, worst photo (%)", "goals met"], summary), "",
        "Per photo:", "",
        table(["photo", "method", "style loss", "/ optimize's", "content loss", "outlier colours (%)",
               "of them, raw output out of [0, 1] (%)"], rows), "",
        f"Pictures: {picture_file.name}.", ""]
    for a, b in ratio_pairs:
        parts += [f"## {a}'s style loss over {b}'s", "", ratio_table(scores, args.photos, a, b), ""]
    if args.speed:
        from style_speed import speed_table
        parts += ["## Speed", "", "The networks' forward pass (benchmarks/style_speed.py's measure):", "",
                  speed_table({n: net.arguments() for n, net in networks.items()}, repeats=5)[0], ""]
    if args.content_weights:
        from style_content_weights import content_weight_table
        parts += ["## The course's content weights", "",
                  content_weight_table([DATA / "images" / "photos" / p for p in args.photos[:2]], [args.style],
                                       256, 200)[0], ""]
    text = "\n".join(parts)
    save_result(args.name, text)
    print(text)


if __name__ == "__main__":
    main()
