"""Networks by name: ``create(name, **kwargs)``, ``list_models()``; what each declares and the optional hooks
it may define (``preprocessing(name)``, ``fit_to_data``, ``training_callbacks``, ...): models/contract.py.

Importing this package registers every built-in network.
"""

from . import backbones, classic, fast  # noqa: F401  (registers every network)
from .contract import (ModelHooks, Preprocess, fit_to_data, get_classifier, reset_classifier,
                       training_callbacks)
from .registry import (arguments, check_arguments, create, create_for, epoch_arguments, list_models, preprocessing,
                       register)

__all__ = ["ModelHooks", "Preprocess", "arguments", "check_arguments", "create", "create_for", "epoch_arguments",
           "fit_to_data", "get_classifier", "list_models", "preprocessing", "register", "reset_classifier",
           "training_callbacks"]
