"""cnnlab export: a trained run's network as an ONNX or TorchScript file, its preprocessing inside."""

from __future__ import annotations

import argparse

from ._common import add_run_flags


def add_export(sub) -> None:
    from ..export import FORMATS

    e = sub.add_parser("export", help="a trained run's network as an ONNX or TorchScript file, for use outside cnnlab",
                       description="Write a classifier run (train, transfer, features, finetune) or a style-network "
                                   "run as one ONNX or TorchScript file in fp32, with a free batch axis and the "
                                   "preprocessing (resize, crop, mean, std), class names, run kind and versions in "
                                   "its metadata; then run the file and print its largest difference from the "
                                   "run's model. `cnnlab predict FILE IMAGE...` uses it.")
    e.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of a finished (or interrupted) run")
    e.add_argument("--format", choices=list(FORMATS), default="onnx", help="file format (default onnx)")
    e.add_argument("--out", metavar="FILE", help="the file to write (default RUN_DIR/export/model.onnx or model.pt)")
    e.add_argument("--json", action="store_true", help="print what was written as JSON")
    add_run_flags(e, data_root=False, device=False)
    e.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    import json

    from ..engine.device import configure_threads
    from ..export import export

    configure_threads(args.threads)
    info = export(args.run_dir, args.format, args.out)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    what = f"{len(info['classes'])} classes" if info["task"] == "classifier" else "style network"
    shape = "x".join("N" if v == "batch" else str(v) for v in info["input_shape"])
    print(f"wrote {info['file']} ({info['format']}, {info['kind']} run, {what}, input {shape}, "
          f"{info['bytes'] / 1e6:.1f} MB)")
    if info["max_abs_diff"] is None:
        print("not checked: onnxruntime is not installed (pip install 'cnnlab[onnx]')")
    else:
        checked = "x".join(map(str, info["checked_on"]))
        within = "exactly" if info["max_abs_diff"] == 0 else f"within {info['max_abs_diff']:.2g}"
        print(f"checked: the file reproduces the run's model {within} (largest absolute difference on a random "
              f"{checked} input)")
    return 0
