"""Flicker of a stylized video, measured as its temporal warping error (the measure of Lai et al., ECCV 2018,
"Learning blind video temporal consistency", with Ruder et al. 2016's occlusion test).

For each pair of consecutive frames t-1, t of the INPUT clip, optical flow (OpenCV's Farneback) says where each
pixel of frame t was in frame t-1. The previous OUTPUT frame is warped along that flow to frame t; where the
flow is reliable, a temporally consistent stylization matches the warped frame, and what differs is flicker.

Choices (and why):
- The difference is the mean ABSOLUTE difference in pixel values of 0 to 255 (a figure one can picture:
  "3.1 levels per channel"), less dominated than a squared one by the few pixels where the flow is wrong.
- Only reliable pixels count: those whose backward flow (t -> t-1) lands inside frame t-1 and is undone by the
  forward flow (t-1 -> t) there, Ruder et al.'s forward-backward consistency test: |b + f(x + b)|² <=
  0.01 (|b|² + |f(x + b)|²) + 0.5. Occluded, disoccluded and newly entering pixels (a pan's new edge) have no
  match in the previous frame, and are left out instead of being counted as flicker.
- The flow comes from the input frames, never the outputs: the outputs' own flicker must not bend the flow.
- Each pair's error is the mean over its reliable pixels; the clip's error is the mean over its pairs.

OpenCV (opencv-python-headless) is imported here only when a measure is made.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from ._opencv import opencv


def _frames(frames, name: str) -> np.ndarray:
    """uint8 [T, H, W, 3] RGB as numpy (a torch tensor or a numpy array)."""
    array = frames.detach().cpu().numpy() if hasattr(frames, "detach") else np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise UserError(f"{name} must be uint8 frames shaped [T, H, W, 3] (RGB), got {array.dtype} "
                        f"{list(array.shape)}")
    return array


def _flow(cv2, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[H, W, 2] displacement d with source(x) ≈ target(x + d), from grey frames."""
    return cv2.calcOpticalFlowFarneback(source, target, None, pyr_scale=0.5, levels=3, winsize=15, iterations=3,
                                        poly_n=5, poly_sigma=1.2, flags=0)


def pair_error(cv2, inputs: tuple[np.ndarray, np.ndarray], outputs: tuple[np.ndarray, np.ndarray]
               ) -> tuple[float, float]:
    """(mean absolute difference over reliable pixels, fraction of pixels reliable) for frames t-1, t."""
    grey_prev, grey_cur = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in inputs)
    h, w = grey_cur.shape
    grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), -1)
    back = _flow(cv2, grey_cur, grey_prev)     # frame t's pixel x was at x + back(x) in frame t-1
    forward = _flow(cv2, grey_prev, grey_cur)  # frame t-1's pixel y goes to y + forward(y) in frame t
    where = grid + back
    inside = (where[..., 0] >= 0) & (where[..., 0] <= w - 1) & (where[..., 1] >= 0) & (where[..., 1] <= h - 1)
    forward_there = cv2.remap(forward, where[..., 0], where[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mismatch = ((back + forward_there) ** 2).sum(-1)
    scale = (back ** 2).sum(-1) + (forward_there ** 2).sum(-1)
    reliable = inside & (mismatch <= 0.01 * scale + 0.5)
    warped = cv2.remap(outputs[0], where[..., 0], where[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    difference = np.abs(outputs[1].astype(np.float32) - warped.astype(np.float32)).mean(-1)
    if not reliable.any():
        return float("nan"), 0.0
    return float(difference[reliable].mean()), float(reliable.mean())


def warping_error(input_frames, output_frames, *, details: bool = False):
    """The clip's temporal warping error (module docstring): mean absolute difference, in pixel values of 0 to
    255, between each output frame and the previous output frame warped along the input's optical flow, over the
    pixels where that flow is reliable; 0 for perfectly consistent outputs.

    Both clips are uint8 RGB frames [T, H, W, 3] (numpy arrays or torch tensors) of the same shape, T >= 2.
    `details`: return {'warping_error', 'reliable' (mean fraction of pixels counted), 'pairs'} instead."""
    cv2 = opencv("the flicker measure")
    inputs, outputs = _frames(input_frames, "input frames"), _frames(output_frames, "output frames")
    if inputs.shape != outputs.shape:
        raise UserError(f"the input and output clips differ in shape ({list(inputs.shape)} vs "
                        f"{list(outputs.shape)}); pass the frames of a clip and of its stylization")
    if len(inputs) < 2:
        raise UserError(f"a warping error needs 2 frames or more, got {len(inputs)}")
    errors, reliable = [], []
    for t in range(1, len(inputs)):
        error, share = pair_error(cv2, (inputs[t - 1], inputs[t]), (outputs[t - 1], outputs[t]))
        if share > 0:
            errors.append(error)
        reliable.append(share)
    value = float(np.mean(errors)) if errors else float("nan")
    if details:
        return {"warping_error": value, "reliable": float(np.mean(reliable)), "pairs": len(reliable)}
    return value


__all__ = ["warping_error"]
