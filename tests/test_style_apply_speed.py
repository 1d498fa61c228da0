"""The video pipeline's speed settings (style/apply.py VIDEO_SETTINGS, measured by benchmarks/style_apply.py) are
the ones applied: frames per batch, one codec thread, x264's preset; and --batch-size still overrides them.
x264 writes the settings it encoded with into the stream (an SEI message), which is what these tests read."""

from __future__ import annotations

import re

import pytest
import torch

from cnnlab.style.apply import VIDEO_SETTINGS, stylize_video
from test_style_network import _make_video, _probe


class Recorder:
    """A stand-in network: returns the frames unchanged and records each batch's size."""

    def __init__(self):
        self.batches: list[int] = []

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        self.batches.append(len(frames))
        return frames


def _x264_options(path) -> dict[str, str]:
    text = path.read_bytes()
    found = re.search(rb"options: ([ -~]+)", text)
    assert found, "no x264 settings in the stream"
    return dict(item.split("=", 1) for item in found.group(1).decode().split() if "=" in item)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    _make_video(path, frames=10)
    return path


def test_defaults_are_batch_1_one_codec_thread_and_veryfast(clip, tmp_path):
    assert VIDEO_SETTINGS == {"batch": 1, "codec_threads": 1, "preset": "veryfast", "temporal_blend": 0.6}
    recorder = Recorder()
    out = tmp_path / "out.mp4"
    info = stylize_video(recorder, clip, out)
    assert recorder.batches == [1] * 10 and info["frames"] == 10
    assert _probe(out) == _probe(clip)
    options = _x264_options(out)
    assert options["threads"] == "1"
    # veryfast: one reference frame and subpixel refinement 2 (medium: 3 and 7); the quality target is unchanged
    assert (options["ref"], options["subme"], options["crf"]) == ("1", "2", "23.0")


def test_explicit_settings_override_the_defaults(clip, tmp_path):
    recorder = Recorder()
    out = tmp_path / "out.mp4"
    stylize_video(recorder, clip, out, batch=4, codec_threads=0, preset="medium")
    assert recorder.batches == [4, 4, 2]
    options = _x264_options(out)
    assert (options["ref"], options["subme"], options["crf"]) == ("3", "7", "23.0")


def test_cli_batch_size_defaults_to_apply_and_still_overrides(monkeypatch, tmp_path):
    from cnnlab import style
    from cnnlab.cli import main

    seen = []

    def fake_apply(model, inputs, out, **kwargs):
        seen.append(kwargs["batch"])
        return {"images": 1, "seconds": 0.0, "outputs": [str(out)]}

    monkeypatch.setattr(style, "apply", fake_apply)
    base = ["stylize", "apply", "--model", "m", "--input", "i.png", "--out", str(tmp_path / "o.png")]
    assert main(base) == 0 and main([*base, "--batch-size", "3"]) == 0
    assert seen == [None, 3]


def test_a_gpu_stylizer_keeps_batches_of_8(clip, tmp_path):
    from cnnlab.style.apply import ACCELERATOR_BATCH

    recorder = Recorder()
    recorder.device = torch.device("cuda")  # only read to choose the batch: the recorder computes nothing
    stylize_video(recorder, clip, tmp_path / "out.mp4")
    assert ACCELERATOR_BATCH == 8 and recorder.batches == [8, 2]
