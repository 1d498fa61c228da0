"""ExportMeta: what an exported model file says about itself, the one definition of that format.

A file written by `cnnlab export` is used outside cnnlab, where the run folder is not: the preprocessing its
input needs (resize, crop, mean, std), its class names, what its input and output are, and where it came from
travel inside it, as one JSON document:

- ONNX: ``metadata_props`` entry ``cnnlab`` (ONNX Runtime: ``session.get_modelmeta().custom_metadata_map``);
- TorchScript: the extra file ``cnnlab.json`` (``torch.jit.load(path, _extra_files={"cnnlab.json": ""})``).

`cnnlab predict FILE` reads it back here and feeds the file exactly what the run's own model gets
(RunMeta.view(): the shorter side resized to `resize`, a center crop to `crop`, RGB scaled to [0, 1],
then (x - mean) / std). A style network takes RGB in [0, 1] of any size (each side at least `min_side`) and
gives the stylized image in [0, 1], same size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError
from ..runs import RunMeta

FORMAT = "cnnlab-export"
FORMAT_VERSION = 1
ONNX_KEY = "cnnlab"
"""The ONNX metadata_props key holding the JSON."""
TORCHSCRIPT_FILE = "cnnlab.json"
"""The TorchScript archive's extra file holding the JSON."""
TASKS = ("classifier", "style")
INPUT_NAME = "image"
OUTPUT_NAMES = {"classifier": "logits", "style": "stylized"}
INPUT_VALUES = {"classifier": "RGB scaled to [0, 1], resized and center-cropped, then (x - mean) / std",
                "style": "RGB in [0, 1]"}
OUTPUT_VALUES = {"classifier": "one logit per class (softmax gives the probabilities)",
                 "style": "the stylized RGB image in [0, 1], the input's size"}


@dataclass(frozen=True)
class ExportMeta:
    """An exported model's contract (see the module docstring); `to_json` / `from_json` are its only codec."""

    task: str
    """classifier | style."""
    kind: str
    """The run's kind: train, features, finetune, transfer (classifiers) or style-network."""
    input_shape: tuple[int | str, ...]
    """[batch, 3, H, W]; a name (batch, height, width) marks a dynamic axis."""
    classes: tuple[str, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    resize: int | None = None
    """The shorter side a photo is resized to before its center crop to `crop` (classifiers)."""
    crop: int | None = None
    epoch: float | None = None  # fractional where a time budget chose weights from inside an epoch (RunMeta)
    style: str | None = None
    """The painting a style network was trained on (its file name)."""
    network: dict[str, Any] = field(default_factory=dict)
    """What rebuilds a style network (width, residual blocks)."""
    min_side: int | None = None
    """The smallest image side a style network takes."""
    run: str = ""
    """The run folder it was exported from."""
    cnnlab_version: str = ""
    torch_version: str = ""

    @property
    def input_name(self) -> str:
        return INPUT_NAME

    @property
    def output_name(self) -> str:
        return OUTPUT_NAMES[self.task]

    def run_meta(self) -> RunMeta:
        """The classifier contract as the run holds it; .view() is the photo preprocessing predict applies."""
        if self.task != "classifier":
            raise UserError(f"the exported file is a {self.task} network, not a classifier; "
                            f"`cnnlab predict` takes a classifier (a style network: apply it with its run folder)")
        side = int(self.crop or self.input_shape[-1])
        return RunMeta(classes=tuple(self.classes), image_shape=(3, side, side), mean=tuple(self.mean),
                       std=tuple(self.std), epoch=self.epoch, resize=self.resize)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: the fields, plus what a reader outside cnnlab needs spelled out."""
        record: dict[str, Any] = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "task": self.task, "kind": self.kind,
            "input": {"name": self.input_name, "shape": list(self.input_shape), "dtype": "float32",
                      "layout": "NCHW", "values": INPUT_VALUES[self.task]},
            "output": {"name": self.output_name, "values": OUTPUT_VALUES[self.task]},
            "run": self.run, "cnnlab_version": self.cnnlab_version, "torch_version": self.torch_version}
        if self.task == "classifier":
            record.update(classes=list(self.classes), resize=self.resize, crop=self.crop, mean=list(self.mean),
                          std=list(self.std), epoch=self.epoch)
        else:
            record.update(style=self.style, network=dict(self.network), min_side=self.min_side)
        return record

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str | bytes | None, where: str) -> ExportMeta:
        """Parse the document of a file (`where` names it in errors)."""
        advice = "export the run with `cnnlab export RUN_DIR` (or pass the run folder itself)"
        if not text:
            raise UserError(f"{where} holds no cnnlab metadata (preprocessing, classes); {advice}")
        try:
            d = json.loads(text)
            if d.get("format") != FORMAT:
                raise ValueError
            if int(d.get("format_version", 0)) > FORMAT_VERSION:
                raise UserError(f"{where} was written by a newer cnnlab ({d.get('cnnlab_version')}, export format "
                                f"{d['format_version']}); upgrade cnnlab to read it")
            task = d["task"]
            if task not in TASKS:
                raise ValueError
            common = dict(task=task, kind=str(d.get("kind", "")), input_shape=tuple(d["input"]["shape"]),
                          run=str(d.get("run", "")), cnnlab_version=str(d.get("cnnlab_version", "")),
                          torch_version=str(d.get("torch_version", "")))
            if task == "style":
                return cls(**common, style=d.get("style"), network=dict(d.get("network") or {}),
                           min_side=int(d["min_side"]) if d.get("min_side") else None)
            return cls(**common, classes=tuple(str(c) for c in d["classes"]),
                       mean=tuple(float(v) for v in d["mean"]), std=tuple(float(v) for v in d["std"]),
                       resize=int(d["resize"]) if d.get("resize") else None,
                       crop=int(d["crop"]) if d.get("crop") else None,
                       epoch=int(d["epoch"]) if d.get("epoch") is not None else None)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UserError(f"{where} has damaged or foreign metadata under '{ONNX_KEY}'; {advice}") from None
