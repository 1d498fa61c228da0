"""Stylizing one photo by optimization as a command: inputs checked first, then one stylization per content
weight (optimize.py computes), the images, pictures of the evolution, losses.csv and summary.json written into
`out`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data.images import read_image, save_png
from ..errors import UserError
from .. import runs
from ..runs import RunDir, environment
from . import lossnet
from .course_weights import content_weight_label
from .memory import check_size
from .optimize import OptimizeResult, OptimizeSettings, stylize


def _setup(device: str, threads: int | None, precision: str):
    from ..engine.device import autocast, configure_threads, resolve_execution, select_device

    used = configure_threads(threads)
    dev = select_device(device)
    execution = resolve_execution(dev, precision, False)
    return dev, used, execution, (lambda: autocast(dev, execution.precision))


def _loss_net_record(net: lossnet.LossNetwork) -> dict:
    return {"name": net.name, "weights": net.weights, "content_layers": net.content_layers,
            "style_layers": net.style_weights, "smooth": net.choice.smooth, "relative": net.choice.relative,
            "notes": net.choice.notes}


def optimize(content: str | Path, styles: Sequence[str | Path], out: str | Path,
             settings: OptimizeSettings | None = None, *, loss_net: str | None = None, weights: str | None = None,
             content_layers: Sequence[str] | None = None, style_layers: dict[str, float] | None = None,
             smooth: bool | None = None, relative: bool = True, content_weights: Sequence[float] | None = None,
             device: str = "auto", threads: int | None = None, precision: str = "auto", progress: bool = True) -> dict:
    """Stylize `content` with the mix of `styles`; with several `content_weights`, once per weight and a grid
    comparing them (the course's content-weight study). Writes stylized.png (the first weight's),
    stylized-cw<W>.png per weight, evolution.png when settings.snapshot_every, losses.csv, summary.json."""
    from dataclasses import replace

    from .optimize import check_settings

    s = replace(settings) if settings else OptimizeSettings()  # a copy: the caller's settings stay as they were
    s.style_mix = list(s.style_mix)
    check_settings(s)
    if not styles:
        raise UserError("give at least one --style image")
    content_image = read_image(content)
    style_images = [read_image(p) for p in styles]
    if len(s.style_mix) != len(style_images):
        if s.style_mix == [1.0]:
            s.style_mix = [1.0] * len(style_images)
        else:
            raise UserError(f"--style-weights has {len(s.style_mix)} values for {len(style_images)} --style images; "
                            f"give one weight per style image")
    dev, used, execution, amp = _setup(device, threads, precision)
    net = lossnet.build(loss_net, weights, content_layers, style_layers, smooth, relative).to(dev)
    check_size(s.size, net.name, dev)
    run = RunDir(out).create()  # only once every input has been checked
    weights_list = list(content_weights or [s.content_weight])
    results: list[tuple[float, OptimizeResult]] = []
    for cw in weights_list:
        s_cw = OptimizeSettings(**{**s.__dict__, "content_weight": cw})
        label = content_weight_label(cw, s.style_weight)  # the course's number beside its mapped weights
        report = _progress_printer(label, s.iterations) if progress else None
        result = stylize(net, content_image, style_images, s_cw, on_iteration=report, autocast=amp)
        results.append((cw, result))
        save_png(result.image, run / f"stylized-cw{cw:g}.png")
    first = results[0][1]
    save_png(first.image, run / "stylized.png")
    pictures = _pictures(run, content_image, style_images, results, s)
    run.write_csv("losses.csv", [{"content_weight": cw, "iteration": i, **row}
                                 for cw, r in results for i, row in enumerate(r.history)])
    summary = runs.StylizeSummary(
        kind="stylize", name=run.path.name, method="optimize", content=str(content), styles=[str(p) for p in styles],
        initial=first.initial, final=first.final, settings=first.settings, loss_net=_loss_net_record(net),
        seconds=first.seconds, seconds_per_iteration=first.seconds / max(len(first.history), 1),
        size=list(first.image.shape[-2:]), output=str(run / "stylized.png"), pictures=pictures,
        runs=[{"content_weight": cw, "label": content_weight_label(cw, s.style_weight), "initial": r.initial,
               "final": r.final, "seconds": r.seconds,
               "output": str(run / f"stylized-cw{cw:g}.png")} for cw, r in results],
        precision=execution.precision, cpu_class=execution.cpu_class, device=str(dev), threads=used,
        git_commit=runs.git_commit(), torch_version=torch.__version__)
    run.write_json("environment.json", environment(used, dev, execution=execution.record()))
    runs.write_summary(run, summary)
    return summary.to_dict()


def _pictures(run: RunDir, content: torch.Tensor, styles: list[torch.Tensor],
              results: list[tuple[float, OptimizeResult]], s: OptimizeSettings) -> dict[str, str]:
    """evolution.png (the first weight's snapshots) and, for several weights, content-weights.png."""
    from ..report.plots import image_grid
    from .optimize import resize_longest

    pictures = {}
    first = results[0][1]
    if first.snapshots:
        images = [img for _, img in first.snapshots]
        labels = [f"iteration {i}" for i, _ in first.snapshots]
        title = f"evolution ({content_weight_label(results[0][0], s.style_weight)})"
        pictures["evolution"] = str(image_grid([images], [labels], run / "evolution.png", title=title))
    if len(results) > 1:
        inputs = [resize_longest(content, s.size)] + [resize_longest(st, s.size) for st in styles]
        labels = ["content"] + [f"style {i + 1}" for i in range(len(styles))]
        pictures["content_weights"] = str(image_grid(
            [inputs, [r.image for _, r in results]],
            [labels, [content_weight_label(cw, s.style_weight) for cw, _ in results]], run / "content-weights.png",
            title="the content weight trades the photo's structure against the painting's style"))
    return pictures


def _progress_printer(label: str, total: int):
    """A line every ~10 % of the iterations: losses and iterations per second."""
    start = time.perf_counter()
    every = max(1, total // 10)

    def report(i: int, terms: dict[str, float]) -> None:
        if i % every == 0 or i == total - 1:
            rate = (i + 1) / max(time.perf_counter() - start, 1e-9)
            print(f"{label}: iteration {i}/{total}  content {terms['content_loss']:.4f}  style "
                  f"{terms['style_loss']:.4f}  total {terms['total_loss']:.4f}  ({rate:.1f} it/s)", flush=True)

    return report
