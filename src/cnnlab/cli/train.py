"""cnnlab train, evaluate, predict: a classifier's run, its test figures, its predictions (from the run or its
exported file)."""

from __future__ import annotations

import argparse

from ..errors import UserError
from ._common import add_overrides, add_run_flags
from ._run import add_config_flags, run_config, train_and_print

TRAIN_FLAGS = ["--model", "--epochs", "--batch-size", "--lr", "--optimizer", "--schedule", "--label-smoothing",
               "--seed", "--limit-train", "--val-size", "--minutes", "--precision", "--channels-last", "--name",
               "--out", "--no-progress", "--detect-anomaly", "--tensorboard", "--data-root", "--threads", "--device",
               "--cache-dir"]


def add_train(sub) -> None:
    from .. import models

    t = sub.add_parser("train", help="train a classifier and write a run directory",
                       description="Train a classifier. Any config field can be set as KEY=VALUE, e.g. "
                                   "optim.lr=0.01 model.batchnorm=true data.augment.flip=true. With --resume, only "
                                   "where it runs may change (--data-root, --threads, --device, --no-progress, "
                                   "--cache-dir, --detect-anomaly).")
    add_overrides(t)
    t.add_argument("--config", metavar="FILE", help="YAML config file, or a preset name (fast89, course-cnn, ...)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    add_config_flags(t, TRAIN_FLAGS, helps={"--model": f"network: {', '.join(models.list_models())}"})
    t.set_defaults(handler=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    return train_and_print(run_config(args, args.config), args.resume)


def add_evaluate(sub) -> None:
    e = sub.add_parser("evaluate", help="test-set accuracy, per-class accuracy and confusion matrix of a run")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--weights", choices=["best", "last"], default="best")
    e.add_argument("--data", metavar="PATH", help="evaluate on another labelled dataset (classes matched by name)")
    e.add_argument("--layout", default="auto", help="layout of --data: auto | imagefolder | terrassa | csv")
    e.add_argument("--out", metavar="DIR", help="where the evaluation's files go (default: the run directory)")
    add_run_flags(e)
    e.set_defaults(handler=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..classify import evaluate

    ev = evaluate(args.run_dir, weights=args.weights, data_root=args.data_root, threads=args.threads,
                  device=args.device or "auto", data_path=args.data, layout=args.layout, out=args.out)
    print(f"test accuracy {100 * ev['test_accuracy']:.2f}% on {ev['test_images']} images")
    for name, acc in ev["per_class_accuracy"].items():
        print(f"  {name:>12s} {100 * acc:6.2f}%")
    if args.out:
        print(f"wrote {Path(args.out) / 'evaluation.json'}, confusion_matrix.png and summary.json")
        return 0
    which = "evaluation.json and confusion_matrix.png" if args.data is None else \
        "evaluation-other.json and confusion_matrix-other.png"
    print(f"wrote {Path(args.run_dir) / which}")
    return 0


def add_predict(sub) -> None:
    pr = sub.add_parser("predict", help="top-k classes of images with a trained run's model or its exported file",
                        description="Top-k classes of images with a classifier run's model (in fp32), or with a file "
                                    "written by `cnnlab export` (.onnx run by ONNX Runtime, .pt by torch.jit; the "
                                    "preprocessing and class names come from the file).")
    pr.add_argument("run_dir", metavar="RUN_DIR|FILE", help="a classifier run folder, or an exported .onnx / .pt file")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    pr.add_argument("--top-k", type=int, default=5)
    pr.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_run_flags(pr, data_root=False)
    pr.set_defaults(handler=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    import json

    from ..classify import predict_images

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
