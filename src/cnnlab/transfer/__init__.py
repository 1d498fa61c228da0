"""Transfer learning on a small dataset of your own, the course's three ways, through the one engine:

1. ``cnnlab transfer --from RUN_DIR --data PATH``: a trained cnnlab (CIFAR) model keeps every layer but its
   classifier, gets a new one for the dataset's classes, and trains it with the rest frozen (``--unfreeze``
   trains everything) on the photos resized to the model's input size.
2. ``cnnlab features --backbone NAME --data PATH``: an ImageNet backbone's pooled features are extracted once
   (cached), and a softmax classifier trains on them in seconds (features.py).
3. ``cnnlab finetune --backbone NAME --data PATH --trainable-layers N``: the last N parameterised layers of a
   pretrained backbone train with a new head, at a low learning rate, optionally with discriminative rates
   (the backbone at lr x factor), reduce-on-plateau, early stopping and augmentation, in one or two stages
   (head first, then the chosen layers).

Each is an ordinary cnnlab run (classify.train with a ``transfer`` config section): same run directory,
same training loop (engine/loop.py), same resume and time budgets. ways.py says which way a run is;
adapt.py freezes the model and makes its optimizer groups; source.py reads the run a transfer starts from;
features.py extracts and caches features; models/surgery.py cuts and freezes; data/folders.py reads the photos.
"""

from .adapt import StageTwo, parameter_groups, prepare
from .source import adopt_source_model, cut_source_run, load_head, source_metadata
from .ways import adapts_network, is_transfer, kind

__all__ = ["StageTwo", "adapts_network", "adopt_source_model", "cut_source_run", "is_transfer", "kind", "load_head",
           "parameter_groups", "prepare", "source_metadata"]
