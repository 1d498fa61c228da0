"""Cutting and freezing networks for transfer learning.

- :func:`head` is a network's classifier, as its registry entry declares it (cnn4's ``classifier.fc2``,
  fastnet's ``classifier.fc``, EfficientNet-Lite0's ``_fc``, ResNet's ``fc``, VGG's ``classifier.6``, ...;
  models/contract.py).
- :func:`replace_head` swaps it for a fresh one with the new number of classes.
- :func:`set_trainable` chooses what trains: ``head``, ``all``, the last N *parameterised layers* (modules
  that own parameters: convolutions, norms, linear layers; counted from the top, head included, as the
  course's "last 101 layers of ResNet-50"), or a block by name (it and everything after it).

Frozen batch-norm layers stay in eval mode: their running statistics are the ones the frozen weights
after them were trained with (ImageNet's, or CIFAR's). Updated with the small new dataset's batches, they
would shift every frozen layer's input away from what its weights expect, while nothing could adapt to
it; a forward pre-hook keeps such a layer in eval mode whatever ``model.train()`` says.
``keep_bn_statistics=True`` does the same for the batch norms of the layers that train (their scale and
shift still learn): fine-tuning on a few hundred images in batches of 32, the batch statistics are noisy
estimates of the new data's, and updating the running ones with them moves every layer above at once
(Keras's fine-tuning guide keeps batch norm in inference mode for the same reason).
"""

from __future__ import annotations

from torch import nn

from ..errors import UserError, did_you_mean
from .contract import classifier_name, get_classifier, reset_classifier, swap_module

_FROZEN_BN_HOOK = "_cnnlab_frozen_bn_hook"


# The classifier, as each network declares it (models/contract.py), under the names transfer learning uses.
head_name = classifier_name
head = get_classifier
replace_head = reset_classifier

__all__ = ["fold_batch_norms", "head", "head_name", "parameterised_layers", "replace_head", "set_trainable",
           "swap_module", "trainable_layers"]


def parameterised_layers(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters, in the order of model.named_modules() (input to output)."""
    return [name for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]


def trainable_layers(model: nn.Module, spec: str) -> list[str]:
    """The parameterised layers `spec` makes trainable (see the module docstring)."""
    layers = parameterised_layers(model)
    top = head_name(model)
    text = str(spec).strip()
    if text == "all":
        return layers
    if text == "head":
        return [top]
    if text.isdigit():
        n = int(text)
        if n < 1:
            raise UserError(f"--trainable-layers must be at least 1 (the classifier), got {n}")
        return layers[-n:]
    names = [name for name, _ in model.named_modules() if name]
    if text not in names:
        blocks = [n for n in names if n.count(".") <= 1]
        shown = ", ".join(blocks[:8] + (["..."] if len(blocks) > 8 else []))
        raise UserError(f"--trainable-layers '{text}' is neither a number, 'all', 'head' nor a block of "
                        f"{type(model).__name__}{did_you_mean(text, names)}; blocks: {shown}")
    order = [name for name, _ in model.named_modules()]
    start = order.index(text)
    after = set(order[start:])
    return [layer for layer in layers if layer in after or layer.startswith(text + ".")] + \
        ([top] if top not in after else [])


def _keep_eval(module: nn.Module, _inputs) -> None:
    module.training = False


def set_trainable(model: nn.Module, spec: str, keep_bn_statistics: bool = False) -> list[str]:
    """Freeze everything but the layers of `spec` (the head always trains); frozen batch norms stay in
    eval mode (all of them with `keep_bn_statistics`). Returns the trainable layers' names."""
    chosen = set(trainable_layers(model, spec)) | {head_name(model)}
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        train = name in chosen
        for p in own:
            p.requires_grad_(train)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            hook = getattr(module, _FROZEN_BN_HOOK, None)
            keep = not train or keep_bn_statistics
            if keep and hook is None:
                setattr(module, _FROZEN_BN_HOOK, module.register_forward_pre_hook(_keep_eval))
            elif not keep and hook is not None:
                hook.remove()
                delattr(module, _FROZEN_BN_HOOK)
    return [name for name in parameterised_layers(model) if name in chosen]


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """An inference copy of `model` with every batch norm that directly follows a convolution folded into it.

    In eval mode a batch norm is an affine map per channel, so conv -> BN equals one convolution with scaled
    weights and a shifted bias: one pass over the activations instead of two (BN was 21 % of
    EfficientNet-Lite0's CPU inference, profiled). Traced with torch.fx; convolutions of any subclass are kept
    as modules (their own forward, e.g. extra padding, still runs). Batch norms whose input is used elsewhere
    too are left alone. The original model is not modified."""
    import copy

    import torch
    from torch import fx

    class ConvLeaves(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, nn.Conv2d) or super().is_leaf_module(m, qualname)

    model = copy.deepcopy(model).eval()
    graph = ConvLeaves().trace(model)
    folded = fx.GraphModule(model, graph)
    modules = dict(folded.named_modules())
    for node in list(folded.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        source = node.args[0]
        conv = modules.get(source.target) if isinstance(source, fx.Node) and source.op == "call_module" else None
        if not isinstance(conv, nn.Conv2d) or len(source.users) != 1 or modules[node.target].running_var is None:
            continue
        bn = modules[node.target]
        with torch.no_grad():
            gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
            beta = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
            scale = gamma / torch.sqrt(bn.running_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter((bias - bn.running_mean) * scale + beta)
        node.replace_all_uses_with(source)
        folded.graph.erase_node(node)
    folded.graph.lint()
    folded.recompile()
    return folded
