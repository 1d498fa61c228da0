"""Flicker of fast style networks on three made clips: the temporal warping error of each (style/flicker.py).

    python benchmarks/style_flicker.py --model runs/style-plain --model runs/style-stable [--blend 0 --blend 0.6]

1. Three test clips from shared photos (named here before anything was measured, never tuned on), 320x240,
   48 frames at 24 fps, written with PyAV as H.264 at CRF 18 (near-transparent: what the network sees is the
   clip, not the codec):
   - PAN: a 320x240 window sliding 6 px per frame across china.jpg (640x427): motion, the flow's job.
   - STILL: coffee.png resized to 360x240 and centre-cropped to 320x240, every frame with its own Gaussian
     noise (std 2/255) and then a JPEG round trip at quality 75: a camera on a tripod (sensor noise and
     compression, nothing moves), the case where any change of the output is flicker.
   - SLOW: the window of PAN sliding 2.5 px per frame (bilinear): slow, sub-pixel motion, between the two.
     (Added with `--blend`, after the blend's settings were chosen on PAN and STILL.)
2. For each --model (a style training run; repeatable; the first is the baseline the others are compared with)
   and each --blend (`stylize apply --temporal-blend`; default: 0 and apply's default): `cnnlab stylize apply
   --model M --input CLIP --out OUT.mp4 --temporal-blend B` as its own process, as a user runs it; then the warping
   error of the stylized clip it wrote ("mp4"), and of the same frames before any video encoding ("raw": the
   network's output on the decoded frames, blended as `apply` blends them; the H.264 encoder of `apply` can hide
   small flicker in its skipped blocks, or add its own).
3. The input clip's own warping error (no network): the floor of the measure on that clip (flow errors, codec).
4. Style strength, so that warping errors are compared at a known style loss (the issue's goal: half the
   baseline's warping error at equal style loss):
   - each network's content and style loss on three shared photos it never trained on (resized to its training
     size, longest side), with its own loss network and painting (its style.json): the network alone;
   - the style loss of the raw frames themselves (frames 8, 16, ..., 40 of each clip, as blended), all rows
     scored with the FIRST network's loss network and painting (one ruler): what a blend costs the pictures.

Warping error: mean absolute difference, in pixel values of 0-255, between each output frame and the previous
one warped along the input's Farneback flow, over the pixels where that flow passes the forward-backward test.
The clips and the 'raw' figures are deterministic, so each figure is one measurement; the 'mp4' ones moved by
up to 0.02 between two runs of this script (the encoder of `apply`).
Writes benchmarks/results/style-flicker-<CPU class>.md (--name to change the stem).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _common import cnnlab_env, cpu_banner, save_result, table

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CNNLAB_DATA", ROOT.parent / "shared" / "data"))
PAN_PHOTO, STILL_PHOTO = "china.jpg", "coffee.png"
LOSS_PHOTOS = ["chelsea.png", "astronaut.png", "hot_dog.jpg"]
WIDTH, HEIGHT, FRAMES, FPS, PAN_STEP, SLOW_STEP = 320, 240, 48, 24, 6, 2.5
SCORED_FRAMES = range(8, FRAMES, 8)


def photo(name: str):
    from PIL import Image

    return Image.open(DATA / "images" / "photos" / name).convert("RGB")


def pan_frames() -> np.ndarray:
    image = np.asarray(photo(PAN_PHOTO))
    top = (image.shape[0] - HEIGHT) // 2
    assert (FRAMES - 1) * PAN_STEP + WIDTH <= image.shape[1], "the pan runs off the photo"
    return np.stack([image[top:top + HEIGHT, t * PAN_STEP:t * PAN_STEP + WIDTH] for t in range(FRAMES)])


def slow_frames() -> np.ndarray:
    import cv2

    image = np.asarray(photo(PAN_PHOTO))
    top = (image.shape[0] - HEIGHT) // 2
    moves = [np.float32([[1, 0, -t * SLOW_STEP], [0, 1, -top]]) for t in range(FRAMES)]
    return np.stack([cv2.warpAffine(image, m, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR) for m in moves])


def still_frames(noise: float = 2.0, quality: int = 75) -> np.ndarray:
    from PIL import Image

    image = photo(STILL_PHOTO)
    w = round(image.width * HEIGHT / image.height)
    image = np.asarray(image.resize((w, HEIGHT), Image.LANCZOS)).astype(np.float32)
    left = (w - WIDTH) // 2
    image = image[:, left:left + WIDTH]
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(FRAMES):
        noisy = np.clip(image + rng.normal(0, noise, image.shape), 0, 255).round().astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noisy).save(buffer, format="JPEG", quality=quality)
        frames.append(np.asarray(Image.open(buffer).convert("RGB")))
    return np.stack(frames)


def write_clip(path: Path, frames: np.ndarray) -> Path:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS, options={"crf": "18"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def read_clip(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as clip:
        return np.stack([f.to_ndarray(format="rgb24") for f in clip.decode(video=0)])


def apply_process(model: Path, clip: Path, out: Path, blend: float) -> float:
    """`cnnlab stylize apply` as its own process; the frames/s it prints."""
    cmd = [sys.executable, "-m", "cnnlab", "stylize", "apply", "--model", str(model), "--input", str(clip),
           "--out", str(out), "--no-progress", "--temporal-blend", f"{blend:g}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cnnlab_env())
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    found = re.search(r"\(([\d.]+) frames/s\)", proc.stdout)
    return float(found.group(1)) if found else float("nan")


def network_output(model, frames: np.ndarray) -> np.ndarray:
    """The network's own uint8 output for decoded frames, on the path `apply` takes (its precision rule)."""
    import torch

    from cnnlab.engine.device import resolve_execution
    from cnnlab.style.apply import Stylizer

    device = torch.device("cpu")
    execution = resolve_execution(device, "auto", "auto")
    stylizer = Stylizer(model, device, execution.precision, execution.channels_last)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    return torch.cat([stylizer(x[i:i + 8]) for i in range(0, len(x), 8)]).permute(0, 2, 3, 1).numpy()


def blended(frames: np.ndarray, styled: np.ndarray, blend: float) -> np.ndarray:
    """The uint8 frames `apply` would encode: the network's output, then its temporal blend."""
    from cnnlab.style.temporal import TemporalBlend

    steady = TemporalBlend(blend)
    return np.stack([steady(frame, out) for frame, out in zip(frames, styled)])


def style_objective(run: Path):
    """The loss network, painting and weights a run trained with (its style.json)."""
    from cnnlab.data.images import read_image
    from cnnlab.style import lossnet
    from cnnlab.style.optimize import StyleObjective, resize_longest

    s = json.loads((run / "style.json").read_text())
    net = lossnet.build(s["loss_net"], s.get("loss_net_weights"))
    return StyleObjective(net, [resize_longest(read_image(s["style"]), s["style_size"])], [1.0],
                          s["content_weight"], s["style_weight"], s["tv_weight"]), s


def frames_style_loss(objective, frames: np.ndarray, outputs: np.ndarray) -> float:
    """Mean style loss of outputs[SCORED_FRAMES] (content targets: the input frames; only style is kept)."""
    import torch

    def tensor(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255

    with torch.no_grad():
        return float(np.mean([float(objective(tensor(outputs[i]), objective.content_targets(tensor(frames[i])))
                                    ["style_loss"]) for i in SCORED_FRAMES]))


def losses_on_photos(run: Path, model) -> dict[str, float]:
    """Mean content and style loss (unweighted, relative terms as in training) of the network's outputs."""
    import torch

    from cnnlab.data.images import read_image
    from cnnlab.style.optimize import resize_longest

    objective, s = style_objective(run)
    totals = {"content_loss": 0.0, "style_loss": 0.0}
    with torch.no_grad():
        for name in LOSS_PHOTOS:
            x = resize_longest(read_image(DATA / "images" / "photos" / name), s["image_size"])
            terms = objective(model(x).clamp(0, 1), objective.content_targets(x))
            for key in totals:
                totals[key] += float(terms[key]) / len(LOSS_PHOTOS)
    return totals


def main() -> None:
    from cnnlab.style.apply import VIDEO_SETTINGS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append", required=True,
                        help="a style training run directory (repeat; the first is the baseline)")
    parser.add_argument("--blend", type=float, action="append",
                        help="`stylize apply --temporal-blend` values to run each network with (repeat; "
                             f"default: 0 and apply's default, {VIDEO_SETTINGS['temporal_blend']:g})")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-style-flicker")
    parser.add_argument("--name", default="style-flicker",
                        help="results file: benchmarks/results/<name>-<CPU class>.md")
    args = parser.parse_args()
    blends = args.blend or [0.0, VIDEO_SETTINGS["temporal_blend"]]
    import torch

    from cnnlab.style import load_network
    from cnnlab.style.flicker import warping_error

    torch.set_num_threads(min(2, torch.get_num_threads()))
    banner = cpu_banner()
    print(banner, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    clips = {}
    for name, make in (("pan", pan_frames), ("still", still_frames), ("slow", slow_frames)):
        path = write_clip(args.out / f"{name}.mp4", make())
        clips[name] = (path, read_clip(path))
    ruler, _ = style_objective(args.model[0])  # the frames' style loss: one loss network and painting for all
    floor = [f"{warping_error(frames, frames):.2f}" for _, frames in clips.values()]
    rows = [["input clip (no network): the measure's floor", "", "", "", "", *floor, *floor, "", "", "", "", ""]]
    base: dict[str, float] = {}
    for i, run in enumerate(args.model):
        model, _ = load_network(run)
        settings = json.loads((run / "style.json").read_text())
        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
        photo_losses = losses_on_photos(run, model)
        styled = {name: network_output(model, frames) for name, (_, frames) in clips.items()}  # once, every blend
        for blend in blends:
            values, speeds = dict(photo_losses), []
            for name, (path, frames) in clips.items():
                target = args.out / f"{i}-{run.name}-blend{blend:g}-{name}.mp4"
                speeds.append(apply_process(run, path, target, blend))
                values[f"mp4 {name}"] = warping_error(frames, read_clip(target))
                raw = blended(frames, styled[name], blend)
                values[f"raw {name}"] = warping_error(frames, raw)
                values[f"frames {name}"] = frames_style_loss(ruler, frames, raw)
            first = not base
            base = base or values
            print(f"  {run} blend {blend:g}: {values}; apply {', '.join(f'{v:.1f}' for v in speeds)} frames/s",
                  flush=True)

            def cell(key: str, digits: int = 2) -> str:
                return f"{values[key]:.{digits}f}" + ("" if first else f" ({values[key] / base[key]:.2f}x)")

            rows.append([f"{run.name}", f"{blend:g}", f"{settings.get('stability_weight', 0.0):g}"
                         + (f", shift {settings['stability_shift']}" if settings.get("stability_shift") else ""),
                         f"{summary.get('steps', '?')} steps, "
                         f"{summary.get('train_seconds', float('nan')) / 60:.0f} min",
                         f"w{settings['width']}, {settings['residual_blocks']} blocks, {settings['image_size']} px",
                         *[cell(f"{kind} {clip}") for kind in ("mp4", "raw") for clip in clips],
                         *[cell(f"frames {clip}", 3) for clip in clips],
                         cell("style_loss", 3), cell("content_loss", 3)])
    text = "\n".join([
        "# Flicker of fast style networks: temporal warping error", "", banner, "",
        f"Written by `python benchmarks/style_flicker.py {' '.join(sys.argv[1:])}`.", "",
        f"Clips ({WIDTH}x{HEIGHT}, {FRAMES} frames, H.264 CRF 18): pan = a window sliding {PAN_STEP} px per frame "
        f"across {PAN_PHOTO}; still = {STILL_PHOTO} with per-frame Gaussian noise (std 2/255) and JPEG quality 75; "
        f"slow = the pan's window sliding {SLOW_STEP:g} px per frame. Blend: `stylize apply --temporal-blend` "
        f"(style/temporal.py). Warping error: mean absolute difference (0-255) between each output frame and the "
        f"previous one warped along the input's Farneback flow, over forward-backward-consistent pixels "
        f"(cnnlab/style/flicker.py); 'mp4' measures the clip `stylize apply` wrote, 'raw' the frames it encoded "
        f"(network, then blend). Style loss of the frames: mean over frames "
        f"{', '.join(str(i) for i in SCORED_FRAMES)} of each raw clip, every row scored with {args.model[0].name}'s "
        f"loss network and painting. Style and content loss on photos: the network alone, mean over "
        f"{', '.join(LOSS_PHOTOS)} at its training size, with its own loss network and painting (unweighted "
        f"terms). In brackets: the ratio to the first row's.", "",
        table(["network", "blend", "stability weight", "training", "size",
               *[f"warping error {clip} ({kind})" for kind in ("mp4", "raw") for clip in clips],
               *[f"style loss, {clip} frames" for clip in clips], "style loss, photos", "content loss, photos"],
              rows), ""])
    save_result(args.name, text)
    print(text)


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"{(time.perf_counter() - start) / 60:.1f} min")
