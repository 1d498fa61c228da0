"""Which pixels a prediction depends on: gradient saliency, SmoothGrad, and class activation maps.

The CAM family (Grad-CAM, Grad-CAM++, Score-CAM, Eigen-CAM, LayerCAM, XGrad-CAM) comes from the
``grad-cam`` package (pytorch-grad-cam); this module picks the target layer, batches the images and keeps
one hooked CAM object per method instead of one per image.

Every method returns maps [N, H, W] in [0, 1] at the input's resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from ..errors import UserError, unknown_name

GRADIENT_METHODS = ("saliency", "smoothgrad")
CAM_METHODS = ("gradcam", "gradcam++", "scorecam", "eigencam", "layercam", "xgradcam")
METHODS = GRADIENT_METHODS + CAM_METHODS
DEFAULT_METHODS = ("saliency", "smoothgrad", "gradcam", "gradcam++", "eigencam")


def check_methods(methods: Sequence[str]) -> list[str]:
    for m in methods:
        if m not in METHODS:
            raise unknown_name("method", m, METHODS)
    return list(methods)


def _normalize(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map to [0, 1] (a constant map becomes zeros)."""
    flat = maps.flatten(1)
    low, high = flat.min(1).values.view(-1, 1, 1), flat.max(1).values.view(-1, 1, 1)
    return (maps - low) / (high - low).clamp(min=1e-12)


def _input_gradients(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    logits = model(x)
    logits[torch.arange(len(targets)), targets].sum().backward()
    return x.grad.detach()


def saliency(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """|d logit_target / d pixel|, max over colour channels (Simonyan et al. 2014)."""
    return _normalize(_input_gradients(model, x, targets).abs().amax(1))


def smoothgrad(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, samples: int = 25,
               noise: float = 0.15, generator: torch.Generator | None = None, chunk: int = 64) -> torch.Tensor:
    """Mean of |gradient| over noisy copies of the input (Smilkov et al. 2017); noise relative to the range."""
    gen = generator or torch.Generator().manual_seed(0)
    sigma = noise * (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    total = torch.zeros_like(x)
    n = len(x)
    repeated = x.repeat(samples, 1, 1, 1)
    sigma_rep = sigma.repeat(samples, 1, 1, 1)
    target_rep = targets.repeat(samples)
    noise_all = torch.randn(repeated.shape, generator=gen).to(x) * sigma_rep
    for i in range(0, len(repeated), chunk):
        grads = _input_gradients(model, repeated[i:i + chunk] + noise_all[i:i + chunk], target_rep[i:i + chunk])
        idx = torch.arange(i, min(i + chunk, len(repeated))) % n
        total.index_add_(0, idx.to(x.device), grads.abs())
    return _normalize((total / samples).amax(1))


def _cam_class(method: str):
    import pytorch_grad_cam as pgc

    return {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "scorecam": pgc.ScoreCAM,
            "eigencam": pgc.EigenCAM, "layercam": pgc.LayerCAM, "xgradcam": pgc.XGradCAM}[method]


class Attributor:
    """Computes attribution maps of one model for batches of images; CAM hooks are set up once."""

    def __init__(self, model: nn.Module, layer: nn.Module | None, methods: Sequence[str], precision: str = "fp32"):
        self.model = model.eval()
        self.methods = check_methods(methods)
        self.precision = precision
        self.cams = {}
        self._float_hook = None
        needs_cam = [m for m in self.methods if m in CAM_METHODS]
        if needs_cam and layer is None:
            raise UserError("class activation maps need a convolutional target layer; none was found")
        if needs_cam and precision == "bf16":
            # The CAM package reads activations and gradients as numpy arrays, which have no bfloat16: hand it
            # the target layer's output in float32 (registered first, so its hooks see the converted tensor).
            self._float_hook = layer.register_forward_hook(lambda _m, _i, out: out.float())
        for m in needs_cam:
            self.cams[m] = _cam_class(m)(model=self.model, target_layers=[layer])

    def __call__(self, x: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        out: dict[str, torch.Tensor] = {}
        device = x.device
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if self.precision == "bf16" else nullcontext()
        with autocast:
            for m in self.methods:
                out[m] = self._one(m, x, targets, ClassifierOutputTarget)
        return {k: v.float().cpu() for k, v in out.items()}

    def _one(self, m: str, x: torch.Tensor, targets: torch.Tensor, target_cls) -> torch.Tensor:
        if m == "saliency":
            return saliency(self.model, x, targets)
        if m == "smoothgrad":
            return smoothgrad(self.model, x, targets)
        maps = self.cams[m](input_tensor=x, targets=[target_cls(int(t)) for t in targets])
        return torch.from_numpy(np.ascontiguousarray(maps)).float()

    def close(self) -> None:
        if self._float_hook is not None:
            self._float_hook.remove()
        for cam in self.cams.values():
            cam.activations_and_grads.release()
        self.cams.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def mass_inside(maps: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Fraction of each map's total inside box = (x0, y0, x1, y1), pixel coordinates, end exclusive."""
    x0, y0, x1, y1 = box
    inside = maps[:, y0:y1, x0:x1].flatten(1).sum(1)
    return inside / maps.flatten(1).sum(1).clamp(min=1e-12)
