"""summary.json, typed: what every kind of run reports when it ends, written and read here only.

Every summary.json carries ``kind`` (what wrote it) and ``schema_version`` (how to read it); readers get a
dataclass, never a raw dict, so a figure is named once and a typo is an AttributeError, not a silent None.
The JSON Schema other tools can validate against (cnnlab/schemas/summary.schema.json) is generated from
these dataclasses (runs/schema.py), so it cannot drift from what is written.

Run folders written before summaries were typed (no ``kind``/``schema_version``) still load: their kind is
recovered from their keys, as the readers of that time guessed it, and keys no field declares are kept in
``Summary.unknown``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..errors import UserError
from .files import SUMMARY, RunDir

SCHEMA_VERSION = 1

# Classifier runs: one training path (engine/run.py + classify) in four flavours.
CLASSIFIER_KINDS = ("train", "features", "finetune", "transfer")


@dataclass
class Summary:
    """Fields every summary.json has: what wrote it and where it ran."""

    KINDS: ClassVar[tuple[str, ...]] = ()

    kind: str
    schema_version: int = SCHEMA_VERSION
    name: str | None = None
    git_commit: str | None = None
    torch_version: str | None = None
    device: str | None = None
    threads: int | None = None
    precision: str | None = None
    cpu_class: str | None = None
    total_seconds: float | None = None
    """Wall time of the run, from its process's start (budget runs) or the API call, to summary.json."""

    def __post_init__(self) -> None:
        self.unknown: dict[str, Any] = {}

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (non-finite floats become null when written)."""
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, **self.unknown}

    def get(self, key: str, default: Any = None) -> Any:
        """Like dict.get, for templates and tables that pick fields by name."""
        return self.to_dict().get(key, default)

    def __getitem__(self, key: str) -> Any:
        data = self.to_dict()
        if key not in data:
            raise KeyError(key)
        return data[key]


@dataclass
class ClassifierSummary(Summary):
    """train | features | finetune | transfer: a classifier trained by the one engine."""

    KINDS: ClassVar[tuple[str, ...]] = CLASSIFIER_KINDS

    model: str | None = None
    epochs: int | None = None
    epochs_planned: float | None = None
    steps: int | None = None
    steps_planned: int | None = None
    val_accuracy: float | None = None
    """Of the weights the run keeps (best.safetensors): the best validation epoch's accuracy."""
    best_val_accuracy: float | None = None
    best_epoch: int | None = None
    final_val_accuracy: float | None = None
    test_accuracy: float | None = None
    """Of the kept weights on the test split, measured once at the end (null when the run has no test split
    or train.final_test is off)."""
    test_loss: float | None = None
    test_split: str | None = None
    """Where the test images come from: the dataset's own split, or carved once from train (stratified, seeded)
    before any training or choice; training, early stopping and schedules see train and val only."""
    train_seconds: float | None = None
    actual_seconds: float | None = None
    budget_minutes: float | None = None
    budget: dict[str, Any] | None = None
    planned_seconds: float | None = None
    seed: int | None = None
    train_images: int | None = None
    val_images: int | None = None
    test_images: int | None = None
    channels_last: bool | None = None
    precision_reason: str | None = None
    cpu_capability: str | None = None
    native_bf16: bool | None = None
    tta: str | None = None
    world_size: int | None = None
    stop_reason: str | None = None
    resumed: bool | None = None
    data_checksum: str | None = None
    dataset: str | None = None
    data_source: str | None = None
    layout: str | None = None
    classes: list[str] = field(default_factory=list)
    trainable: str | None = None
    params: int | None = None
    decoded_images: int | None = None
    feature_cache: str | None = None
    feature_dimensions: int | None = None
    feature_backend: str | None = None


@dataclass
class StyleNetworkSummary(Summary):
    """style-network: a feed-forward style network trained for one painting."""

    KINDS: ClassVar[tuple[str, ...]] = ("style-network",)

    style: str | None = None
    photos: int | None = None
    steps: int | None = None
    epochs: int | None = None
    first_epoch_loss: float | None = None
    final_loss: float | None = None
    train_seconds: float | None = None
    stop_reason: str | None = None
    budget_minutes: float | None = None
    loss_net: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    resumed: bool | None = None


@dataclass
class StylizeSummary(Summary):
    """stylize: one photo optimized towards one or more paintings (Gatys et al.)."""

    KINDS: ClassVar[tuple[str, ...]] = ("stylize",)

    method: str = "optimize"
    content: str | None = None
    styles: list[str] = field(default_factory=list)
    initial: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    loss_net: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    seconds_per_iteration: float | None = None
    size: list[int] = field(default_factory=list)
    output: str | None = None
    pictures: dict[str, str] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class VisualizeSummary(Summary):
    """visualize: filters, classes, attribution maps or kernels of a network."""

    KINDS: ClassVar[tuple[str, ...]] = ("visualize",)

    method: str | None = None
    """filters | classes | attribution | weights"""
    model: str | None = None
    source_run: str | None = None
    layer: str | None = None
    targets: list[Any] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    details: str | None = None
    """The method's own record in this folder (e.g. attribution.json), for everything per image."""


@dataclass
class AblationSummary(Summary):
    """ablation: a grid of training runs and their comparison table."""

    KINDS: ClassVar[tuple[str, ...]] = ("ablation",)

    grid: str | None = None
    runs: list[str] = field(default_factory=list)
    finished: int | None = None
    comparison: str | None = None


@dataclass
class CourseSummary(Summary):
    """course: the course's five tasks as a plan of runs, with course.json holding its figures."""

    KINDS: ClassVar[tuple[str, ...]] = ("course",)

    minutes: float | None = None
    full: bool | None = None
    steps: list[str] = field(default_factory=list)
    figures: str | None = None
    report: str | None = None


@dataclass
class EvaluateSummary(Summary):
    """evaluate: a finished run's model on a labelled dataset (`cnnlab evaluate RUN --data PATH --out DIR`)."""

    KINDS: ClassVar[tuple[str, ...]] = ("evaluate",)

    run: str | None = None
    data: str | None = None
    weights: str | None = None
    accuracy: float | None = None
    loss: float | None = None
    images: int | None = None
    classes: list[str] = field(default_factory=list)
    per_class_accuracy: dict[str, float | None] = field(default_factory=dict)


SUMMARY_TYPES: tuple[type[Summary], ...] = (ClassifierSummary, StyleNetworkSummary, StylizeSummary,
                                            VisualizeSummary, AblationSummary, CourseSummary, EvaluateSummary)
KINDS: tuple[str, ...] = tuple(k for t in SUMMARY_TYPES for k in t.KINDS)


def summary_type(kind: str) -> type[Summary]:
    for cls in SUMMARY_TYPES:
        if kind in cls.KINDS:
            return cls
    raise ValueError(f"unknown summary kind {kind!r}; known: {', '.join(KINDS)}")


def _legacy_kind(data: dict[str, Any]) -> str:
    """The kind of a summary.json written before kinds were explicit (schema_version absent)."""
    kind = data.get("kind")
    if kind == "style_network":
        return "style-network"
    if "method" in data:
        return "stylize"
    return str(kind or "train")


def from_dict(data: dict[str, Any], where: str = "summary.json") -> Summary:
    """A typed summary from its JSON object, today's or a legacy one (see the module docstring)."""
    if not isinstance(data, dict):
        raise UserError(f"{where} is not a JSON object; the run directory is damaged")
    version = data.get("schema_version")
    if version is not None and (not isinstance(version, int) or version > SCHEMA_VERSION):
        raise UserError(f"{where} has schema_version {version!r}, newer than this cnnlab reads "
                        f"({SCHEMA_VERSION}); upgrade cnnlab")
    kind = data.get("kind") if version is not None else _legacy_kind(data)
    try:
        cls = summary_type(str(kind))
    except ValueError:
        raise UserError(f"{where} has an unknown kind {kind!r} (known: {', '.join(KINDS)})") from None
    names = {f.name for f in dataclasses.fields(cls)}
    known = {k: v for k, v in data.items() if k in names}
    known.update(kind=kind, schema_version=SCHEMA_VERSION if version is None else version)
    summary = cls(**known)
    summary.unknown = {k: v for k, v in data.items() if k not in names}
    return summary


def write_summary(folder: str | Path | RunDir, summary: Summary) -> Path:
    """summary.json, atomically; only declared fields are written (a new figure is a new field)."""
    if summary.kind not in type(summary).KINDS:
        raise ValueError(f"{type(summary).__name__} cannot have kind {summary.kind!r}")
    run = folder if isinstance(folder, RunDir) else RunDir(folder)
    data = {f.name: getattr(summary, f.name) for f in dataclasses.fields(summary)}
    return run.write_json(SUMMARY, data)


def read_summary(folder: str | Path | RunDir) -> Summary:
    """The run's summary.json, typed; a one-line error when it is missing or damaged."""
    run = folder if isinstance(folder, RunDir) else RunDir(folder)
    return from_dict(run.read_json(SUMMARY), str(run / SUMMARY))


def try_read_summary(folder: str | Path | RunDir) -> Summary | None:
    """The summary, or None when the folder has none or it cannot be read (listings skip such folders)."""
    try:
        return read_summary(folder)
    except (UserError, OSError, TypeError):
        return None
