"""Flicker of style networks: the stability term in training (a network trained with it changes its output less
when noise is added to the photo, and a run with it resumes to the same network), and the warping error that
measures flicker on a clip (style/flicker.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import style
from cnnlab.errors import UserError
from cnnlab.style.flicker import warping_error
from conftest import SHARED_DATA

STYLES, PHOTOS = SHARED_DATA / "images" / "styles", SHARED_DATA / "images" / "photos"
SIZE = 48


def _photos(folder, n: int, seed: int):
    """n smooth random 'photos' (blobs of colour and blocky texture) as PNG files in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    up = torch.nn.functional.interpolate
    for i in range(n):
        image = up(torch.rand(1, 3, 6, 6, generator=g), size=(SIZE, SIZE), mode="bicubic", align_corners=False)
        image = image + 0.15 * up(torch.rand(1, 3, SIZE // 4, SIZE // 4, generator=g), size=(SIZE, SIZE))
        pixels = (image[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / f"photo{i:02d}.png")
    return folder


def _settings(content_dir, **kw) -> style.StyleTrainSettings:
    base = dict(style=str(STYLES / "starry_night.jpg"), content_dir=str(content_dir), image_size=SIZE,
                style_size=SIZE, batch_size=4, iterations=40, width=4, residual_blocks=1,
                loss_net="efficientnet_lite0", preview_images=1, lr=3e-3, precision="fp32")
    return style.StyleTrainSettings(**{**base, **kw})


def _output_change(run, photos: torch.Tensor) -> float:
    """Mean absolute change of the network's output (0-1 scale) when noise of std 0.02 is added to the photos."""
    model, _ = style.load_network(run)
    noise = 0.02 * torch.randn(photos.shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return float((model(photos) - model((photos + noise).clamp(0, 1))).abs().mean())


def test_the_stability_term_steadies_the_output_under_input_noise_and_resumes_exactly(tmp_path):
    from cnnlab.engine import Callback
    from cnnlab.engine.run import Interrupted

    train = _photos(tmp_path / "train", 32, seed=0)
    held = torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1)
                        for p in sorted(_photos(tmp_path / "held", 8, seed=1).iterdir())]).float() / 255
    cache = str(tmp_path / "cache")
    plain = style.train(_settings(train), tmp_path / "plain", cache_dir=cache, progress=False)
    steady = style.train(_settings(train, stability_weight=3000), tmp_path / "steady", cache_dir=cache, progress=False)
    assert steady["settings"]["stability_weight"] == 3000 and plain["steps"] == steady["steps"] == 40
    # measured: 0.0084 without, 0.0040 with (fp32, native-bf16 CPU); the term off would give equal networks
    assert _output_change(tmp_path / "steady", held) < 0.7 * _output_change(tmp_path / "plain", held)

    class StopAfterFirstEpoch(Callback):
        def on_epoch_end(self, trainer, row):
            if row["epoch"] == 1:
                raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        style.train(_settings(train, stability_weight=3000), tmp_path / "cut", cache_dir=cache, progress=False,
                    callbacks=[StopAfterFirstEpoch()])
    resumed = style.train(style.StyleTrainSettings(), tmp_path / "cut", resume=True, cache_dir=cache, progress=False)
    assert resumed["resumed"] and resumed["final_loss"] == steady["final_loss"]  # the same noise, step for step
    a, _ = style.load_network(tmp_path / "steady")
    b, _ = style.load_network(tmp_path / "cut")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_stability_settings_are_checked_and_are_flags():
    from cnnlab import cli
    from cnnlab.cli._common import settings_from

    for bad in ({"stability_weight": -1.0}, {"stability_noise": float("nan")}, {"stability_noise": 2.0}):
        with pytest.raises(UserError, match="--stability-"):
            style.StyleTrainSettings(**bad).check()
    args = cli.parse_args(["stylize", "train", "--stability-weight", "5", "--stability-noise", "0.01"])
    s = settings_from(args, style.StyleTrainSettings)
    assert (s.stability_weight, s.stability_noise) == (5.0, 0.01)


# ------------------------------------------------------------------------------------------ warping error

def _photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(PHOTOS / name).convert("RGB"))


def test_warping_error_is_zero_for_a_steady_output_and_large_for_flicker():
    still = np.stack([_photo("china.jpg")[:120, :160]] * 6)
    styled = np.stack([_photo("coffee.png")[:120, :160]] * 6)  # any output; the same in every frame
    assert warping_error(still, styled) < 0.05
    rng = np.random.default_rng(0)
    flicker = np.clip(styled + rng.normal(0, 8, styled.shape), 0, 255).astype(np.uint8)  # per-frame noise
    assert warping_error(still, flicker) > 5  # |N(0, 8) - N(0, 8)| is 9 on average (clipping lowers it)
    assert warping_error(torch.from_numpy(still), torch.from_numpy(flicker)) == warping_error(still, flicker)


def test_warping_error_follows_motion():
    """A pan whose output pans identically is consistent (the flow carries each pixel to its new place); an
    output that stays put while the input pans is not. The output is aligned with the input, as a stylization
    is (inverted colours, channels swapped): where the photo is flat the flow is uncertain, and so is a measure
    of an output with detail there."""
    photo = _photo("china.jpg")
    painting = 255 - photo[..., ::-1]
    pan = np.stack([photo[100:220, 4 * t:4 * t + 160] for t in range(6)])
    panned_output = np.stack([painting[100:220, 4 * t:4 * t + 160] for t in range(6)])
    details = warping_error(pan, panned_output, details=True)
    assert details["warping_error"] < 1.5 and details["reliable"] > 0.8 and details["pairs"] == 5
    frozen_output = np.stack([panned_output[0]] * 6)
    assert warping_error(pan, frozen_output) > 4 * details["warping_error"]


def test_warping_error_refuses_what_is_not_a_clip():
    clip = np.zeros((3, 32, 32, 3), np.uint8)
    for inputs, outputs, message in [(clip, clip[:2], "differ in shape"), (clip[:1], clip[:1], "2 frames or more"),
                                     (clip.astype(np.float32), clip, "uint8 frames")]:
        with pytest.raises(UserError, match=message):
            warping_error(inputs, outputs)
