"""Pictures of visualizations: tile grids with indices, heatmaps over images with colour bars, panels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from ..report.plots import plt, save_figure


def _hwc(image: torch.Tensor):
    return image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def tile_grid(images: torch.Tensor, labels: Sequence[str], path: str | Path, title: str = "",
              columns: int | None = None) -> Path:
    """Images [N, 3, h, w] in [0, 1] as a grid, each tile's label (e.g. filter index) drawn over it."""
    n = len(images)
    cols = columns or min(n, max(1, math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.25 * cols, 1.25 * rows + (0.4 if title else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(_hwc(images[i]), interpolation="nearest" if images.shape[-1] <= 64 else "bilinear")
            ax.text(0.03, 0.97, labels[i], transform=ax.transAxes, va="top", ha="left", fontsize=7,
                    color="white", bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "linewidth": 0})
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(wspace=0.04, hspace=0.04)
    return save_figure(fig, path)


def _overlay(ax, image: torch.Tensor, heat: torch.Tensor, title: str, alpha: float = 0.5):
    ax.imshow(_hwc(image))
    im = ax.imshow(heat.cpu().numpy(), cmap="jet", alpha=alpha, vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return im


def heatmap(image: torch.Tensor, heat: torch.Tensor, path: str | Path, title: str) -> Path:
    """One heatmap [H, W] in [0, 1] over its image [3, H, W], with a colour bar."""
    fig, ax = plt.subplots(figsize=(5, 5 * image.shape[1] / image.shape[2] + 0.4))
    im = _overlay(ax, image, heat, title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="attribution (normalized)")
    return save_figure(fig, path)


def panel(image: torch.Tensor, heats: dict[str, torch.Tensor], path: str | Path, title: str) -> Path:
    """The image and every method's heatmap side by side, one shared colour bar."""
    n = len(heats) + 1
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3 * image.shape[1] / image.shape[2] + 0.8), squeeze=False)
    axes[0, 0].imshow(_hwc(image))
    axes[0, 0].set_title("input", fontsize=9)
    axes[0, 0].axis("off")
    im = None
    for ax, (name, heat) in zip(axes[0, 1:], heats.items()):
        im = _overlay(ax, image, heat, name)
    if im is not None:
        fig.colorbar(im, ax=list(axes[0]), fraction=0.015, pad=0.01)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
