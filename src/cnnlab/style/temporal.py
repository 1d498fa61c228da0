"""Steadier video from a per-frame style network: each stylized frame blended with the previous output frame,
moved along the input's optical flow, where that flow is trustworthy.

A network applied frame by frame paints every frame afresh, so sensor noise and compression, which change a
little of the input, change more of the output: flicker (style/flicker.py measures it). Training terms reduce
it (`stylize train --stability-weight`), but a still camera's noise is new in every frame, and no network can
tell it from detail. At apply time the previous frames are known, so the output can remember them:

    out_t = styled_t + w * (warp(out_{t-1}) - styled_t)
    w = strength * exp(-(e / TOLERANCE)^2) * exp(-(|flow| / MOTION)^2)

where warp moves the previous output along the flow from frame t to frame t-1 of the INPUT, and e is how much
the input itself disagrees with that move (|input_t - warp(input_{t-1})|, 0-255, averaged over the colours and a
5x5 window: two different scenes agree by chance at single pixels, rarely over a patch). Where the scene stands
still, the output keeps what it painted before and noise averages out (a recursive average: in theory the
frame-to-frame change falls to (1 - strength) / sqrt(1 + strength) of the network's); where the flow is wrong
(an occlusion, a cut, a light switched on) e is large, w falls to 0 and the network's own frame shows, so nothing
is smeared or left behind. It is the simplest member of the post-processing family of Lai et al. 2018
("Learning blind video temporal consistency"), without their learned network.

Only what stands still is blended (the MOTION factor). A per-frame network paints a moving region afresh in every
frame; blending it with the previous painting averages two different brush textures, and the frames' style
loss rose with the blend on a pan while a still, noisy clip hardly lost any (a trial without the factor, during
development). A network trained with `--stability-shift` steadies motion itself. What the blend gives and
costs: benchmarks/style_flicker.py (docs/benchmarks/style.md, "Video: the temporal blend").

Choices (and why):
- Flow: OpenCV's DIS (Kroeger et al. 2016), its ultrafast preset (the fast and medium presets, tried during
  development, steadied the benchmark's clips no better and took longer). The flicker measure uses another
  method, Farneback, so that the blend is not judged by the flow it was built on.
- Per pixel only OpenCV's vectorized kernels run (remap, absdiff, blur, a lookup table for the agreement factor,
  blendLinear). What the blend costs a frame: benchmarks/style_apply.py's identity-network rows.
- The previous output is kept in float: rounding it to 8 bits every frame would let small changes stick.
- OpenCV runs on one thread (a process-wide setting, made when a blend is built): its own pool's threads beside
  PyTorch's oversubscribed a 2-core machine and made the whole apply slower than the blend's own work explains.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from ._opencv import opencv

TOLERANCE = 12.0  # input disagreement (levels of 0-255) at which a pixel keeps exp(-1) of its weight
MOTION = 2.0  # pixels of flow at which a pixel keeps exp(-1) of its weight: a pan's 6 px a frame keeps none


def check_strength(strength: float) -> float:
    """strength, or a UserError when it is not a share of 0 to below 1."""
    if not 0 <= strength < 1:
        raise UserError(f"--temporal-blend must be at least 0 and below 1 (the previous frame's share), "
                        f"got {strength:g}")
    return strength


class TemporalBlend:
    """Call with each input frame and its stylized frame, in order (uint8 [H, W, 3] RGB, numpy); returns the
    frame to write. strength 0 returns the stylized frames unchanged."""

    def __init__(self, strength: float):
        self.strength = check_strength(strength)
        self._previous: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # frame t-1: grey, input, output
        self._grid: tuple[np.ndarray, np.ndarray] | None = None
        if strength:
            cv2 = self._cv2 = opencv("--temporal-blend (0 turns it off)")
            cv2.setNumThreads(1)  # OpenCV's pool beside PyTorch's threads oversubscribed the cores: slower
            self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
            # the input-agreement factor for each disagreement of 0-255, looked up instead of computed per pixel
            self._agreement = strength * np.exp(-(np.arange(256, dtype=np.float32) / TOLERANCE) ** 2)

    def __call__(self, frame: np.ndarray, styled: np.ndarray) -> np.ndarray:
        if not self.strength:
            return styled
        cv2 = self._cv2
        frame = np.ascontiguousarray(frame)
        if frame.shape != styled.shape:  # a network that changed the size: follow its frame
            frame = cv2.resize(frame, (styled.shape[1], styled.shape[0]), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        out = styled.astype(np.float32)
        if self._previous is not None and self._previous[0].shape == grey.shape:
            out = self._blend(grey, frame, out, *self._previous)
        self._previous = (grey, frame, out)
        return cv2.convertScaleAbs(out)  # rounded and saturated to uint8 (out is never negative)

    def _blend(self, grey: np.ndarray, frame: np.ndarray, styled: np.ndarray, previous_grey: np.ndarray,
               previous_frame: np.ndarray, previous_out: np.ndarray) -> np.ndarray:
        cv2 = self._cv2
        h, w = grey.shape
        if self._grid is None or self._grid[0].shape != grey.shape:
            self._grid = tuple(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)))
        flow = self._flow.calc(grey, previous_grey, None)  # grey(x) ~ previous_grey(x + flow(x))
        map_x, map_y = self._grid[0] + flow[..., 0], self._grid[1] + flow[..., 1]
        inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
        moved_out = cv2.remap(previous_out, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        moved_frame = cv2.remap(previous_frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        difference = cv2.cvtColor(cv2.absdiff(frame, moved_frame), cv2.COLOR_RGB2GRAY)  # ~ mean over colours
        weight = cv2.LUT(cv2.blur(difference, (5, 5)), self._agreement)
        weight *= cv2.exp(cv2.magnitude(flow[..., 0], flow[..., 1]) ** 2 * (-1 / MOTION ** 2))
        weight *= inside
        return cv2.blendLinear(styled, moved_out, 1 - weight, weight)
