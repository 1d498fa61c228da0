"""How good a stylized picture is, in numbers a person would agree with (benchmarks/style_quality.py uses them).

- ``outlier_colour_share``: the share of the output's pixels whose colour is far (RGB distance > 50 on the
  0-255 scale) from every colour of the painting and of the photo. A good stylization paints with the
  painting's palette over the photo's shapes, so nearly all of its colours are near one of theirs (an image
  optimized by L-BFGS: 0.000 % on six photos); the saturated blobs a style network with a linear output put on
  bright regions are colours neither image has, and showed up at 0.35-0.64 % (15 minutes of training:
  benchmarks/results/style-quality-*.md).
- ``picture_losses``: the content and style loss of a finished picture against the photo and the painting,
  with the same loss network and relative terms as training and `optimize` (losses.py), so a network's output
  and an optimized image of the same photo can be compared term by term.
"""

from __future__ import annotations

import torch

OUTLIER_DISTANCE = 50.0  # RGB distance on the 0-255 scale
COLOUR_STEP = 4  # colours are compared on a grid of 4 levels (error of a distance: at most 2·√3 ≈ 3.5)


def _grid_colours(pixels: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct colours of `pixels` ([N, 3], 0-255) snapped to the centres of a grid of `step` levels, as
    [M, 3] floats, and for each pixel the index of its colour."""
    snapped = torch.div(pixels, step, rounding_mode="floor")
    colours, inverse = torch.unique(snapped, dim=0, return_inverse=True)
    return colours.float() * step + step / 2, inverse


def _palette(images: list[torch.Tensor], step: int) -> torch.Tensor:
    """The distinct colours of `images` ([3, H, W], uint8 or float in [0, 1]) on the grid, as [N, 3] floats."""
    return _grid_colours(torch.cat([_to_255(im).reshape(3, -1).T for im in images]), step)[0]


def _to_255(image: torch.Tensor) -> torch.Tensor:
    image = image.squeeze(0) if image.dim() == 4 else image
    if image.dtype == torch.uint8:
        return image.long()
    return (image.float().clamp(0, 1) * 255).round().long()


def outlier_colour_mask(output: torch.Tensor, references: list[torch.Tensor],
                        distance: float = OUTLIER_DISTANCE, step: int = COLOUR_STEP) -> torch.Tensor:
    """[H, W] bool: which of `output`'s pixels have a colour more than `distance` (RGB, 0-255) from every colour
    of the `references` (the painting and the photo). Images are [3, H, W] or [1, 3, H, W], uint8 or float in
    [0, 1]; the references may have any size. Colours are snapped to a grid of `step` levels first (the
    distinct colours of a photo then number thousands, not millions), so a distance is exact to ±3.5."""
    palette = _palette(references, step)
    image = _to_255(output)
    colours, inverse = _grid_colours(image.reshape(3, -1).T, step)
    far = torch.ones(len(colours), dtype=torch.bool)
    for start in range(0, len(colours), 4096):  # [4096, N] distances at a time: bounded memory
        block = colours[start:start + 4096]
        far[start:start + 4096] = torch.cdist(block, palette).amin(1) > distance
    return far[inverse].reshape(image.shape[-2:])


def outlier_colour_share(output: torch.Tensor, references: list[torch.Tensor],
                         distance: float = OUTLIER_DISTANCE, step: int = COLOUR_STEP) -> float:
    """The share (0-1) of `output`'s pixels that outlier_colour_mask marks."""
    return float(outlier_colour_mask(output, references, distance, step).float().mean())


def picture_losses(objective, picture: torch.Tensor, photo: torch.Tensor) -> dict[str, float]:
    """{'content_loss', 'style_loss'} of `picture` against `photo` ([1, 3, H, W] floats in [0, 1], the same size)
    under a StyleObjective (optimize.py) built for the painting: the terms without their weights."""
    with torch.no_grad():
        terms = objective(picture, objective.content_targets(photo))
    return {"content_loss": float(terms["content_loss"]), "style_loss": float(terms["style_loss"])}


__all__ = ["outlier_colour_mask", "outlier_colour_share", "picture_losses", "OUTLIER_DISTANCE"]
