"""The fast CIFAR recipe's network (after airbench / hlb-CIFAR10 / "How to train your ResNet").

    whiten (2x2 conv, frozen, computed from data) -> GELU
    -> 3 x [conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU]   widths (64, 256, 256)
    -> global max-pool -> linear (no bias) -> x scale

What makes it fast to train, and where each trick lives:
- patch whitening: the first layer's filters are the eigenvectors of the 2x2 patch covariance of the
  training images (and their negatives), scaled to unit variance; computed once by ``fit_to_data`` and never
  trained, so the net starts from decorrelated inputs. Its bias trains for the first few epochs only
  (``training_callbacks``). Both are optional model hooks (models/contract.py).
- identity (dirac) init of every 3x3 conv: an implicit residual path through a plain, non-residual net.
- batch norm with frozen scale, low running-stat momentum and a large bias learning rate
  (``parameter_groups``).
- a scaled-down head output (x 1/9), which acts like a temperature for the label-smoothed loss.
Everything else (Nesterov SGD or Muon, warm-up + linear decay, label smoothing, lookahead, alternating
flips, flip/translate TTA) is the engine's and lives in the config (configs/fast*.yaml).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ..engine.loop import Callback
from .classic import Classifier
from .registry import register


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


def frozen_scale_batchnorm(channels: int, momentum: float, frozen: bool = True) -> nn.BatchNorm2d:
    """BN whose scale stays 1 (only the shift trains); `momentum` is the weight of the old running stats."""
    bn = nn.BatchNorm2d(channels, eps=1e-12, momentum=1 - momentum)
    bn.weight.requires_grad_(not frozen)
    return bn


def identity_init_conv(cin: int, cout: int, dirac: bool) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    if dirac:
        with torch.no_grad():
            nn.init.dirac_(conv.weight[: min(cin, cout)])
    return conv


class ConvGroup(nn.Sequential):
    def __init__(self, cin: int, cout: int, bn_momentum: float, dirac: bool, frozen_bn_scale: bool = True):
        super().__init__(OrderedDict(
            conv1=identity_init_conv(cin, cout, dirac), pool=nn.MaxPool2d(2),
            norm1=frozen_scale_batchnorm(cout, bn_momentum, frozen_bn_scale), act1=nn.GELU(),
            conv2=identity_init_conv(cout, cout, dirac),
            norm2=frozen_scale_batchnorm(cout, bn_momentum, frozen_bn_scale), act2=nn.GELU()))


def whitening_filters(images: torch.Tensor, kernel: int, eps: float) -> torch.Tensor:
    """[2 * c*k*k, c, k, k] filters that whiten k x k patches of `images` (float, normalized, [N, C, H, W]).

    Eigen-decomposition of the patch covariance: each eigenvector, scaled by 1/sqrt(eigenvalue + eps), is a
    filter; the negated copies let the following GELU pass both signs.
    """
    c = images.shape[1]
    patches = images.unfold(2, kernel, 1).unfold(3, kernel, 1).transpose(1, 3).reshape(-1, c * kernel * kernel)
    patches = patches.double()
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    order = eigenvalues.argsort(descending=True)
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps).unsqueeze(1)).reshape(-1, c, kernel, kernel)
    return torch.cat([filters, -filters]).float()


class FastNet(Classifier):
    """See the module docstring."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, widths: Sequence[int] = (64, 256, 256),
                 whiten_kernel: int = 2, whiten_eps: float = 5e-4, whiten_samples: int = 5000,
                 whiten_bias_epochs: float = 3, bn_momentum: float = 0.6, scale: float = 1 / 9,
                 bias_lr_scale: float = 64.0, head_lr_scale: float = 1.0, dirac: bool = True,
                 head_unit_std: bool = False, whiten: bool = True, frozen_bn_scale: bool = True):
        w1, w2, w3 = (int(w) for w in widths)
        whiten_width = 2 * in_channels * whiten_kernel ** 2
        first = nn.Conv2d(in_channels, whiten_width, whiten_kernel, padding=0, bias=True)
        if whiten:  # computed from data by fit_to_data, never trained
            first.weight.requires_grad_(False)
            nn.init.zeros_(first.bias)
        features = nn.Sequential(OrderedDict(
            whiten=first, act=nn.GELU(),
            group1=ConvGroup(whiten_width, w1, bn_momentum, dirac, frozen_bn_scale),
            group2=ConvGroup(w1, w2, bn_momentum, dirac, frozen_bn_scale),
            group3=ConvGroup(w2, w3, bn_momentum, dirac, frozen_bn_scale),
            pool=nn.AdaptiveMaxPool2d(1)))
        head = nn.Linear(w3, num_classes, bias=False)
        if head_unit_std:
            with torch.no_grad():
                head.weight /= head.weight.std()
        super().__init__(features, nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc=head, scale=Scale(scale))))
        self.use_whitening = whiten
        self.whiten_eps, self.whiten_samples = whiten_eps, whiten_samples
        self.whiten_bias_epochs = whiten_bias_epochs
        self.bias_lr_scale, self.head_lr_scale = bias_lr_scale, head_lr_scale
        # Recorded in the weights so that a loaded model knows it was fitted.
        self.register_buffer("whitened", torch.zeros((), dtype=torch.bool))

    @property
    def whiten(self) -> nn.Conv2d:
        return self.features.whiten

    @torch.no_grad()
    def fit_to_data(self, images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> None:
        """Set the frozen whitening filters from the first `whiten_samples` training images (uint8)."""
        if not self.use_whitening:
            return
        x = images[: self.whiten_samples].float() / 255
        x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
        self.whiten.weight.copy_(whitening_filters(x, self.whiten.kernel_size[0], self.whiten_eps))
        self.whitened.fill_(True)

    def parameter_groups(self, cfg) -> list[dict]:
        """BN shifts: lr x bias_lr_scale, weight decay / bias_lr_scale; the head keeps SGD under Muon."""
        norm_biases = [m.bias for m in self.modules() if isinstance(m, nn.BatchNorm2d)]
        norm_biases += [m.weight for m in self.modules() if isinstance(m, nn.BatchNorm2d) and m.weight.requires_grad]
        head = self.classifier.fc.weight
        taken = {id(p) for p in norm_biases} | {id(head)}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in taken]
        convs = [p for p in rest if p.ndim == 4]
        others = [p for p in rest if p.ndim != 4]
        return [
            {"params": norm_biases, "lr": cfg.lr * self.bias_lr_scale,
             "weight_decay": cfg.weight_decay / self.bias_lr_scale, "muon": False},
            {"params": [head], "lr": cfg.lr * self.head_lr_scale,
             "weight_decay": cfg.weight_decay / self.head_lr_scale, "muon": False},
            {"params": convs},
            {"params": others, "muon": False},
        ]

    def training_callbacks(self, cfg) -> list[Callback]:
        return [FreezeAfter([self.whiten.bias], self.whiten_bias_epochs)] if self.use_whitening else []


class FreezeAfter(Callback):
    """Train `params` only during the first `epochs` epochs (the whitening bias, after airbench).

    A fraction of an epoch freezes them at that step (a time budget stretches the epochs)."""

    def __init__(self, params: list[nn.Parameter], epochs: float):
        self.params, self.epochs = params, epochs

    def _set(self, trainer) -> None:
        train = trainer.schedule.step_count < round(self.epochs * trainer.schedule.steps_per_epoch)
        changed = any(p.requires_grad != train for p in self.params)
        for p in self.params:
            p.requires_grad_(train)
            if not train:
                p.grad = None
        if changed:
            trainer.trainable_parameters_changed()  # under torchrun: DDP built again

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self._set(trainer)

    def on_step_end(self, trainer) -> None:
        self._set(trainer)


@register("fastnet", description="airbench-style fast CIFAR net: frozen whitening, dirac init, 3 conv groups",
          epoch_args=("whiten_bias_epochs",), head="classifier.fc")
def fastnet(num_classes: int = 10, in_channels: int = 3, widths: Sequence[int] = (64, 256, 256),
            whiten_kernel: int = 2, whiten_eps: float = 5e-4, whiten_samples: int = 5000,
            whiten_bias_epochs: float = 3, bn_momentum: float = 0.6, scale: float = 1 / 9,
            bias_lr_scale: float = 64.0, head_lr_scale: float = 1.0, dirac: bool = True,
            head_unit_std: bool = False, whiten: bool = True, frozen_bn_scale: bool = True) -> FastNet:
    """The fast recipe's network; see cnnlab.models.fast."""
    if len(widths) != 3:
        raise ValueError(f"widths must be 3 numbers (one per conv group), got {list(widths)}")
    return FastNet(num_classes, in_channels, widths, whiten_kernel, whiten_eps, whiten_samples, whiten_bias_epochs,
                   bn_momentum, scale, bias_lr_scale, head_lr_scale, dirac, head_unit_std, whiten, frozen_bn_scale)

