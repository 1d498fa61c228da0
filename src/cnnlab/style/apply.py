"""Applying a trained style network to images, folders of images and video files.

Video goes through PyAV (FFmpeg's libraries, bundled in its wheels): frames are decoded, stylized in batches
and encoded at the same size and frame rate (H.264 in .mp4/.mkv/.mov, else the container's default codec);
an audio stream is copied packet for packet, untouched. Output files are written under a temporary name and
renamed when complete, so an interrupted run never leaves half a video or image behind.

The inference path is the one benchmarks/style.py measured fastest on CPUs: channels_last memory format and
the precision rule of engine/device.py (bf16 only where the hardware computes it natively), under
torch.inference_mode. bf16 runs as bf16 weights and activations rather than autocast: autocast keeps reflection
padding, up-sampling and instance norm in fp32, so every layer converted its activations twice; on a native-bf16
CPU the network runs 1.1-1.8x faster without those copies (benchmarks/style_speed.py measures both paths), its
output within bf16's rounding of fp32's, as autocast's was (tests/test_style_slim.py).
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..data.images import IMAGE_SUFFIXES, read_image, save_png, to_uint8
from ..errors import UserError

# Output codec per container; input may be anything FFmpeg reads with one of these suffixes.
VIDEO_CODECS = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".m4v": "libx264", ".webm": "libvpx-vp9",
                ".avi": "mpeg4", ".mpg": "mpeg2video", ".mpeg": "mpeg2video"}
VIDEO_SUFFIXES = set(VIDEO_CODECS)
# The video pipeline's defaults, the fastest settings benchmarks/style_apply.py measured (2 cores, 320x240):
# one frame a batch, because a batch of 8 frames' activations outgrows the caches (the network alone ran
# batches of 8 at 0.60-0.84x the frame rate of single frames); one decoder and one encoder thread, because FFmpeg's automatic threads compete with
# PyTorch's for the same cores (and x264's frame threads cost compression); x264's veryfast preset at its
# default CRF 23 (about 8 % smaller files than medium, 0.3 dB further from the network's output).
# temporal_blend: the previous output's share where the scene stands still (style/temporal.py): on a still, noisy
# clip 0.6 cut the warping error of the frames apply encodes to 0.51x at 1.01x their style loss
# (benchmarks/results/style-flicker-blend-native-bf16.md).
VIDEO_SETTINGS = {"batch": 1, "codec_threads": 1, "preset": "veryfast", "temporal_blend": 0.6}
ACCELERATOR_BATCH = 8  # frames per batch on a GPU: as before (measured on CPUs only; a GPU gains from batches)


class Stylizer:
    """A style network ready for inference: images [B, 3, H, W] uint8 -> uint8, in batches."""

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str, channels_last: bool = True):
        self.device, self.precision, self.channels_last = device, precision, channels_last
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32  # see the module docstring
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        # a copy: Module.to converts in place, and the caller's network must stay as it was (fp32, its device)
        self.model = copy.deepcopy(model).eval().to(device, dtype=self.dtype, memory_format=fmt)

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        x = (frames.to(self.device, torch.float32) / 255).to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = self.model(x).float()
        return y.clamp_(0, 1).mul_(255).round_().to(torch.uint8).cpu()


def _temporary_beside(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


def stylize_image(stylizer: Stylizer, source: Path, target: Path) -> Path:
    image = read_image(source)
    out = stylizer(image.unsqueeze(0))[0]
    return save_png(out, target)


def _even(frame: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] with odd sides extended by repeating the last row / column (yuv420p needs even sides)."""
    if frame.shape[1] % 2:
        frame = np.concatenate([frame, frame[:, -1:]], 1)
    if frame.shape[0] % 2:
        frame = np.concatenate([frame, frame[-1:]], 0)
    return frame


def stylize_video(stylizer: Stylizer, source: Path, target: Path, batch: int | None = None,
                  progress: Callable[[int, float], None] | None = None, *, codec_threads: int | None = None,
                  preset: str | None = None, temporal_blend: float | None = None) -> dict:
    """Every frame of `source` stylized into `target`: same frame count, frame rate and timestamps (so the copied
    audio stays in sync), same size (odd sides gain one repeated row or column: the codec needs even sides).
    batch, codec_threads (decoder's and encoder's; 0: FFmpeg's automatic count), preset (x264's; other
    encoders ignore it) and temporal_blend (0: each frame as the network paints it) default to VIDEO_SETTINGS
    (batch: ACCELERATOR_BATCH off the CPU)."""
    import av

    from .temporal import TemporalBlend

    if batch is None:
        on_cpu = getattr(stylizer, "device", torch.device("cpu")).type == "cpu"
        batch = VIDEO_SETTINGS["batch"] if on_cpu else ACCELERATOR_BATCH
    codec_threads = VIDEO_SETTINGS["codec_threads"] if codec_threads is None else codec_threads
    preset = VIDEO_SETTINGS["preset"] if preset is None else preset
    temporal_blend = VIDEO_SETTINGS["temporal_blend"] if temporal_blend is None else temporal_blend
    blend = TemporalBlend(temporal_blend)
    try:
        src = av.open(str(source))
    except (av.error.FFmpegError, OSError) as exc:
        raise UserError(f"cannot read video {source} ({exc}); is it a video file?") from None
    with src:
        if not src.streams.video:
            raise UserError(f"{source} has no video stream; pass a video file, an image or a folder of images")
        video = src.streams.video[0]
        video.codec_context.thread_count = codec_threads
        audio = src.streams.audio[0] if src.streams.audio else None
        rate = video.average_rate or video.guessed_rate or 25
        width, height = video.codec_context.width, video.codec_context.height
        tmp = _temporary_beside(target)
        frames_done, start = 0, time.perf_counter()
        try:
            with av.open(str(tmp), "w", format=_container_format(target)) as dst:
                out_video = dst.add_stream(VIDEO_CODECS[target.suffix.lower()], rate=rate)
                out_video.width, out_video.height = width + width % 2, height + height % 2
                out_video.pix_fmt = "yuv420p"
                out_video.codec_context.thread_count = codec_threads
                if out_video.codec_context.name == "libx264":
                    out_video.codec_context.options = {"preset": preset}
                out_audio = dst.add_stream_from_template(audio) if audio is not None else None
                pending: list[tuple[torch.Tensor, int | None, object]] = []

                def flush() -> None:
                    nonlocal frames_done
                    if not pending:
                        return
                    styled = stylizer(torch.stack([f for f, _, _ in pending]))
                    for frame, (pixels, pts, time_base) in zip(styled, pending):
                        kept = blend(pixels.permute(1, 2, 0).numpy(), frame.permute(1, 2, 0).numpy())
                        vf = av.VideoFrame.from_ndarray(_even(kept), format="rgb24")
                        if pts is not None:  # the source's timestamps: variable frame rates and offsets survive
                            vf.pts, vf.time_base = pts, time_base
                        for packet in out_video.encode(vf):
                            dst.mux(packet)
                    frames_done += len(pending)
                    pending.clear()
                    if progress:
                        progress(frames_done, frames_done / max(time.perf_counter() - start, 1e-9))

                streams = [video] + ([audio] if audio is not None else [])
                for packet in src.demux(*streams):
                    if audio is not None and packet.stream is audio:
                        if packet.dts is None:
                            continue
                        packet.stream = out_audio
                        dst.mux(packet)
                        continue
                    for frame in packet.decode():
                        pixels = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
                        pending.append((pixels, frame.pts, frame.time_base))
                        if len(pending) == batch:
                            flush()
                flush()
                for packet in out_video.encode():
                    dst.mux(packet)
            os.replace(tmp, target)
        except av.error.FFmpegError as exc:
            tmp.unlink(missing_ok=True)
            hint = " (its audio codec may not fit that container: try .mkv)" if audio is not None else ""
            raise UserError(f"cannot convert video {source} into {target}: {exc}{hint}") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    seconds = time.perf_counter() - start
    return {"input": str(source), "output": str(target), "frames": frames_done, "seconds": seconds,
            "frames_per_second": frames_done / max(seconds, 1e-9), "width": width, "height": height,
            "frame_rate": float(rate), "audio": audio is not None, "temporal_blend": temporal_blend}


def _container_format(target: Path) -> str | None:
    return {".mkv": "matroska", ".m4v": "mp4"}.get(target.suffix.lower())


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def apply(model_path: str | Path, inputs: str | Path, out: str | Path, *, device: str = "auto",
          threads: int | None = None, precision: str = "auto", batch: int | None = None, progress: bool = True,
          temporal_blend: float | None = None) -> dict:
    """Stylize an image, a folder of images or a video with a trained style network (see the module). Every
    input is checked before anything is written: an existing file is never overwritten by its own output.
    temporal_blend (video only; None: VIDEO_SETTINGS') steadies what stands still (style/temporal.py)."""
    from ..engine.device import configure_threads, resolve_execution, select_device
    from ..runs import RunDir
    from .temporal import check_strength
    from .train import load_network

    source, target = Path(inputs), Path(out)
    if not source.exists():
        raise UserError(f"--input {source} does not exist; pass an image, a folder of images or a video file")
    if batch is not None and batch < 1:
        raise UserError(f"--batch-size must be 1 or more, got {batch}")
    if temporal_blend is not None:
        if not is_video(source):
            raise UserError(f"--temporal-blend steadies video frames; --input {source} is not a video file")
        check_strength(temporal_blend)  # before anything is written
    files: list[Path] = []
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"folder {source} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        stems = [f.stem for f in files]
        clash = next((stem for stem in stems if stems.count(stem) > 1), None)
        if clash is not None:
            raise UserError(f"folder {source} has several images named {clash}.* and each output is <name>.png; "
                            f"rename one")
        if target.resolve() == source.resolve():
            raise UserError("--out must be another folder than --input: the outputs would replace the photos")
    elif is_video(source):
        if target.suffix.lower() not in VIDEO_CODECS:
            raise UserError(f"--out {target} must be a video file name ending in one of "
                            f"{', '.join(sorted(VIDEO_CODECS))}")
    elif target.suffix.lower() != ".png":
        target = target / f"{source.stem}.png" if target.is_dir() or not target.suffix else target.with_suffix(".png")
    if source.is_file() and target.resolve() == source.resolve():
        raise UserError(f"--out {target} is the input itself; choose another name")
    used = configure_threads(threads)
    dev = select_device(device)
    execution = resolve_execution(dev, precision, "auto")
    model, meta = load_network(model_path, dev)
    RunDir(target if source.is_dir() else target.parent).create()  # writable, with a one-line error if not
    stylizer = Stylizer(model, dev, execution.precision, execution.channels_last)
    start = time.perf_counter()
    if source.is_dir():
        outputs = [str(stylize_image(stylizer, f, target / f"{f.stem}.png")) for f in files]
        record = {"outputs": outputs, "images": len(outputs)}
    elif is_video(source):
        report = _frame_printer() if progress else None
        record = stylize_video(stylizer, source, target, batch=batch, progress=report, temporal_blend=temporal_blend)
    else:
        record = {"outputs": [str(stylize_image(stylizer, source, target))], "images": 1}
    return {**record, "model": str(model_path), "style": meta.get("style"), "seconds": time.perf_counter() - start,
            "precision": execution.precision, "channels_last": execution.channels_last, "threads": used,
            "cpu_class": execution.cpu_class, "device": str(dev)}


def _frame_printer() -> Callable[[int, float], None]:
    """A tqdm bar of frames with frames/s."""
    from tqdm.auto import tqdm

    bar = tqdm(unit="frame", desc="stylizing", leave=True)

    def report(done: int, rate: float) -> None:
        bar.update(done - bar.n)
        bar.set_postfix(fps=f"{rate:.1f}", refresh=False)

    return report


__all__ = ["Stylizer", "apply", "stylize_image", "stylize_video", "to_uint8"]
