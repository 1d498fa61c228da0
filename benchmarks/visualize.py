"""Speed of the visualizations: Grad-CAM per 224x224 image, and a 64-filter grid of the CIFAR cnn4.

    python benchmarks/visualize.py [--threads 2] [--repeats 5] [--batch 16]

Grad-CAM is timed for EfficientNet-Lite0 (real weights) and ResNet-50 (random weights: only the time
matters), three ways, in the same run, on the same images and target classes (the predicted ones,
computed once beforehand), so each way does one forward and one backward pass per image:
- plain: the grad-cam package used the plain way, one image at a time, a new GradCAM object per image;
- cnnlab fp32: cnnlab's Attributor (one hooked CAM object, images in batches of --batch);
- cnnlab bf16: the same with bf16 autocast (only on CPUs with native bf16: elsewhere it is emulated and
  many times slower, and `--precision auto` never picks it).
Figures are medians of --repeats runs; "vs plain" is the plain time per image over this row's. Writes
benchmarks/results/visualize-<CPU class>.md.
"""

from __future__ import annotations

import argparse

import torch

from _common import cpu_banner, median_time, save_result, table
from cnnlab import models
from cnnlab.engine.device import configure_threads, cpu_native_bf16
from cnnlab.visualize import MaximizeSettings, Subject, maximize
from cnnlab.visualize.attribution import Attributor
from cnnlab.visualize.subject import default_cam_layer


def plain_gradcam(model, layer, images, targets):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    for x, t in zip(images, targets):
        with GradCAM(model=model, target_layers=[layer]) as cam:
            cam(input_tensor=x.unsqueeze(0), targets=[ClassifierOutputTarget(int(t))])


def cnnlab_gradcam(model, layer, images, targets, batch, precision):
    with Attributor(model, layer, ["gradcam"], precision) as attr:
        for i in range(0, len(images), batch):
            attr(images[i:i + batch], targets[i:i + batch])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args()
    threads = configure_threads(args.threads)
    setup = f"{threads} threads, {args.images} images of 224x224, median of {args.repeats}"
    print(f"{cpu_banner()}\n{setup}\n")
    images = torch.randn(args.images, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    rows = []
    for name, kwargs in (("efficientnet_lite0", {}), ("resnet50", {"weights": "none"})):
        model = models.create(name, **kwargs).eval()
        subject = Subject(name, model, model.preprocess, model.class_names)
        layer = dict(model.named_modules())[default_cam_layer(subject, images[:1])]
        with torch.no_grad():  # the predicted classes, once, outside the timings: both ways get the same targets
            targets = model(images).argmax(1)
        plain, _ = median_time(lambda: plain_gradcam(model, layer, images, targets), args.repeats)
        cases = [("plain grad-cam, 1 image at a time", plain)]
        for precision in ("fp32", "bf16") if cpu_native_bf16() else ("fp32",):
            for batch in (1, args.batch):
                t, _ = median_time(lambda: cnnlab_gradcam(model, layer, images, targets, batch, precision),
                                   args.repeats)
                cases.append((f"cnnlab {precision}, batch {batch}", t))
        for label, seconds in cases:
            per = seconds / args.images
            rows.append([name, label, f"{1000 * per:.0f}", f"{plain / seconds:.2f}x"])
            print(f"  {rows[-1]}", flush=True)
    text = table(["model", "Grad-CAM", "ms / image", "vs plain"], rows)
    print()
    print(text)

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
                f"visualize.py` ({setup}).\n\n{text}\n\n{grid}\n")


if __name__ == "__main__":
    main()
