"""The content photos a style network trains on, decoded and center-cropped once, then cached (data/cache.py).

A style network trains for several epochs over the same photos, and a second network (another style, other
weights) usually trains on the same folder: decoding hundreds of JPEGs each time would cost more than a short
run's training. The cache entry is keyed by the photos as they are now (paths, sizes, modification times) and
the crop size, so changing, adding or removing a photo, or training at another size, decodes again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch


def photos_digest(files: list[Path]) -> str:
    """Which photos, as they are now: paths, sizes and modification times."""
    return hashlib.sha256(json.dumps([[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files])
                          .encode()).hexdigest()[:20]


def load_photos(files: list[Path], size: int, cache_dir: Path | None) -> torch.Tensor:
    """uint8 [N, 3, size, size] center crops of the photos, decoded once and cached in `cache_dir` (None: not
    cached)."""
    from ..data.cache import cached_tensors
    from ..data.folders import decode

    def build() -> dict[str, torch.Tensor]:
        return {"photos": torch.stack([decode(f, size, size) for f in files])}

    if cache_dir is None:
        return build()["photos"]
    entry = cached_tensors(cache_dir, "style-photos", [photos_digest(files), size], build,
                           what="photo cache", expect={"photos": ((len(files), 3, size, size), torch.uint8)})
    return entry.tensors["photos"]
