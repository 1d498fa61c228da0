"""Look inside networks: activation maximization (filters, dense units, classes), saliency and CAMs.

    from cnnlab import visualize
    subject = visualize.load_subject(model="efficientnet_lite0")      # or run="runs/cnn4-..."
    visualize.attribution(subject, ["photo.jpg"], "out/")             # heatmaps + predictions.json
    visualize.filters(subject, "features.conv1", range(32), "out/")   # grid of synthesized inputs

Each function writes its pictures and data into `out` and returns a summary dict.
"""

from __future__ import annotations

from .attribution import DEFAULT_METHODS, METHODS
from .commands import attribution, classes, filters, show_weights
from .maximize import MaximizeSettings, first_layer_weights, maximize
from .subject import Subject, conv_layer_names, load_subject, spatial_conv_layers

__all__ = ["DEFAULT_METHODS", "METHODS", "MaximizeSettings", "Subject", "attribution", "classes", "filters",
           "first_layer_weights", "load_subject", "maximize", "show_weights", "spatial_conv_layers",
           "conv_layer_names"]
