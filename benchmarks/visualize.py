"""Speed of the visualizations: Grad-CAM and saliency per image against the plain ways, and a 64-filter grid.

    python benchmarks/visualize.py [--threads 2] [--repeats 3] [--batch 16] [--images 16]

Attribution maps are timed for EfficientNet-Lite0 (real weights), ResNet-50 and the CIFAR cnn4 (random
weights: only the time and the agreement of the maps matter), at the default Grad-CAM layer (the last conv
layer with a spatial output), in the same run, on the same images (--images of 224x224; cnn4: four times
as many of 32x32) and target classes (the predicted ones, computed once beforehand):
- Grad-CAM, plain: the grad-cam package used the plain way, one image at a time, a new GradCAM object per
  image (a forward pass with a graph, then a backward pass through the whole network and its weights);
- saliency, plain: the textbook way, one image at a time: the input requires grad, backward() from the
  target logit (every weight gradient is computed too), |gradient| max over colours, scaled to [0, 1];
- cnnlab: its Attributor (visualize/attribution.py) in batches of 1 and of --batch, in fp32, and in bf16
  autocast on CPUs with native bf16 (elsewhere bf16 is emulated, many times slower, and `--precision auto`
  never picks it). The fp32 rows must give the plain way's maps: "max |diff|" is the largest difference
  between their maps (each map in [0, 1]) over all images.
Figures are medians of --repeats runs after one untimed run; "vs plain" is the plain time per image over
this row's, both measured in this run. Writes benchmarks/results/visualize-<CPU class>.md.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from _common import cpu_banner, median_time, save_result, table
from cnnlab import models
from cnnlab.engine.device import configure_threads, cpu_native_bf16
from cnnlab.visualize import MaximizeSettings, Subject, maximize
from cnnlab.visualize.attribution import Attributor
from cnnlab.visualize.subject import default_cam_layer

GOALS = {"gradcam": 2.0, "saliency": 1.5}  # issue 26: times the plain way's speed, fp32


def plain_gradcam(model, layer, images, targets):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    maps = []
    for x, t in zip(images, targets):
        with GradCAM(model=model, target_layers=[layer]) as cam:
            maps.append(cam(input_tensor=x.unsqueeze(0), targets=[ClassifierOutputTarget(int(t))])[0])
    return torch.from_numpy(np.stack(maps))


def plain_saliency(model, _layer, images, targets):
    maps = []
    for x, t in zip(images, targets):
        x = x.unsqueeze(0).clone().requires_grad_(True)
        model.zero_grad()
        model(x)[0, int(t)].backward()
        g = x.grad.abs().amax(1)[0]
        maps.append((g - g.min()) / (g.max() - g.min()).clamp(min=1e-12))
    return torch.stack(maps)


def cnnlab_maps(model, layer, images, targets, method, batch, precision):
    with Attributor(model, layer, [method], precision) as attr:
        return torch.cat([attr(images[i:i + batch], targets[i:i + batch])[method]
                          for i in range(0, len(images), batch)])


def measure(name, model, images, args) -> tuple[list[list[str]], list[str]]:
    """Table rows and goal lines of one model."""
    subject = Subject(name, model, None, [])
    layer_name = default_cam_layer(subject, images[:1])
    layer = dict(model.named_modules())[layer_name]
    with torch.no_grad():  # the predicted classes, once, outside the timings: every way gets the same targets
        targets = model(images).argmax(1)
    rows, goals = [], []
    ways = [("fp32", 1), ("fp32", args.batch)] + ([("bf16", args.batch)] if cpu_native_bf16() else [])
    for method, plain_fn in (("gradcam", plain_gradcam), ("saliency", plain_saliency)):
        out = {}
        plain, _ = median_time(lambda: out.__setitem__("plain", plain_fn(model, layer, images, targets)),
                               args.repeats)
        model.zero_grad(set_to_none=True)
        label = {"gradcam": f"Grad-CAM at {layer_name}", "saliency": "saliency"}[method]
        rows.append([name, label, "plain, 1 image at a time", f"{1000 * plain / len(images):.1f}", "1.00x", ""])
        print(f"  {rows[-1]}", flush=True)
        for precision, batch in ways:
            seconds, _ = median_time(lambda: out.__setitem__(
                "cnnlab", cnnlab_maps(model, layer, images, targets, method, batch, precision)), args.repeats)
            diff = (out["cnnlab"] - out["plain"]).abs().max().item()
            rows.append([name, label, f"cnnlab {precision}, batch {batch}", f"{1000 * seconds / len(images):.1f}",
                         f"{plain / seconds:.2f}x", f"{diff:.1e}" if precision == "fp32" else ""])
            print(f"  {rows[-1]}", flush=True)
            if precision == "fp32" and batch == 1:
                ratio = plain / seconds
                goals.append(f"{name} {label}: {ratio:.2f}x the plain way at batch 1 (goal {GOALS[method]}x: "
                             f"{'met' if ratio >= GOALS[method] else 'NOT met'}), maps within {diff:.1e}")
    return rows, goals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args()
    threads = configure_threads(args.threads)
    setup = (f"{threads} threads, {args.images} images of 224x224 ({4 * args.images} of 32x32 for cnn4), "
             f"median of {args.repeats}")
    print(f"{cpu_banner()}\n{setup}\n")
    generator = torch.Generator().manual_seed(0)
    rows, goals = [], []
    for name, kwargs, size, count in (("efficientnet_lite0", {}, 224, args.images),
                                      ("resnet50", {"weights": "none"}, 224, args.images),
                                      ("cnn4", {"batchnorm": True}, 32, 4 * args.images)):
        torch.manual_seed(0)
        model = models.create(name, **kwargs).eval()
        images = torch.randn(count, 3, size, size, generator=generator)
        model_rows, model_goals = measure(name, model, images, args)
        rows += model_rows
        goals += model_goals
    text = table(["model", "map", "way", "ms / image", "vs plain", "max |diff|"], rows)
    goal_text = "\n".join(f"- {g}" for g in goals)
    print(f"\n{text}\n\n{goal_text}")

    torch.manual_seed(0)
    cnn4 = models.create("cnn4", batchnorm=True).eval()
    from cnnlab.models.backbones import Preprocess

    subject = Subject("cnn4", cnn4, Preprocess(32, 32, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), True),
                      [str(i) for i in range(10)])
    settings = MaximizeSettings(steps=256)
    seconds, _ = median_time(lambda: maximize(subject, "features.conv4", list(range(64)), settings),
                             max(1, args.repeats // 2), warmup=0)
    grid = (f"64-filter grid of cnn4 features.conv4 (32x32, {settings.steps} steps, Fourier parametrization): "
            f"{seconds:.1f} s")
    print(f"\n{grid}")
    save_result("visualize", f"# Speed of the visualizations\n\n{cpu_banner()}\n\nWritten by `python benchmarks/"
                f"visualize.py` ({setup}).\n\nAttribution maps at the default Grad-CAM layer; the plain ways and "
                f"cnnlab in the same run (see the script's docstring):\n\n{text}\n\n{goal_text}\n\n{grid}\n")


if __name__ == "__main__":
    main()
