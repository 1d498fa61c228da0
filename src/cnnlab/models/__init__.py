"""Networks by name: ``create(name, **kwargs)``, ``list_models()``.

Importing this package registers every built-in network.
"""

from . import backbones, classic, fast  # noqa: F401  (registers every network)
from .registry import arguments, check_arguments, create, create_for, epoch_arguments, list_models, register

__all__ = ["arguments", "check_arguments", "create", "create_for", "epoch_arguments", "list_models", "register"]
