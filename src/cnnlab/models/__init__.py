"""Networks by name: ``create(name, **kwargs)``, ``list_models()``.

Importing this package registers every built-in network.
"""

from . import backbones, classic, fast  # noqa: F401  (registers every network)
from .registry import arguments, create, list_models, register

__all__ = ["arguments", "create", "list_models", "register"]
