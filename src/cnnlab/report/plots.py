"""Figures of runs: learning curves, confusion matrices, ablation comparisons (matplotlib, Agg backend)."""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

if "ipykernel" not in sys.modules:  # no display assumed (servers, CI); a notebook keeps its inline plots
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..runs import atomic_write_bytes  # noqa: E402


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Render to memory, then write atomically (a crash never leaves half a file). A .jpg path gets JPEG at
    quality 85: photographic grids (style transfer) are several times smaller than as PNG."""
    buf = io.BytesIO()
    if Path(path).suffix.lower() in (".jpg", ".jpeg"):
        fig.savefig(buf, format="jpeg", dpi=dpi, bbox_inches="tight", pil_kwargs={"quality": 85})
    else:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def _column(rows: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [float(r.get(key, math.nan)) if r.get(key) not in (None, "") else math.nan for r in rows]


def curves(history: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Accuracy and loss per epoch, train vs validation, side by side."""
    epochs = [r["epoch"] for r in history]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric, label in ((ax_acc, "accuracy", "accuracy"), (ax_loss, "loss", "loss")):
        ax.plot(epochs, _column(history, f"train_{metric}"), label="train", marker="." if len(epochs) < 30 else None)
        val = _column(history, f"val_{metric}")
        if any(not math.isnan(v) for v in val):
            ax.plot(epochs, val, label="validation", marker="." if len(epochs) < 30 else None)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def confusion_matrix(matrix, classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Row-normalized confusion matrix with counts in the cells."""
    counts = matrix.numpy() if hasattr(matrix, "numpy") else matrix
    totals = counts.sum(1, keepdims=True).clip(min=1)
    frac = counts / totals
    n = len(classes)
    fig, ax = plt.subplots(figsize=(0.6 * n + 3, 0.6 * n + 2.5))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if frac[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    ax.set_title(title or "confusion matrix")
    return save_figure(fig, path)


def comparison(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: str | Path,
               metric: str = "val_accuracy", title: str = "") -> Path:
    """Overlaid curves of one metric, one line per run."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, history in runs:
        if history:
            ax.plot([r["epoch"] for r in history], _column(history, metric), label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or metric.replace("_", " "))
    return save_figure(fig, path)


def image_grid(rows: Sequence[Sequence[Any]], labels: Sequence[Sequence[str]], path: str | Path, title: str = "",
               tile_inches: float = 2.6) -> Path:
    """Rows of images (float [3, H, W] or [1, 3, H, W] in [0, 1], or None for an empty cell), each captioned:
    style-transfer strips and comparison grids. Tiles keep their aspect ratio."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    first = next(img for row in rows for img in row if img is not None)
    aspect = first.shape[-2] / first.shape[-1]
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(tile_inches * n_cols,
                                                      tile_inches * aspect * n_rows + 0.35 * n_rows + 0.3),
                             squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(row) and row[c] is not None:
                img = row[c][0] if row[c].dim() == 4 else row[c]
                ax.imshow(img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
                ax.set_title(labels[r][c], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
