"""The `cnnlab` command: argument parsing only; every command calls the Python API.

User errors (``UserError``) print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .errors import EXIT_USER_ERROR, UserError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# train flags that are shortcuts for config fields
TRAIN_SHORTCUTS = {
    "model": "model.name", "epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "optim.lr",
    "optimizer": "optim.name", "schedule": "schedule.name", "seed": "train.seed",
    "limit_train": "data.limit_train", "val_size": "data.val_size", "data_root": "data.root",
    "device": "train.device", "precision": "train.precision", "channels_last": "train.channels_last",
    "threads": "train.threads", "name": "name", "out": "out", "label_smoothing": "train.label_smoothing",
    "minutes": "train.budget_minutes",
}
# where-it-runs settings that may accompany --resume
RESUME_OK = {"data_root", "device", "threads"}


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", metavar="PATH", help="data folder (default: $CNNLAB_DATA, else ~/.cache/cnnlab)")
    p.add_argument("--threads", type=int, help="compute threads (default and maximum: available cores)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto)")


def build_parser() -> argparse.ArgumentParser:
    from . import models

    parser = _Parser(prog="cnnlab", description="Train, compare and explain convolutional networks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a classifier and write a run directory",
                       description="Train a classifier. Any config field can be set as KEY=VALUE, e.g. "
                                   "optim.lr=0.01 model.batchnorm=true data.augment.flip=true.")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (dotted keys)")
    t.add_argument("--config", metavar="FILE", help="YAML config file, or a preset name (fast89, course-cnn, ...)")
    t.add_argument("--model", help=f"network: {', '.join(models.list_models())}")
    t.add_argument("--epochs", type=float)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--optimizer", help="sgd | rmsprop | adam | adamw | muon")
    t.add_argument("--schedule", help="constant | step | cosine | onecycle | linear | plateau")
    t.add_argument("--label-smoothing", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--limit-train", type=int, metavar="N", help="train on the first N training images")
    t.add_argument("--val-size", type=int, metavar="N", help="validation images carved from training (0 = none)")
    t.add_argument("--minutes", type=float, metavar="M",
                   help="fit the whole run into M minutes on this machine (the recipe is stretched to fit)")
    t.add_argument("--precision", help="auto (default: bf16 where the hardware has it natively) | fp32 | bf16")
    t.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory format (default: auto, on)")
    t.add_argument("--name", help="run name (default directory: runs/NAME-TIMESTAMP)")
    t.add_argument("--out", metavar="RUN_DIR", help="run directory to create")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch)")
    t.add_argument("--detect-anomaly", action="store_true",
                   help="debug a loss that turns NaN: name the operation that produced it (slow)")
    _add_run_flags(t)

    _add_transfer_commands(sub)

    e = sub.add_parser("evaluate", help="test-set accuracy, per-class accuracy and confusion matrix of a run")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--weights", choices=["best", "last"], default="best")
    e.add_argument("--data", metavar="PATH", help="evaluate on another labelled dataset (classes matched by name)")
    e.add_argument("--layout", default="auto", help="layout of --data: auto | imagefolder | terrassa | csv")
    _add_run_flags(e)

    pr = sub.add_parser("predict", help="top-k classes of images with a trained run's model")
    pr.add_argument("run_dir", metavar="RUN_DIR")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    pr.add_argument("--top-k", type=int, default=5)
    pr.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pr.add_argument("--threads", type=int)
    pr.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto)")

    r = sub.add_parser("report", help="a self-contained HTML report of run directories (opens offline)")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    r.add_argument("-o", "--out", metavar="OUT_DIR", required=True, help="where index.html and assets/ go")
    r.add_argument("--title", default="cnnlab report")
    r.add_argument("--course", action="store_true",
                   help="lay it out as the course write-up: its five tasks in order, its published figures "
                        "beside cnnlab's (each linked to its run)")

    from .serve.run import add_arguments as add_serve_arguments  # every flag from ServeSettings (no web import)

    add_serve_arguments(sub.add_parser("serve", help="a local web app: runs and reports, classify and stylize "
                                                     "uploads"))

    co = sub.add_parser("course", help="reproduce the course's five tasks in a time budget, then its report",
                        description="Every experiment of the course's write-up as a plan of ordinary cnnlab runs, "
                                    "each with its share of --minutes; resumable (the same command continues it); "
                                    "ends with OUT/report/index.html and OUT/course.json.")
    co.add_argument("--minutes", type=float, default=60.0, help="the whole course's budget (default 60)")
    co.add_argument("--terrassa", metavar="PATH", help="the building dataset (default: the scenes dataset under "
                                                       "the data root, standing in for Terrassa Buildings 900)")
    co.add_argument("--content-dir", metavar="DIR", help="photos for the style network (default: the building "
                                                         "dataset's training photos)")
    co.add_argument("--styles", nargs="+", metavar="IMG", help="paintings (default: starry_night.jpg of the data "
                                                               "root); the first trains the style network")
    co.add_argument("--out", metavar="DIR", default="runs/course", help="course folder (default runs/course)")
    co.add_argument("--full", action="store_true", help="the course's own epochs instead of a budget (a GPU job)")
    co.add_argument("--limit-train", type=int, metavar="N", help="CIFAR-10 runs train on N images (quick looks)")
    co.add_argument("--style-size", type=int, default=256, help="style images' side in pixels (default 256)")
    co.add_argument("--data-root", metavar="PATH", help="data folder (default: $CNNLAB_DATA, else ~/.cache/cnnlab)")

    c = sub.add_parser("compare", help="one table and plot over runs (CIFAR, transfer, features, finetune)")
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    c.add_argument("--course", action="store_true", help="add the course's published transfer figures")
    c.add_argument("--out", metavar="DIR", help="where comparison.md/.csv/.png go (default runs/compare-TIME)")

    a = sub.add_parser("ablate", help="run a grid of configs and compare them",
                       description="Run every config of a grid file (resumable) and write comparison.csv/.md/.png.")
    a.add_argument("grid", metavar="GRID.yaml")
    a.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides applied to every run")
    a.add_argument("--out", metavar="DIR", help="output folder (default runs/ablate-NAME)")
    a.add_argument("--max-epochs", type=float, metavar="N", help="cap every run at N epochs")
    a.add_argument("--minutes", type=float, metavar="M",
                   help="fit each run into M minutes, its recipe stretched to fit (annealed)")
    a.add_argument("--max-minutes", type=float, metavar="M",
                   help="cut each run after M minutes of training (not annealed: for truncation studies)")
    a.add_argument("--only", nargs="+", metavar="RUN", help="run only these runs of the grid")
    a.add_argument("--list", action="store_true", help="list the runs and their settings, run nothing")
    a.add_argument("--workers", type=int, default=1, metavar="N",
                   help="run N grid points at once, each in its own process with its share of the cores (or "
                        "one GPU each); results as a serial grid's with the same threads per run")
    a.add_argument("--no-progress", action="store_true")
    _add_run_flags(a)

    _add_visualize(sub)
    _add_stylize(sub)
    sub.add_parser("models", help="list the registered networks")
    d = sub.add_parser("doctor", help="this machine's CPU/GPU, the precision auto picks, a throughput probe",
                       description="What to paste into a bug report: CPU capability, native bf16, cores, the "
                                   "precision and memory format that auto picks, a short throughput probe of "
                                   "cnn4 and fastnet in fp32 and bf16, library versions.")
    d.add_argument("--seconds", type=float, default=10.0, help="length of the throughput probe (0: skip it)")
    d.add_argument("--json", action="store_true", help="print JSON instead of text")
    d.add_argument("--threads", type=int)
    d.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto)")
    return parser


def _add_transfer_commands(sub) -> None:
    """transfer / features / finetune: the three ways of training on a small dataset of your own."""
    ways = {
        "transfer": ("a cnnlab run's network with a new classifier, the rest frozen", "transfer.yaml"),
        "features": ("an ImageNet backbone's features (cached) + a softmax classifier", "features.yaml"),
        "finetune": ("fine-tune the last N layers of a pretrained ImageNet backbone", "finetune.yaml"),
    }
    for name, (text, config) in ways.items():
        p = sub.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]}. Defaults: the preset {config} (configs/{config}); "
                           f"any config field can be set as KEY=VALUE.")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (dotted keys)")
        p.add_argument("--data", metavar="PATH", required=True,
                       help="the dataset: class folders, a Terrassa-layout folder, or a CSV of path,label")
        p.add_argument("--layout", help="auto | imagefolder | terrassa | csv (default: detected)")
        p.add_argument("--val-fraction", type=float, help="held out for validation when the data has no val split")
        p.add_argument("--test-fraction", type=float, help="held out for testing when the data has no test split")
        if name == "transfer":
            p.add_argument("--from", dest="from_run", metavar="RUN_DIR", required=True, help="a trained cnnlab run")
            p.add_argument("--unfreeze", action="store_true", help="train every layer, not only the classifier")
        else:
            p.add_argument("--backbone", help="registered ImageNet model (default efficientnet_lite0)")
            p.add_argument("--weights", metavar="FILE", help="the backbone's weights from a local file")
        if name == "finetune":
            p.add_argument("--trainable-layers", metavar="N", help="last N parameterised layers, a block, or all")
            p.add_argument("--backbone-lr-factor", type=float, help="backbone lr = lr x this (default 0.1)")
            p.add_argument("--head-epochs", type=float, help="train the head alone first for this many epochs")
            p.add_argument("--early-stopping", type=int, metavar="P", help="stop after P epochs without progress")
            p.add_argument("--head-from", metavar="RUN_DIR",
                           help="start the classifier from a features run's (same backbone and classes)")
        p.add_argument("--config", metavar="FILE",
                       help=f"base config: a YAML file or a preset name (default {config[:-5]})")
        for flag, kind in (("--epochs", float), ("--lr", float), ("--batch-size", int), ("--seed", int),
                           ("--minutes", float)):
            p.add_argument(flag, type=kind)
        p.add_argument("--name")
        p.add_argument("--out", metavar="RUN_DIR")
        p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
        p.add_argument("--no-progress", action="store_true")
        p.add_argument("--cache-dir", metavar="DIR", help="where decoded images and features are cached")
        _add_run_flags(p)


def _add_visualize(sub) -> None:
    v = sub.add_parser("visualize", help="filters, classes, saliency and Grad-CAM of a network",
                       description="Look inside a network: a cnnlab run (--run RUN_DIR) or an ImageNet model "
                                   "(--model NAME, e.g. efficientnet_lite0).")
    kinds = v.add_subparsers(dest="kind", required=True, parser_class=_Parser)

    def common(p):
        p.add_argument("--run", metavar="RUN_DIR", help="a cnnlab training run")
        p.add_argument("--model", help="an ImageNet model: efficientnet_lite0, vgg16, resnet50, ...")
        p.add_argument("--weights", metavar="FILE", help="weights for --model (default: its pretrained ones; none)")
        p.add_argument("--out", metavar="DIR", help="output folder (default runs/visualize-KIND-TIMESTAMP)")
        p.add_argument("--threads", type=int)

    def maximizing(p):
        p.add_argument("--steps", type=int, default=256, help="optimization steps per octave")
        p.add_argument("--size", type=int, help="image side (default: the model's input size)")
        p.add_argument("--param", choices=["fourier", "pixel"], default="fourier")
        p.add_argument("--octaves", type=int, default=1)
        p.add_argument("--lr", type=float, default=0.05)
        p.add_argument("--tv", type=float, default=0.05, help="total-variation weight")
        p.add_argument("--l2", type=float, default=0.01, help="L2 weight")
        p.add_argument("--seed", type=int, default=0)

    f = kinds.add_parser("filters", help="inputs that maximize each filter of a layer, as one grid")
    common(f)
    maximizing(f)
    f.add_argument("--layer", help="layer name (see: cnnlab visualize layers)")
    f.add_argument("--filters", metavar="LIST", help="e.g. 0-63 or 0,5,9-12 (default: the first 64)")
    f.add_argument("--show-weights", action="store_true", help="draw the first layer's kernels as RGB tiles")
    c = kinds.add_parser("classes", help="inputs that maximize class logits")
    common(c)
    maximizing(c)
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


def _overrides(pairs: list[str]) -> dict[str, Any]:
    from .config import parse_override

    return dict(parse_override(p) for p in pairs)


def _print_result(result) -> None:
    if result.summary:
        s = result.summary
        figures = [f"{label} {100 * s[key]:.2f}%" for label, key in (("test accuracy", "test_accuracy"),
                                                                      ("best val accuracy", "best_val_accuracy"))
                   if s.get(key) is not None]
        print(f"{', '.join(figures) or 'no evaluation'}, {s['epochs']} epochs in {s['train_seconds'] / 60:.1f} min"
              f"\nrun directory: {result.run_dir}")


TRANSFER_FLAGS = {"layout": "data.layout", "val_fraction": "data.val_fraction", "test_fraction": "data.test_fraction",
                  "epochs": "train.epochs", "lr": "optim.lr", "batch_size": "train.batch_size", "seed": "train.seed",
                  "minutes": "train.budget_minutes", "name": "name", "out": "out", "cache_dir": "data.cache_dir",
                  "backbone": "model.name", "weights": "model.weights", "trainable_layers": "transfer.trainable",
                  "backbone_lr_factor": "transfer.backbone_lr_factor", "head_epochs": "transfer.head_epochs",
                  "early_stopping": "transfer.early_stopping", "from_run": "transfer.from_run",
                  "head_from": "transfer.head_from",
                  "data_root": "data.root", "threads": "train.threads", "device": "train.device"}


def cmd_transfer(args: argparse.Namespace) -> int:
    """transfer / features / finetune: a run on the given dataset from the command's default config."""
    from . import config as config_mod
    from .classify import train

    overrides = {"data.dataset": "folder", "data.path": args.data}
    for flag, key in TRANSFER_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = value
    if getattr(args, "unfreeze", False):
        overrides["transfer.trainable"] = "all"
    if args.no_progress:
        overrides["train.progress"] = False
    overrides.update(_overrides(args.overrides))
    base = args.config or args.command  # the shipped preset of that name
    if args.resume:
        cfg = config_mod.resolve(f"{args.resume}/config.yaml", {k: v for k, v in overrides.items() if k in (
            "data.root", "train.device", "train.threads", "train.progress", "data.cache_dir")})
        cfg.out = args.resume
    else:
        cfg = config_mod.resolve(base, overrides)
    from .engine.budget import process_start

    _print_result(train(cfg, resume=args.resume, started=process_start()))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import json

    from .classify import predict_images

    if args.top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {args.top_k}")
    results = predict_images(args.run_dir, args.images, top_k=args.top_k, threads=args.threads,
                             device=args.device or "auto")
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for record in results:
        print(record["image"])
        for p in record["predictions"]:
            print(f"  {100 * p['probability']:6.2f}%  {p['class_name']}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve.run import main

    return main(args)


def cmd_course(args: argparse.Namespace) -> int:
    from .course import CourseSettings, run_course

    if args.limit_train is not None and args.limit_train < 1 or args.style_size < 16:
        raise UserError(f"--limit-train must be 1 or more and --style-size 16 or more, got {args.limit_train} "
                        f"and {args.style_size}")
    run_course(CourseSettings(minutes=args.minutes, out=args.out, terrassa=args.terrassa,
                              content_dir=args.content_dir, styles=list(args.styles or []), full=args.full,
                              data_root=args.data_root, limit_train=args.limit_train, style_size=args.style_size))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report.html import write_report

    index = write_report(args.run_dirs, args.out, title=args.title, course=args.course)
    print(f"report: {index}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import time

    from .report.compare import compare

    out = args.out or f"runs/compare-{time.strftime('%Y%m%d-%H%M%S')}"
    table = compare(args.run_dirs, out, course=args.course)
    print(table)
    print(f"comparison written to {out}/comparison.md, comparison.csv, comparison.png")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from . import config as config_mod
    from .classify import train

    overrides = _overrides(args.overrides)
    for flag, key in TRAIN_SHORTCUTS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    if args.no_progress:
        overrides["train.progress"] = False
    if args.detect_anomaly:
        overrides["train.detect_anomaly"] = True
    if args.resume:
        changes = [f for f, k in TRAIN_SHORTCUTS.items() if getattr(args, f) is not None and f not in RESUME_OK]
        if args.config is None and not args.overrides and not changes:
            # Plain resume: the run's own config, with this invocation's where-it-runs settings.
            runtime = {k: v for k, v in overrides.items()
                       if k in ("data.root", "train.device", "train.threads", "train.progress",
                                "train.detect_anomaly")}
            cfg = config_mod.resolve(f"{args.resume}/config.yaml", runtime)
            cfg.out = args.resume
        else:
            cfg = config_mod.resolve(args.config, overrides)
            cfg.out = cfg.out or args.resume
    else:
        cfg = config_mod.resolve(args.config, overrides)
    from .engine.budget import process_start

    _print_result(train(cfg, resume=args.resume, started=process_start()))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .classify import evaluate

    ev = evaluate(args.run_dir, weights=args.weights, data_root=args.data_root, threads=args.threads,
                  device=args.device or "auto", data_path=args.data, layout=args.layout)
    print(f"test accuracy {100 * ev['test_accuracy']:.2f}% on {ev['test_images']} images")
    for name, acc in ev["per_class_accuracy"].items():
        print(f"  {name:>12s} {100 * acc:6.2f}%")
    which = "evaluation.json and confusion_matrix.png" if args.data is None else \
        "evaluation-other.json and confusion_matrix-other.png"
    print(f"wrote {args.run_dir}/{which}")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from .ablate import ablate, plan

    overrides = _overrides(args.overrides)
    for flag, key in (("data_root", "data.root"), ("threads", "train.threads"), ("device", "train.device")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    if args.no_progress:
        overrides["train.progress"] = False
    if args.list:
        _, out_dir, planned = plan(args.grid, args.out, max_epochs=args.max_epochs, max_minutes=args.max_minutes,
                                   minutes=args.minutes, overrides=overrides)
        for p in planned:
            settings = ", ".join(f"{k}={v}" for k, v in p.settings.items())
            print(f"{p.name}: {settings} (epochs {p.config.train.epochs:g}) -> {p.config.out}")
        return 0
    out_dir = ablate(args.grid, args.out, max_epochs=args.max_epochs, max_minutes=args.max_minutes,
                     minutes=args.minutes, only=args.only, overrides=overrides, workers=args.workers)
    print((out_dir / "comparison.md").read_text())
    print(f"comparison written to {out_dir}/comparison.csv, comparison.md, comparison.png")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    import json

    from .doctor import doctor, format_report

    if args.seconds < 0:
        raise UserError(f"--seconds must be 0 (no probe) or more, got {args.seconds:g}")
    facts = doctor(args.seconds, args.threads, args.device or "auto")
    print(json.dumps(facts, indent=2) if args.json else format_report(facts))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models import registry

    for name in registry.list_models():
        print(f"{name:20s} {registry.entry(name).description}")
    return 0


def _add_stylize(sub) -> None:
    st = sub.add_parser("stylize", help="neural style transfer: optimize an image (Gatys et al.)",
                        description="Neural style transfer. optimize: the pixels of one image are optimized to "
                                    "keep a photo's content and take a painting's style.")
    kinds = st.add_subparsers(dest="kind", required=True, parser_class=_Parser)
    o = kinds.add_parser("optimize", help="optimize one image (Gatys et al.): content + style + total variation")
    o.add_argument("--content", metavar="IMG", required=True, help="the photo whose content is kept")
    o.add_argument("--style", metavar="IMG", action="append", required=True,
                   help="a painting (repeat for a mix of styles, see --style-weights)")
    o.add_argument("--style-weights", metavar="W1,W2", help="one weight per --style image (default: equal)")
    o.add_argument("--content-weight", type=float, default=1.0, help="content loss weight (default 1)")
    o.add_argument("--content-weights", metavar="W1,W2,...",
                   help="run once per content weight and write one comparison grid (e.g. 0.3,1,3)")
    o.add_argument("--style-weight", type=float, default=10.0, help="style loss weight (default 10)")
    o.add_argument("--tv-weight", type=float, default=10.0, help="total-variation weight (default 10)")
    o.add_argument("--raw-losses", action="store_true",
                   help="classic unnormalized loss terms (weights then need tuning per network, e.g. style 1e4)")
    o.add_argument("--size", type=int, default=256, help="output's longest side in pixels (default 256)")
    o.add_argument("--iterations", type=int, default=300)
    o.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs")
    o.add_argument("--lr", type=float, default=0.02, help="Adam's step size (default 0.02)")
    o.add_argument("--init", choices=["content", "noise"], default="content", help="start image (default content)")
    o.add_argument("--preserve-colors", action="store_true", help="keep the photo's colours (luminance-only)")
    o.add_argument("--snapshot-every", type=int, default=0, metavar="K",
                   help="keep the image every K iterations: evolution.png")
    o.add_argument("--loss-net", help="vgg19 | vgg16 | efficientnet_lite0 | another ImageNet model (default: "
                                      "vgg19 where its weights are available, else efficientnet_lite0)")
    o.add_argument("--weights", metavar="FILE", help="the loss network's weights from a local file")
    o.add_argument("--content-layers", metavar="L1,L2", help="override the loss network's content layers")
    o.add_argument("--style-layers", metavar="L1[:W],L2[:W]", help="override its style layers (optional weights)")
    o.add_argument("--smooth", action=argparse.BooleanOptionalAction, default=None,
                   help="Wang et al.'s softmax smoothing of activations (default: per loss network)")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--out", metavar="DIR", help="output folder (default runs/stylize-TIMESTAMP)")
    o.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    o.add_argument("--no-progress", action="store_true")
    o.add_argument("--threads", type=int)
    o.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto)")

    t = kinds.add_parser("train", help="train a fast style network for one painting (Johnson et al.)",
                         description="Train a feed-forward style network on a folder of photos; resumable; a preview "
                                     "of fixed photos after every epoch (evolution.png).")
    t.add_argument("--style", metavar="IMG", help="the painting (required unless --resume)")
    t.add_argument("--content-dir", metavar="DIR", help="photos to train on (any depth), e.g. a dataset folder")
    t.add_argument("--image-size", type=int, default=256, help="training crop side (default 256)")
    t.add_argument("--style-size", type=int, default=256, help="painting's longest side for its Gram matrices")
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--epochs", type=float, default=2.0)
    t.add_argument("--iterations", type=int, default=0, help="train this many steps instead of --epochs")
    t.add_argument("--minutes", type=float, default=0.0, metavar="M",
                   help="stop after M minutes of training (a time budget; previews and checkpoint kept)")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--content-weight", type=float, default=3.0,
                   help="content loss weight (default 3: with 1, a network trained 30 minutes loses the photo's "
                        "subject under the painting; benchmarks/results/style-network-cw3-*.md)")
    t.add_argument("--style-weight", type=float, default=10.0)
    t.add_argument("--tv-weight", type=float, default=10.0)
    t.add_argument("--width", type=int, default=32, help="channels of the first layer (default 32, as the paper)")
    t.add_argument("--residual-blocks", type=int, default=5)
    t.add_argument("--loss-net", help="vgg19 | vgg16 | efficientnet_lite0 (default: vgg19 where available)")
    t.add_argument("--weights", metavar="FILE", help="the loss network's weights from a local file")
    t.add_argument("--preview-every", type=int, default=0, metavar="N", help="also preview every N steps")
    t.add_argument("--limit-images", type=int, default=0, metavar="N", help="train on the first N photos")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    t.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/style-NAME-TIMESTAMP)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted style training run")
    t.add_argument("--cache-dir", metavar="DIR", help="where the decoded photos are cached")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--threads", type=int)
    t.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto)")

    a = kinds.add_parser("apply", help="stylize an image, a folder or a video with a trained style network")
    a.add_argument("--model", metavar="MODEL", required=True, help="a style training run directory or its weights")
    a.add_argument("--input", metavar="IMG|DIR|VIDEO", required=True)
    a.add_argument("--out", metavar="PATH", required=True, help="an image, a folder, or a video file name")
    a.add_argument("--batch-size", type=int, default=8, help="video frames per batch")
    a.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    a.add_argument("--no-progress", action="store_true")
    a.add_argument("--threads", type=int)
    a.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto)")


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
    import time

    from . import style

    if args.kind == "train":
        return _stylize_train(args)
    if args.kind == "apply":
        info = style.apply(args.model, args.input, args.out, device=args.device or "auto", threads=args.threads,
                           precision=args.precision, batch=args.batch_size, progress=not args.no_progress)
        if "frames" in info:
            print(f"{info['frames']} frames ({info['width']}x{info['height']}, {info['frame_rate']:g} fps"
                  f"{', audio copied' if info['audio'] else ''}) in {info['seconds']:.1f} s "
                  f"({info['frames_per_second']:.1f} frames/s) -> {info['output']}")
        else:
            print(f"{info['images']} image(s) in {info['seconds']:.1f} s -> {', '.join(info['outputs'][:3])}"
                  f"{' ...' if info['images'] > 3 else ''}")
        return 0
    out = args.out or f"runs/stylize-{time.strftime('%Y%m%d-%H%M%S')}"
    mix = _number_list(args.style_weights, "--style-weights") or [1.0] * len(args.style)
    settings = style.OptimizeSettings(
        size=args.size, iterations=args.iterations, optimizer=args.optimizer, lr=args.lr,
        content_weight=args.content_weight, style_weight=args.style_weight, tv_weight=args.tv_weight,
        init=args.init, style_mix=mix, preserve_colors=args.preserve_colors, snapshot_every=args.snapshot_every,
        seed=args.seed)
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


def _stylize_train(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from . import style

    if args.resume:
        summary = style.train(style.StyleTrainSettings(), args.resume, resume=True, device=args.device or "auto",
                              threads=args.threads, cache_dir=args.cache_dir, progress=not args.no_progress)
    else:
        if not args.style or not args.content_dir:
            raise UserError("--style IMG and --content-dir DIR are required (or --resume RUN_DIR)")
        settings = style.StyleTrainSettings(
            style=args.style, content_dir=args.content_dir, image_size=args.image_size, style_size=args.style_size,
            batch_size=args.batch_size, epochs=args.epochs, iterations=args.iterations, minutes=args.minutes,
            lr=args.lr, content_weight=args.content_weight, style_weight=args.style_weight, tv_weight=args.tv_weight,
            width=args.width, residual_blocks=args.residual_blocks, loss_net=args.loss_net or "",
            loss_net_weights=args.weights, preview_every=args.preview_every, limit_images=args.limit_images,
            seed=args.seed, precision=args.precision)
        out = args.out or f"runs/style-{Path(args.style).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        summary = style.train(settings, out, device=args.device or "auto", threads=args.threads,
                              cache_dir=args.cache_dir, progress=not args.no_progress)
    print(f"loss {summary['first_epoch_loss']:.4f} (first epoch) -> {summary['final_loss']:.4f} (last), "
          f"{summary['steps']} steps in {summary['train_seconds'] / 60:.1f} min\nstyle network: {summary['weights']}")
    return 0


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

    from . import visualize
    from .engine.device import configure_threads

    configure_threads(args.threads)
    subject = visualize.load_subject(run=args.run, model=args.model, weights=args.weights)
    out = args.out or f"runs/visualize-{args.kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.kind == "layers":
        for name, shape in visualize.spatial_conv_layers(subject.model, subject.example_input()):
            print(f"{name:40s} {list(shape)}")
        return 0
    if args.kind in ("filters", "classes"):
        settings = visualize.MaximizeSettings(steps=args.steps, image_size=args.size, param=args.param,
                                              octaves=args.octaves, lr=args.lr, tv_weight=args.tv,
                                              l2_weight=args.l2, seed=args.seed)
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


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "ablate": cmd_ablate, "visualize": cmd_visualize,
            "models": cmd_models, "doctor": cmd_doctor, "transfer": cmd_transfer, "features": cmd_transfer,
            "finetune": cmd_transfer, "predict": cmd_predict, "compare": cmd_compare,
            "stylize": cmd_stylize, "report": cmd_report, "serve": cmd_serve,
            "course": cmd_course}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse, letting KEY=VALUE overrides sit anywhere among the flags."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except KeyboardInterrupt:
        print("cnnlab: interrupted", file=sys.stderr)
        return 130
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        kind = "error" if exc.exit_code == EXIT_USER_ERROR else "stopped"
        print(f"cnnlab {args.command}: {kind}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"cnnlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the disk or the file system said no: the file and what to do, no traceback
        print(f"cnnlab {args.command}: error: {os_error_message(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR


def os_error_message(exc: OSError) -> str:
    """One line for a failed read or write: what failed, on which file, and what to do."""
    import errno

    where = f" ({exc.filename})" if exc.filename else ""
    advice = {errno.ENOSPC: "the disk is full; free some space (earlier results are intact) and resume",
              errno.EDQUOT: "the disk quota is used up; free some space and resume",
              errno.EROFS: "the file system is read-only; choose another --out",
              errno.EACCES: "permission denied; choose a folder you can write to",
              errno.EPERM: "operation not permitted; choose a folder you can write to"}.get(
        exc.errno, "check the path and the disk")
    return f"{exc.strerror or exc}{where}: {advice}"


if __name__ == "__main__":
    sys.exit(main())
