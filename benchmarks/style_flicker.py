"""Flicker of fast style networks on two made clips: the temporal warping error of each (style/flicker.py).

    python benchmarks/style_flicker.py --model runs/style-plain --model runs/style-stable [--out runs/bench-flicker]

1. Two test clips from shared photos (named here before anything was measured, never tuned on), 320x240,
   48 frames at 24 fps, written with PyAV as H.264 at CRF 18 (near-transparent: what the network sees is the
   clip, not the codec):
   - PAN: a 320x240 window sliding 6 px per frame across china.jpg (640x427): motion, the flow's job.
   - STILL: coffee.png resized to 360x240 and centre-cropped to 320x240, every frame with its own Gaussian
     noise (std 2/255) and then a JPEG round trip at quality 75: a camera on a tripod (sensor noise and
     compression, nothing moves), the case where any change of the output is flicker.
2. For each --model (a style training run; repeatable; the first is the baseline the others are compared with):
   `cnnlab stylize apply --model M --input CLIP --out OUT.mp4` as its own process, as a user runs it; then the
   warping error of the stylized clip it wrote ("mp4"), and of the network's own output on the same decoded
   frames before any video encoding ("raw": the H.264 encoder of `apply` can hide small flicker in its skipped
   blocks, or add its own).
3. The input clip's own warping error (no network): the floor of the measure on that clip (flow errors, codec).
4. Each network's content and style loss on three shared photos it never trained on (resized to its training
   size, longest side), with its own loss network and painting (its style.json), so that warping errors are
   compared at a known style strength: the issue's goal is half the baseline's warping error at equal style loss.

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
WIDTH, HEIGHT, FRAMES, FPS, PAN_STEP = 320, 240, 48, 24, 6


def photo(name: str):
    from PIL import Image

    return Image.open(DATA / "images" / "photos" / name).convert("RGB")


def pan_frames() -> np.ndarray:
    image = np.asarray(photo(PAN_PHOTO))
    top = (image.shape[0] - HEIGHT) // 2
    assert (FRAMES - 1) * PAN_STEP + WIDTH <= image.shape[1], "the pan runs off the photo"
    return np.stack([image[top:top + HEIGHT, t * PAN_STEP:t * PAN_STEP + WIDTH] for t in range(FRAMES)])


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


def apply_process(model: Path, clip: Path, out: Path) -> float:
    """`cnnlab stylize apply` as its own process; the frames/s it prints."""
    cmd = [sys.executable, "-m", "cnnlab", "stylize", "apply", "--model", str(model), "--input", str(clip),
           "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cnnlab_env())
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    found = re.search(r"\(([\d.]+) frames/s\)", proc.stdout)
    return float(found.group(1)) if found else float("nan")


def raw_output(model, frames: np.ndarray) -> np.ndarray:
    """The network's own uint8 output for decoded frames, on the path `apply` takes (its precision rule)."""
    import torch

    from cnnlab.engine.device import resolve_execution
    from cnnlab.style.apply import Stylizer

    device = torch.device("cpu")
    execution = resolve_execution(device, "auto", "auto")
    stylizer = Stylizer(model, device, execution.precision, execution.channels_last)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    return torch.cat([stylizer(x[i:i + 8]) for i in range(0, len(x), 8)]).permute(0, 2, 3, 1).numpy()


def losses_on_photos(run: Path, model) -> dict[str, float]:
    """Mean content and style loss (unweighted, relative terms as in training) of the network's outputs."""
    import torch

    from cnnlab.data.images import read_image
    from cnnlab.style import lossnet
    from cnnlab.style.optimize import StyleObjective, resize_longest

    s = json.loads((run / "style.json").read_text())
    net = lossnet.build(s["loss_net"], s.get("loss_net_weights"))
    objective = StyleObjective(net, [resize_longest(read_image(s["style"]), s["style_size"])], [1.0],
                               s["content_weight"], s["style_weight"], s["tv_weight"])
    totals = {"content_loss": 0.0, "style_loss": 0.0}
    with torch.no_grad():
        for name in LOSS_PHOTOS:
            x = resize_longest(read_image(DATA / "images" / "photos" / name), s["image_size"])
            terms = objective(model(x).clamp(0, 1), objective.content_targets(x))
            for key in totals:
                totals[key] += float(terms[key]) / len(LOSS_PHOTOS)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append", required=True,
                        help="a style training run directory (repeat; the first is the baseline)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-style-flicker")
    parser.add_argument("--name", default="style-flicker",
                        help="results file: benchmarks/results/<name>-<CPU class>.md")
    args = parser.parse_args()
    import torch

    from cnnlab.style import load_network
    from cnnlab.style.flicker import warping_error

    torch.set_num_threads(min(2, torch.get_num_threads()))
    banner = cpu_banner()
    print(banner, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    clips = {}
    for name, make in (("pan", pan_frames), ("still", still_frames)):
        path = write_clip(args.out / f"{name}.mp4", make())
        clips[name] = (path, read_clip(path))
    rows = [["input clip (no network): the measure's floor", "", "", "",
             *[f"{warping_error(frames, frames):.2f}" for _, frames in clips.values()] * 2, "", ""]]
    base: dict[str, float] = {}
    for i, run in enumerate(args.model):
        model, _ = load_network(run)
        settings = json.loads((run / "style.json").read_text())
        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
        values, speeds = {}, []
        for name, (path, frames) in clips.items():
            target = args.out / f"{i}-{run.name}-{name}.mp4"
            speeds.append(apply_process(run, path, target))
            values[f"mp4 {name}"] = warping_error(frames, read_clip(target))
            values[f"raw {name}"] = warping_error(frames, raw_output(model, frames))
        values.update(losses_on_photos(run, model))
        base = base or values
        print(f"  {run}: {values}", flush=True)

        def cell(key: str) -> str:
            return f"{values[key]:.2f}" + (f" ({values[key] / base[key]:.2f}x)" if i else "")

        rows.append([f"{run.name}", f"{settings.get('stability_weight', 0.0):g}",
                     f"{summary.get('steps', '?')} steps, {summary.get('train_seconds', float('nan')) / 60:.0f} min",
                     f"w{settings['width']}, {settings['residual_blocks']} blocks, {settings['image_size']} px",
                     *[cell(f"{kind} {clip}") for kind in ("mp4", "raw") for clip in clips],
                     cell("style_loss"), cell("content_loss")])
        print(f"  apply: {', '.join(f'{s:.1f}' for s in speeds)} frames/s", flush=True)
    text = "\n".join([
        "# Flicker of fast style networks: temporal warping error", "", banner, "",
        f"Written by `python benchmarks/style_flicker.py {' '.join(sys.argv[1:])}`.", "",
        f"Clips ({WIDTH}x{HEIGHT}, {FRAMES} frames, H.264 CRF 18): pan = a window sliding {PAN_STEP} px per frame "
        f"across {PAN_PHOTO}; still = {STILL_PHOTO} with per-frame Gaussian noise (std 2/255) and JPEG quality 75. "
        f"Warping error: mean absolute difference (0-255) between each output frame and the previous one warped "
        f"along the input's Farneback flow, over forward-backward-consistent pixels (cnnlab/style/flicker.py); "
        f"'mp4' measures the clip `stylize apply` wrote, 'raw' the network's output before video encoding. In "
        f"brackets: the ratio to the first network's. Content and style loss: mean over {', '.join(LOSS_PHOTOS)} at "
        f"the network's training size, each network with its own loss network and painting (unweighted terms).", "",
        table(["network", "stability weight", "training", "size", "warping error pan (mp4)",
               "warping error still (mp4)", "pan (raw)", "still (raw)", "style loss", "content loss"], rows), ""])
    save_result(args.name, text)
    print(text)


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"{(time.perf_counter() - start) / 60:.1f} min")
