"""cnnlab visualize: filters, classes, saliency and Grad-CAM of a network, and its layers."""

from __future__ import annotations

import argparse

from ..errors import UserError
from ._common import Parser, add_fields

MAXIMIZE_FIELDS = ["steps", "image_size", "param", "octaves", "lr", "tv_weight", "l2_weight", "seed"]
MAXIMIZE_FLAGS = {"image_size": "--size", "tv_weight": "--tv", "l2_weight": "--l2"}


def add_visualize(sub) -> None:
    from ..visualize import MaximizeSettings

    v = sub.add_parser("visualize", help="filters, classes, saliency and Grad-CAM of a network",
                       description="Look inside a network: a cnnlab run (--run RUN_DIR) or an ImageNet model "
                                   "(--model NAME, e.g. efficientnet_lite0).")
    kinds = v.add_subparsers(dest="kind", required=True, parser_class=Parser)

    def common(p):
        p.add_argument("--run", metavar="RUN_DIR", help="a cnnlab training run")
        p.add_argument("--model", help="an ImageNet model: efficientnet_lite0, vgg16, resnet50, ...")
        p.add_argument("--weights", metavar="FILE", help="weights for --model (default: its pretrained ones; none)")
        p.add_argument("--out", metavar="DIR", help="output folder (default runs/visualize-KIND-TIMESTAMP)")
        p.add_argument("--threads", type=int)
        p.set_defaults(handler=cmd_visualize)

    f = kinds.add_parser("filters", help="inputs that maximize each filter of a layer, as one grid")
    common(f)
    add_fields(f, MaximizeSettings, MAXIMIZE_FIELDS, flags=MAXIMIZE_FLAGS)
    f.add_argument("--layer", help="layer name (see: cnnlab visualize layers)")
    f.add_argument("--filters", metavar="LIST", help="e.g. 0-63 or 0,5,9-12 (default: the first 64)")
    f.add_argument("--show-weights", action="store_true", help="draw the first layer's kernels as RGB tiles")
    c = kinds.add_parser("classes", help="inputs that maximize class logits")
    common(c)
    add_fields(c, MaximizeSettings, MAXIMIZE_FIELDS, flags=MAXIMIZE_FLAGS)
    c.add_argument("--classes", nargs="+", metavar="CLASS", help="class names or indices (default: all, if <= 20)")
    a = kinds.add_parser("attribution", help="saliency, SmoothGrad and CAM heatmaps for images")
    common(a)
    a.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    a.add_argument("--target", metavar="CLASS", help="class to explain (default: the predicted one)")
    a.add_argument("--methods", nargs="+", metavar="METHOD",
                   help="saliency smoothgrad gradcam gradcam++ scorecam eigencam layercam xgradcam "
                        "(default: saliency smoothgrad gradcam gradcam++ eigencam)")
    a.add_argument("--layer", help="CAM target layer (default: the last conv layer with a spatial output)")
    a.add_argument("--batch-size", type=int, default=8)
    a.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 where the hardware has it natively (about 2x faster there; maps differ "
                        "slightly), else fp32")
    a.add_argument("--crop", action="store_true", help="center-crop like the model's evaluation (default: "
                                                        "the whole image, shorter side resized)")
    la = kinds.add_parser("layers", help="list the conv layers and their output shapes")
    common(la)


def _index_list(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    out: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                lo, hi = part.split("-", 1)
                out += list(range(int(lo), int(hi) + 1))
            elif part.strip():
                out.append(int(part))
    except ValueError:
        raise UserError(f"--filters '{text}' must be indices like 0-63 or 0,5,9-12") from None
    return out


def cmd_visualize(args: argparse.Namespace) -> int:
    import time

    from .. import visualize
    from ..engine.device import configure_threads
    from ._common import settings_from

    settings = settings_from(args, visualize.MaximizeSettings) if args.kind in ("filters", "classes") else None
    configure_threads(args.threads)
    subject = visualize.load_subject(run=args.run, model=args.model, weights=args.weights)
    out = args.out or f"runs/visualize-{args.kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.kind == "layers":
        for name, shape in visualize.spatial_conv_layers(subject.model, subject.example_input()):
            print(f"{name:40s} {list(shape)}")
        return 0
    if args.kind == "filters":
        if args.show_weights:
            info = visualize.show_weights(subject, out)
            print(f"{info['kernels']} kernels of {info['layer']} -> {info['grid']}")
            if not args.layer:
                return 0
        if not args.layer:
            raise UserError("--layer is required (see: cnnlab visualize layers), or use --show-weights")
        indices = _index_list(args.filters) if args.filters else None
        info = visualize.filters(subject, args.layer, indices, out, settings)
    elif args.kind == "classes":
        info = visualize.classes(subject, args.classes, out, settings)
    else:
        info = visualize.attribution(subject, args.images, out, methods=args.methods or visualize.DEFAULT_METHODS,
                                     target=args.target, layer=args.layer, batch_size=args.batch_size,
                                     crop=args.crop, precision=args.precision)
        for record in info["images"]:
            print(f"{record['image']}: {record['target_name']}")
        print(f"wrote heatmaps, panels and predictions.json to {out}")
        return 0
    gains = [f / s if s > 0 else float("inf") for s, f in zip(info["initial_activation"], info["final_activation"])]
    print(f"{len(info['targets'])} images -> {info['grid']} (median activation gain "
          f"{sorted(gains)[len(gains) // 2]:.1f}x over the starting noise)")
    return 0
