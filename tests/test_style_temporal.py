"""The video blend of `stylize apply` (style/temporal.py): it steadies what stands still, leaves what moves and
what was cut to the network, and `apply`/`stylize_video` use it by default for video only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab.errors import UserError
from cnnlab.style.apply import VIDEO_SETTINGS, stylize_video
from cnnlab.style.flicker import warping_error
from cnnlab.style.temporal import TemporalBlend
from test_style_network import _frames, _make_video

H, W, FRAMES = 96, 128, 12


def _texture(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """A smooth random colour texture with strong gradients everywhere (what optical flow can follow)."""
    import cv2

    coarse = np.random.default_rng(seed).uniform(0, 255, (h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
    return cv2.resize(coarse, (w + 16, h + 16), interpolation=cv2.INTER_CUBIC)[8:8 + h, 8:8 + w].clip(0, 255)


def _blend_all(strength: float, inputs: np.ndarray, styled: np.ndarray) -> np.ndarray:
    blend = TemporalBlend(strength)
    return np.stack([blend(x, y) for x, y in zip(inputs, styled)])


def _still_scene():
    """A tripod shot: one scene with sensor noise in each frame, and a stand-in network that paints it with
    its own new noise every frame (the flicker per-frame networks show on noise)."""
    rng = np.random.default_rng(1)
    scene, painting = _texture(0), _texture(7)
    inputs = np.stack([scene + rng.normal(0, 2, scene.shape) for _ in range(FRAMES)]).clip(0, 255).astype(np.uint8)
    styled = np.stack([painting + rng.normal(0, 12, scene.shape) for _ in range(FRAMES)]).clip(0, 255)
    return inputs, styled.astype(np.uint8), painting


def test_a_still_scene_flickers_less_and_keeps_its_colours():
    inputs, styled, painting = _still_scene()
    steady = _blend_all(0.6, inputs, styled)
    before, after = warping_error(inputs, styled), warping_error(inputs, steady)
    # a recursive average: (1 - 0.6) / sqrt(1.6) = 0.32 of the change in theory; 0.5 leaves room for the flow
    assert after < 0.5 * before, (before, after)
    assert abs(steady[-1].astype(float).mean() - painting.mean()) < 1.0  # no drift of the colours
    np.testing.assert_array_equal(_blend_all(0.0, inputs, styled), styled)  # 0: as the network painted


def test_what_moves_is_left_to_the_network():
    """A pan of 6 px a frame, painted afresh each frame: blending it would average two different paintings of
    each place (its brush texture washes out), so the frames must stay as the network painted them."""
    wide = _texture(3, H, W + 6 * FRAMES)
    inputs = np.stack([wide[:, 6 * t:6 * t + W] for t in range(FRAMES)]).astype(np.uint8)
    styled = np.stack([_texture(100 + t) for t in range(FRAMES)]).astype(np.uint8)
    out = _blend_all(0.6, inputs, styled)
    changed = np.abs(out.astype(int) - styled.astype(int)).max(-1) > 1
    assert changed.mean() < 0.02, changed.mean()


def test_a_cut_starts_afresh():
    inputs, styled, _ = _still_scene()
    inputs[6:] = _texture(42).astype(np.uint8)  # another scene from frame 6 on
    out = _blend_all(0.6, inputs, styled)
    changed = np.abs(out[6].astype(int) - styled[6].astype(int)).max(-1) > 1
    assert changed.mean() < 0.01, changed.mean()  # no ghost of the scene before the cut
    assert np.abs(out[8].astype(int) - styled[8].astype(int)).max() > 5  # and the new scene is steadied again


@pytest.mark.parametrize("strength", [-0.1, 1.0, 1.5])
def test_a_strength_outside_0_to_1_is_refused(strength):
    with pytest.raises(UserError, match="--temporal-blend"):
        TemporalBlend(strength)


class NoisyPainter:
    """A stand-in network for stylize_video: a fixed colour plus new noise in every frame."""

    def __init__(self):
        self.generator = torch.Generator().manual_seed(0)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(frames.shape, generator=self.generator) * 12
        return (frames.float() * 0 + 128 + noise).clamp(0, 255).round().to(torch.uint8)


def test_video_is_steadied_by_default_and_0_turns_it_off(tmp_path):
    clip = tmp_path / "still.mp4"
    _make_video(clip, frames=12, size=(64, 48), audio=False)
    inputs = _frames(clip)
    assert 0 < VIDEO_SETTINGS["temporal_blend"] < 1
    errors = {}
    for blend in (None, 0.0):
        out = tmp_path / f"out-{blend}.mp4"
        info = stylize_video(NoisyPainter(), clip, out, temporal_blend=blend)
        assert info["temporal_blend"] == (VIDEO_SETTINGS["temporal_blend"] if blend is None else blend)
        assert info["frames"] == 12
        errors[blend] = warping_error(inputs.permute(0, 2, 3, 1).numpy(), _frames(out).permute(0, 2, 3, 1).numpy())
    assert errors[None] < 0.7 * errors[0.0], errors


def test_the_cli_refuses_a_blend_for_an_image(tmp_path):
    from cnnlab.cli import main
    from cnnlab.style.apply import apply

    photo = tmp_path / "p.png"
    photo.write_bytes(b"")  # never read: the flag is checked first
    with pytest.raises(UserError, match="--temporal-blend steadies video"):
        apply(tmp_path / "model", photo, tmp_path / "o.png", temporal_blend=0.5)
    assert main(["stylize", "apply", "--model", str(tmp_path / "m"), "--input", str(photo), "--out",
                 str(tmp_path / "o.png"), "--temporal-blend", "0.5"]) == 2
