"""Neural style transfer: optimization-based (Gatys et al.) and fast feed-forward networks (Johnson et al.).

    from cnnlab import style
    style.optimize("photo.jpg", ["starry_night.jpg"], "out/", style.OptimizeSettings(size=256))
    style.train(style.StyleTrainSettings(style="starry_night.jpg", content_dir="photos/"), "runs/starry")
    style.apply("runs/starry", "clip.mp4", "clip-starry.mp4")

- losses.py: Gram matrices, content / style / total-variation losses, Wang et al.'s softmax smoothing;
- lossnet.py: the frozen loss network (vgg19, vgg16, efficientnet_lite0) and its default layers;
- optimize.py: the image optimized directly (L-BFGS or Adam), snapshots of its evolution; optimize_run.py:
  that as a command (files and summary written), memory.py: the largest size this machine can stylize;
- course_weights.py: the course's content weights (15, 50, 100) on cnnlab's loss scale;
- transformer.py + train.py: a feed-forward network per style, trained in the one training loop on the photos
  of photos.py (decoded once, cached), with network_objective.py's losses (and stability term, for video);
- apply.py: that network on images, folders and videos (PyAV, audio copied), temporal.py its blend of video
  frames along the optical flow;
- quality.py, flicker.py: the measures the benchmarks score networks with (losses against optimize's, outlier
  colours; temporal warping error).

optimize and train write their images and a summary.json into `out` and return the summary; apply writes
the stylized files and returns what it did.
"""

from __future__ import annotations

from . import lossnet
from .apply import apply
from .memory import available_memory, check_size, max_size
from .optimize import OptimizeSettings
from .optimize_run import optimize  # the function: after the import of the module of the same name
from .train import StyleTrainSettings, load_network, train

__all__ = ["OptimizeSettings", "StyleTrainSettings", "apply", "available_memory", "check_size", "load_network",
           "lossnet", "max_size", "optimize", "train"]
