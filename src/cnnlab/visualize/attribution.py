"""Which pixels a prediction depends on: gradient saliency, SmoothGrad, and class activation maps.

The CAM family (Grad-CAM, Grad-CAM++, Score-CAM, Eigen-CAM, LayerCAM, XGrad-CAM) comes from the
``grad-cam`` package (pytorch-grad-cam): its classes turn a target layer's activations and gradients into
maps. This module picks the target layer, batches the images and computes those activations and gradients
itself, at about a third of the package's cost (benchmarks/visualize.py), and with the caller's model
left as it was (``requires_grad`` flags, ``.grad``, train/eval mode, hooks):

- A CAM needs gradients only from the logits down to its target layer. The package runs the whole network
  with a graph and back-propagates through all of it, computing every weight gradient; here the layers
  below the target run under no_grad (no graph, nothing saved), the target layer's output becomes a leaf,
  and ``torch.autograd.grad`` asks for that leaf's gradient alone. One such pass serves every requested
  CAM method of a batch (the package does one forward and backward pass per method).
- Saliency needs only the input's gradient: ``torch.autograd.grad`` with respect to the input, which makes
  autograd skip every weight gradient and leaves ``.grad`` untouched.

Every method returns maps [N, H, W] in [0, 1] at the input's resolution.
"""

from __future__ import annotations

import threading
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


def _target_score(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of each image's target logit (images do not interact, so one backward pass gives
    every image's own gradient)."""
    rows = torch.arange(len(targets), device=logits.device)
    return logits[rows, targets.to(logits.device)].sum()


def _input_gradients(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d target logit / d input. Asking autograd for the input's gradient alone skips every weight gradient
    (about a third of a full backward pass) and accumulates nothing into the parameters' .grad."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(_target_score(model(x), targets), x)
    return grad


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


def layer_pass(model: nn.Module, layer: nn.Module, x: torch.Tensor, targets: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(activation of `layer`, d target logits / d activation) for the batch x; targets None: the activation
    alone, from a forward pass without any graph.

    The layers below `layer` run under no_grad; a forward hook turns the layer's output into a leaf that
    requires grad and switches grad mode on for the rest of the network (the head), and autograd.grad asks
    for that leaf's gradient alone: back-propagation from the logits down to the layer, no weight gradients.
    The values are those of the package's full pass (the same operations on the same numbers). None when the
    layer runs more than once in a forward pass (a shared module): the caller then lets the package do it."""
    taken: list[torch.Tensor] = []
    thread = threading.get_ident()

    def tap(_module, _inputs, out):
        if threading.get_ident() != thread:  # another thread's forward pass through a shared model
            return None
        taken.append(out)
        if len(taken) > 1 or not isinstance(out, torch.Tensor):
            return None
        if targets is None:  # a copy: an in-place op after the layer (ReLU(inplace=True)) cannot change it
            taken[0] = out.detach().clone()
            return None
        taken[0] = out.detach().requires_grad_(True)
        torch.set_grad_enabled(True)  # from here up to the logits, autograd records the graph
        return taken[0].clone()  # not the leaf itself: an in-place op after the layer stays legal

    grad_mode = torch.is_grad_enabled()
    handle = layer.register_forward_hook(tap)
    try:
        torch.set_grad_enabled(False)
        logits = model(x)
        if len(taken) != 1 or not isinstance(taken[0], torch.Tensor):
            return None
        if targets is None:
            return taken[0], None
        (grad,) = torch.autograd.grad(_target_score(logits, targets), taken[0], allow_unused=True)
    finally:
        torch.set_grad_enabled(grad_mode)
        handle.remove()
    activation = taken[0].detach()
    return activation, torch.zeros_like(activation) if grad is None else grad


def _cam_class(method: str):
    import pytorch_grad_cam as pgc

    return {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "scorecam": pgc.ScoreCAM,
            "eigencam": pgc.EigenCAM, "layercam": pgc.LayerCAM, "xgradcam": pgc.XGradCAM}[method]


def package_cam_maps(cam, x: torch.Tensor, targets: list, activation: torch.Tensor,
                     gradient: torch.Tensor | None) -> np.ndarray:
    """The package's own CAM computation (BaseCAM.forward after its forward and backward pass) on the
    activation and gradient that layer_pass computed: its weights, ReLU, per-image scaling and resizing."""
    store = cam.activations_and_grads
    store.activations, store.gradients = [activation], [] if gradient is None else [gradient]
    try:
        return cam.aggregate_multi_layers(cam.compute_cam_per_layer(x, targets, False))
    finally:
        store.activations, store.gradients = [], []


class Attributor:
    """Computes attribution maps of one model for batches of images; the CAM objects are set up once.

    While it is open the model is in eval mode; close() restores each module's train/eval mode. Nothing
    else of the model changes: requires_grad flags, parameters, .grad and hooks stay as they were."""

    def __init__(self, model: nn.Module, layer: nn.Module | None, methods: Sequence[str], precision: str = "fp32"):
        self._modes = [(m, m.training) for m in model.modules()]
        self.model = model.eval()
        self.layer = layer
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
            cam = _cam_class(m)(model=self.model, target_layers=[layer])
            cam.activations_and_grads.release()  # layer_pass takes the activations: no package hooks stay on
            self.cams[m] = cam

    def __call__(self, x: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        device = x.device
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if self.precision == "bf16" else nullcontext()
        with autocast:
            for m in self.methods:
                if m == "saliency":
                    out[m] = saliency(self.model, x, targets)
                elif m == "smoothgrad":
                    out[m] = smoothgrad(self.model, x, targets)
            out.update(self._cams(x, targets))
        return {m: out[m].float().cpu() for m in self.methods}

    def _cams(self, x: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every requested CAM of the batch from one layer_pass (with gradients when a method uses them)."""
        if not self.cams:
            return {}
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        objectives = [ClassifierOutputTarget(int(t)) for t in targets]
        uses_gradients = any(cam.uses_gradients for cam in self.cams.values())
        taken = layer_pass(self.model, self.layer, x, targets if uses_gradients else None)
        maps = {}
        for m, cam in self.cams.items():
            if taken is None:  # the layer ran twice: the package's own forward and backward pass, hooks and all
                grads = [(p, p.grad) for p in self.model.parameters()]
                try:
                    with _cam_class(m)(model=self.model, target_layers=[self.layer]) as hooked:
                        result = hooked(input_tensor=x, targets=objectives)
                finally:  # its backward pass filled every parameter's .grad: the caller's are put back
                    for p, g in grads:
                        p.grad = g
            else:
                result = package_cam_maps(cam, x, objectives, *taken)
            maps[m] = torch.from_numpy(np.ascontiguousarray(result)).float()
        return maps

    def close(self) -> None:
        if self._float_hook is not None:
            self._float_hook.remove()
            self._float_hook = None
        self.cams.clear()
        for module, training in self._modes:
            module.training = training

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def mass_inside(maps: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Fraction of each map's total inside box = (x0, y0, x1, y1), pixel coordinates, end exclusive."""
    x0, y0, x1, y1 = box
    inside = maps[:, y0:y1, x0:x1].flatten(1).sum(1)
    return inside / maps.flatten(1).sum(1).clamp(min=1e-12)
