"""Fast style networks (Johnson et al.): training and resuming, and `stylize apply` on photos and videos: each
output is the network's own forward pass (video: within the codec's loss), the audio copied packet for packet."""

from __future__ import annotations

import pytest
import torch

from cnnlab import style
from cnnlab.data.images import read_image
from cnnlab.errors import UserError
from conftest import SHARED_DATA
from test_bad_input import assert_one_line_error
from test_bad_input import run as run_cli

PHOTOS, STYLES = SHARED_DATA / "images" / "photos", SHARED_DATA / "images" / "styles"
SCENES = SHARED_DATA / "scenes6"


def _settings(**kw) -> style.StyleTrainSettings:
    base = dict(style=str(STYLES / "starry_night.jpg"), content_dir=str(SCENES / "train"), image_size=64,
                style_size=64, batch_size=4, epochs=2, width=8, residual_blocks=1, limit_images=24,
                loss_net="efficientnet_lite0", preview_images=2, lr=3e-3)
    return style.StyleTrainSettings(**{**base, **kw})


def test_transform_net_keeps_any_size():
    from cnnlab.style.transformer import TransformNet

    net = TransformNet(width=8, residual_blocks=1)
    for h, w in ((64, 64), (37, 50)):
        assert net(torch.rand(2, 3, h, w)).shape == (2, 3, h, w)


def test_short_training_lowers_the_loss_and_resumes_to_the_same_network(tmp_path):
    from cnnlab.engine import Callback

    full = style.train(_settings(epochs=3), tmp_path / "full", cache_dir=str(tmp_path / "cache"), progress=False)
    assert full["final_loss"] < 0.9 * full["first_epoch_loss"]
    for name in ("best.safetensors", "checkpoint.pt", "metrics.csv", "evolution.png", "preview-epoch-1.png",
                 "summary.json", "style.json"):
        assert (tmp_path / "full" / name).is_file(), name

    class StopAfterFirstEpoch(Callback):
        def on_epoch_end(self, trainer, row):
            if row["epoch"] == 1:
                raise KeyboardInterrupt

    class CountEpochs(Callback):
        ran = 0

        def on_epoch_end(self, trainer, row):
            CountEpochs.ran += 1

    from cnnlab.engine.run import Interrupted

    # Ctrl-C is one line naming the command that resumes (the run session's message, as for classifiers)
    with pytest.raises(Interrupted, match=r"after 1 finished epochs; continue with: cnnlab stylize train --resume"):
        style.train(_settings(epochs=3), tmp_path / "cut", cache_dir=str(tmp_path / "cache"), progress=False,
                    callbacks=[StopAfterFirstEpoch()])
    resumed = style.train(style.StyleTrainSettings(), tmp_path / "cut", resume=True,
                          cache_dir=str(tmp_path / "cache"), progress=False, callbacks=[CountEpochs()])
    assert CountEpochs.ran == 2 and resumed["resumed"]  # it resumed after epoch 1, not started again
    assert resumed["final_loss"] == full["final_loss"]
    a, _ = style.load_network(tmp_path / "full")
    b, _ = style.load_network(tmp_path / "cut")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("style") / "net"
    style.train(_settings(epochs=1, limit_images=8), out, progress=False,
                cache_dir=str(tmp_path_factory.mktemp("cache")))
    return out


def _forward(trained, frames: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> the trained network's own output, in fp32, as uint8."""
    model, _ = style.load_network(trained)
    with torch.no_grad():
        return (model(frames.float() / 255).clamp(0, 1) * 255).round().to(torch.uint8)


def test_apply_is_the_networks_forward_pass_and_deterministic(trained, tmp_path):
    first = style.apply(trained, PHOTOS / "coffee.png", tmp_path / "a.png", precision="fp32", progress=False)
    second = style.apply(trained, PHOTOS / "coffee.png", tmp_path / "b.png", precision="fp32", progress=False)
    a, b = read_image(first["outputs"][0]), read_image(second["outputs"][0])
    photo = read_image(PHOTOS / "coffee.png")
    assert torch.equal(a, b) and a.shape == photo.shape
    expected = _forward(trained, photo[None])[0]
    assert (a.int() - expected.int()).abs().max() <= 1  # PNG is lossless: float rounding only
    assert (a.float() - photo.float()).abs().mean() > 10  # the network changes the photo (0-255 scale)


def _make_video(path, frames: int = 12, size=(64, 48), fps: int = 12, audio: bool = True, pix_fmt="yuv420p"):
    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = size[0], size[1], pix_fmt
        a = out.add_stream("aac", rate=16000) if audio else None
        for i in range(frames):
            image = np.zeros((size[1], size[0], 3), dtype=np.uint8)
            image[:, : (i + 1) * size[0] // frames] = (200, 80, 40)
            for packet in v.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in v.encode():
            out.mux(packet)
        if a is not None:
            samples = frames * 16000 // fps
            t = np.arange(samples) / 16000
            wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in a.encode(frame):
                out.mux(packet)
            for packet in a.encode():
                out.mux(packet)


CODEC_TOLERANCE = 10.0  # mean absolute difference per frame (0-255): H.264 at its default quality, 4:2:0, 64x48 px
# (measured: at most 6.6; a frame off by one in time is 19 or more away, an unstylized frame 100 or more)


def _probe(path):
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(video=0))
        return frames, (v.codec_context.width, v.codec_context.height), float(v.average_rate), len(c.streams.audio)


def _frames(path) -> torch.Tensor:
    import av

    with av.open(str(path)) as c:
        return torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1) for f in c.decode(video=0)])


def _audio_packets(path) -> list[tuple[int | None, bytes]]:
    import av

    with av.open(str(path)) as c:
        return [(p.pts, bytes(p)) for p in c.demux(c.streams.audio[0]) if p.size]


def test_video_round_trip_keeps_frames_size_rate_and_audio(trained, tmp_path):
    clip = tmp_path / "clip.mp4"
    _make_video(clip)
    # temporal_blend 0: each frame as the network paints it (the blend: tests/test_style_temporal.py)
    info = style.apply(trained, clip, tmp_path / "styled.mp4", batch=5, precision="fp32", progress=False,
                       temporal_blend=0.0)
    assert info["frames"] == 12 and info["audio"]
    assert _probe(tmp_path / "styled.mp4") == (12, (64, 48), 12.0, 1) == _probe(clip)
    assert not list(tmp_path.glob(".styled-*")), "no temporary file left behind"
    # each frame is the network's output for the decoded source frame, up to H.264's loss
    source, styled = _frames(clip), _frames(tmp_path / "styled.mp4")
    expected = _forward(trained, source)
    codec_error = (styled.float() - expected.float()).abs().mean(dim=(1, 2, 3))
    changed = (expected.float() - source.float()).abs().mean(dim=(1, 2, 3))
    assert codec_error.max() < CODEC_TOLERANCE, codec_error
    assert changed.min() > 4 * CODEC_TOLERANCE, changed  # so that a copy of the source frames could not pass
    # the audio is copied, never encoded again: the same packets, byte for byte
    packets = _audio_packets(clip)
    assert packets and _audio_packets(tmp_path / "styled.mp4") == packets


@pytest.mark.parametrize("case, message", [
    ("classifier", "is not a style network"),
    ("pickle", "is not a style network"),
    ("no-video-stream", "has no video stream"),
    ("bad-suffix", "must be a video file name"),
])
def test_apply_bad_input_is_one_line(trained, tmp_path, case, message, capsys, monkeypatch):
    from safetensors.torch import save_file

    model, source, out = trained, tmp_path / "clip.mp4", tmp_path / "out.mp4"
    _make_video(source, frames=3, audio=False)
    if case == "classifier":
        model = tmp_path / "classifier.safetensors"
        save_file({"w": torch.zeros(2)}, str(model), metadata={"classes": "[]"})
    elif case == "pickle":
        model = tmp_path / "evil.safetensors"
        model.write_bytes(b"\x80\x04cos\nsystem\n(S'touch pwned'\ntR.")
    elif case == "no-video-stream":
        import av
        import numpy as np

        source = tmp_path / "sound.mp4"
        with av.open(str(source), "w") as c:
            a = c.add_stream("aac", rate=16000)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in [*a.encode(frame), *a.encode()]:
                c.mux(packet)
    elif case == "bad-suffix":
        out = tmp_path / "out.txt"
    monkeypatch.chdir(tmp_path)  # where an unpickled payload would write its file
    code, _, err = run_cli(["stylize", "apply", "--model", model, "--input", source, "--out", out, "--no-progress"],
                           capsys)
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "pwned").exists()


def test_apply_refuses_to_overwrite_or_clash(trained, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes((PHOTOS / "coffee.png").read_bytes())
    (photos / "a.jpg").write_bytes((PHOTOS / "hot_dog.jpg").read_bytes())
    with pytest.raises(UserError, match="several images named a"):
        style.apply(trained, photos, tmp_path / "out", progress=False)
    (photos / "a.jpg").unlink()
    with pytest.raises(UserError, match="another folder than --input"):
        style.apply(trained, photos, photos, progress=False)
    with pytest.raises(UserError, match="the input itself"):
        style.apply(trained, photos / "a.png", photos / "a.png", progress=False)
    with pytest.raises(UserError, match="--batch-size must be 1 or more"):
        style.apply(trained, photos / "a.png", tmp_path / "o.png", batch=0, progress=False)
    tiny = tmp_path / "tiny.png"
    from cnnlab.data.images import save_png

    save_png(torch.rand(3, 8, 8), tiny)
    with pytest.raises(UserError, match="at least 16 pixels"):
        style.apply(trained, tiny, tmp_path / "t.png", progress=False)


def test_odd_video_sizes_keep_their_frames(trained, tmp_path):
    clip = tmp_path / "odd.mkv"
    _make_video(clip, frames=5, size=(65, 49), audio=False, pix_fmt="yuv444p")  # 4:4:4 allows odd sides
    style.apply(trained, clip, tmp_path / "styled.mkv", progress=False)
    frames, size, rate, audio = _probe(tmp_path / "styled.mkv")
    assert frames == 5 and size == (66, 50) and rate == 12.0 and audio == 0  # one repeated row and column
