"""Features of an ImageNet backbone, extracted once and cached, for a softmax classifier on top.

The features are what the backbone's classifier would see (its input: the pooled output of the
convolutional trunk, 1,280 numbers for EfficientNet-Lite0, 2,048 for ResNet-50), computed with the
backbone in eval mode on the center-cropped images. They are cached next to the decoded images, keyed by
the images' key (files, sizes, modification times, resize and crop), the backbone's name and a digest of
its weights, and the normalization: a second run, or another classifier on the same features, extracts
nothing.

The classifier is an ``nn.Linear`` trained by the same engine as every other run (softmax cross-entropy,
any optimizer and schedule of the config), on the feature tensors instead of images: with 450 images of
1,280 features an epoch takes milliseconds, so a well-kept external solver would buy nothing but a
dependency.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import torch
from torch import nn

from ..data import ClassificationData
from ..data.folders import cache_root
from ..config import DataConfig
from ..engine.device import autocast, memory_format
from ..models import surgery


def weights_digest(model: nn.Module) -> str:
    """sha256 over the backbone's tensors (the classifier excluded): which weights made the features."""
    head = surgery.head_name(model)
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(head + "."):
            continue
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def extract(model: nn.Module, images: torch.Tensor, mean, std, device: torch.device, precision: str,
            channels_last: bool, batch_size: int = 64) -> torch.Tensor:
    """float32 [N, features]: the classifier's input for uint8 images [N, 3, H, W]."""
    name = surgery.head_name(model)
    head = surgery.swap_module(model, name, nn.Identity())  # the classifier's input is the output now
    try:
        model = model.eval().to(device, memory_format=memory_format(channels_last))
        m = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        s = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
        out = []
        for start in range(0, len(images), batch_size):
            x = (images[start:start + batch_size].to(device).float() - m) / s
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                out.append(model(x).float().flatten(1).cpu())
        dim = out[0].shape[1] if out else head.in_features
        return torch.cat(out) if out else torch.empty(0, dim)
    finally:
        surgery.swap_module(model, name, head)


def feature_data(data: ClassificationData, backbone: nn.Module, backbone_name: str, cfg: DataConfig,
                 device: torch.device, precision: str, channels_last: bool) -> tuple[ClassificationData, dict]:
    """`data` with each split's images replaced by the backbone's features (from the cache when there).

    Returns (the feature data, {"cache": "hit" | "miss", "key": ...}). Features are float32 [N, D]; their
    mean/std fields are unused (the batches do not normalize them).
    """
    from safetensors.torch import load_file
    from safetensors.torch import save as to_bytes

    from ..runs import atomic_write_bytes

    key = hashlib.sha256(json.dumps([data.checksum, backbone_name, weights_digest(backbone), list(data.mean),
                                     list(data.std), precision]).encode()).hexdigest()[:20]
    path = cache_root(cfg) / f"features-{key}.safetensors"
    splits = ("train", "val", "test")
    stored = None
    if path.is_file():
        try:
            stored = load_file(str(path))
        except Exception:  # damaged: extract again
            stored = None
    status = "hit" if stored is not None else "miss"
    if stored is None:
        stored = {s: extract(backbone, getattr(data, f"{s}_images"), data.mean, data.std, device, precision,
                             channels_last) for s in splits}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, to_bytes({s: t.contiguous() for s, t in stored.items()},
                                          metadata={"backbone": backbone_name}))
    features = replace(data, train_images=stored["train"], val_images=stored["val"], test_images=stored["test"],
                       checksum=key)
    return features, {"cache": status, "key": key, "dimensions": int(stored["train"].shape[1])}
