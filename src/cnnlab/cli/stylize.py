"""cnnlab stylize optimize / train / apply: neural style transfer, by optimizing an image or with a network."""

from __future__ import annotations

import argparse

from ..errors import UserError
from ._common import DEVICE_HELP, Parser, add_fields, add_overrides, refuse_with_resume, settings_from

OPTIMIZE_FIELDS = ["content_weight", "style_weight", "tv_weight", "size", "iterations", "optimizer", "lr", "init",
                   "preserve_colors", "snapshot_every", "seed"]
TRAIN_FIELDS = ["style", "content_dir", "image_size", "style_size", "batch_size", "epochs", "iterations", "minutes",
                "lr", "lr_anneal", "content_weight", "style_weight", "tv_weight", "stability_weight", "stability_noise",
                "stability_shift", "width", "residual_blocks", "output", "separable", "edge_kernel", "downsamples",
                "loss_net", "loss_net_weights", "preview_every", "limit_images", "seed", "precision", "tensorboard"]
PRECISIONS = ["auto", "fp32", "bf16"]


def _settings_file(p: argparse.ArgumentParser) -> None:
    add_overrides(p, "settings as KEY=VALUE, e.g. content_weight=5 (any field of the settings)")
    p.add_argument("--config", metavar="FILE", help="the settings from a YAML file (flags and KEY=VALUE win)")


def _runtime(p: argparse.ArgumentParser, precision: bool = True) -> None:
    if precision:
        p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=int)
    p.add_argument("--device", help=DEVICE_HELP)


def add_stylize(sub) -> None:
    from .. import style

    st = sub.add_parser("stylize", help="neural style transfer: optimize an image (Gatys et al.)",
                        description="Neural style transfer. optimize: the pixels of one image are optimized to "
                                    "keep a photo's content and take a painting's style.")
    kinds = st.add_subparsers(dest="kind", required=True, parser_class=Parser)
    o = kinds.add_parser("optimize", help="optimize one image (Gatys et al.): content + style + total variation")
    o.add_argument("--content", metavar="IMG", required=True, help="the photo whose content is kept")
    o.add_argument("--style", metavar="IMG", action="append", required=True,
                   help="a painting (repeat for a mix of styles, see --style-weights)")
    o.add_argument("--style-weights", metavar="W1,W2", help="one weight per --style image (default: equal)")
    o.add_argument("--content-weights", metavar="W1,W2,...",
                   help="run once per content weight and write one comparison grid (e.g. 0.3,1,3)")
    add_fields(o, style.OptimizeSettings, OPTIMIZE_FIELDS, metavars={"snapshot_every": "K"})
    o.add_argument("--raw-losses", action="store_true",
                   help="classic unnormalized loss terms (weights then need tuning per network, e.g. style 1e4)")
    o.add_argument("--loss-net", help="vgg19 | vgg16 | efficientnet_lite0 | another ImageNet model (default: "
                                      "vgg19 where its weights are available, else efficientnet_lite0)")
    o.add_argument("--weights", metavar="FILE", help="the loss network's weights from a local file")
    o.add_argument("--content-layers", metavar="L1,L2", help="override the loss network's content layers")
    o.add_argument("--style-layers", metavar="L1[:W],L2[:W]", help="override its style layers (optional weights)")
    o.add_argument("--smooth", action=argparse.BooleanOptionalAction, default=None,
                   help="Wang et al.'s softmax smoothing of activations (default: per loss network)")
    o.add_argument("--out", metavar="DIR", help="output folder (default runs/stylize-TIMESTAMP)")
    _settings_file(o)
    _runtime(o)
    o.set_defaults(handler=cmd_stylize)

    t = kinds.add_parser("train", help="train a fast style network for one painting (Johnson et al.)",
                         description="Train a feed-forward style network on a folder of photos; resumable; a preview "
                                     "of fixed photos after every epoch (evolution.png).")
    add_fields(t, style.StyleTrainSettings, TRAIN_FIELDS, flags={"loss_net_weights": "--weights"},
               metavars={"style": "IMG", "content_dir": "DIR", "minutes": "M", "loss_net_weights": "FILE",
                         "preview_every": "N", "limit_images": "N"})
    t.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/style-NAME-TIMESTAMP)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted style training run (with the "
                                                       "settings it saved; only where it runs may change)")
    t.add_argument("--cache-dir", metavar="DIR", help="where the decoded photos are cached")
    _settings_file(t)
    _runtime(t, precision=False)
    t.set_defaults(handler=cmd_stylize)

    a = kinds.add_parser("apply", help="stylize an image, a folder or a video with a trained style network")
    a.add_argument("--model", metavar="MODEL", required=True, help="a style training run directory or its weights")
    a.add_argument("--input", metavar="IMG|DIR|VIDEO", required=True)
    a.add_argument("--out", metavar="PATH", required=True, help="an image, a folder, or a video file name")
    a.add_argument("--batch-size", type=int,
                   help="video frames per batch (default: the fastest measured, see benchmarks/style_apply.py)")
    a.add_argument("--temporal-blend", type=float, metavar="S",
                   help="video: the previous output frame's share where the scene stands still, 0 to below 1 "
                        "(0: each frame as the network paints it; default: see style/apply.py's VIDEO_SETTINGS)")
    _runtime(a)
    a.set_defaults(handler=cmd_stylize)


def _number_list(text: str | None, flag: str) -> list[float] | None:
    """'0.7,0.3' -> [0.7, 0.3]; None stays None."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} '{text}' must be numbers separated by commas, e.g. 0.7,0.3") from None
    if not values or any(v != v or v < 0 for v in values):
        raise UserError(f"{flag} '{text}' must be numbers of 0 or more, e.g. 0.7,0.3")
    return values


def _layer_weights(text: str | None) -> dict[str, float] | None:
    """'relu1_1:1,relu2_1:0.5' -> {'relu1_1': 1.0, 'relu2_1': 0.5}; a missing weight is 1."""
    if text is None:
        return None
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition(":")
        try:
            out[name] = float(weight) if weight else 1.0
        except ValueError:
            raise UserError(f"--style-layers '{text}': '{weight}' is not a number (write LAYER:WEIGHT)") from None
    return out


def cmd_stylize(args: argparse.Namespace) -> int:
    from .. import style

    if args.kind == "train":
        return _train(args)
    if args.kind == "apply":
        info = style.apply(args.model, args.input, args.out, device=args.device or "auto", threads=args.threads,
                           precision=args.precision, batch=args.batch_size, progress=not args.no_progress,
                           temporal_blend=args.temporal_blend)
        if "frames" in info:
            print(f"{info['frames']} frames ({info['width']}x{info['height']}, {info['frame_rate']:g} fps"
                  f"{', audio copied' if info['audio'] else ''}) in {info['seconds']:.1f} s "
                  f"({info['frames_per_second']:.1f} frames/s) -> {info['output']}")
        else:
            print(f"{info['images']} image(s) in {info['seconds']:.1f} s -> {', '.join(info['outputs'][:3])}"
                  f"{' ...' if info['images'] > 3 else ''}")
        return 0
    return _optimize(args)


def _optimize(args: argparse.Namespace) -> int:
    import time

    from .. import style

    out = args.out or f"runs/stylize-{time.strftime('%Y%m%d-%H%M%S')}"
    mix = _number_list(args.style_weights, "--style-weights")
    settings = settings_from(args, style.OptimizeSettings, {"style_mix": mix} if mix else None)
    summary = style.optimize(args.content, args.style, out, settings, loss_net=args.loss_net, weights=args.weights,
                             content_layers=args.content_layers.split(",") if args.content_layers else None,
                             style_layers=_layer_weights(args.style_layers), smooth=args.smooth,
                             relative=not args.raw_losses,
                             content_weights=_number_list(args.content_weights, "--content-weights"),
                             device=args.device or "auto", threads=args.threads, precision=args.precision,
                             progress=not args.no_progress)
    i, f = summary["initial"], summary["final"]
    print(f"loss network {summary['loss_net']['name']}: content {i['content_loss']:.4f} -> {f['content_loss']:.4f}, "
          f"style {i['style_loss']:.4f} -> {f['style_loss']:.4f} in {summary['seconds']:.1f} s "
          f"({summary['seconds_per_iteration']:.2f} s/iteration, {summary['precision']})")
    print(f"wrote {summary['output']} and summary.json to {out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from .. import style

    runtime = dict(device=args.device or "auto", threads=args.threads, cache_dir=args.cache_dir,
                   progress=not args.no_progress)
    if args.resume:
        refuse_with_resume(args, "a resumed style network trains with the settings it saved (style.json)")
        summary = style.train(style.StyleTrainSettings(), args.resume, resume=True, **runtime)
    else:
        settings = settings_from(args, style.StyleTrainSettings)
        if not settings.style or not settings.content_dir:
            raise UserError("--style IMG and --content-dir DIR are required (or --resume RUN_DIR)")
        out = args.out or f"runs/style-{Path(settings.style).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        summary = style.train(settings, out, **runtime)
    print(f"loss {summary['first_epoch_loss']:.4f} (first epoch) -> {summary['final_loss']:.4f} (last), "
          f"{summary['steps']} steps in {summary['train_seconds'] / 60:.1f} min\nstyle network: {summary['weights']}")
    return 0
