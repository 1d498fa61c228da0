"""Datasets of your own photos: three layouts, seeded stratified splits, and images decoded only once.

Layouts (``data.layout: auto`` detects them; a name forces one):

- **imagefolder**: ``root/<class>/*.jpg``, or the same under ``root/train``, ``root/val``, ``root/test``;
- **terrassa** (the Terrassa Buildings 900 layout): ``root/<split>/images/``, a list file
  ``root/<split>/<split>.txt`` of image names and ``root/<split>/annotation.txt`` of class names, aligned
  line by line; splits ``train``, ``val``, ``test`` (any of them);
- **csv**: a CSV file with a header ``path,label`` (and optionally ``split``), paths relative to the file.

Splits the data lacks are carved from the training images, stratified by class and seeded
(``data.val_fraction``, ``data.test_fraction``, ``data.split_seed``). Classes are the sorted class names of
all splits; a split that lacks a class is fine, an image whose class no training image has is an error.

Images are decoded once (any format and mode: data/images.py), resized (shorter side to ``resize``) and
center-cropped to ``crop`` x ``crop``, and the uint8 tensors are cached on disk (data/cache.py), keyed by
the file list (paths, sizes, modification times), the sizes and this module's version: a second run with the
same files decodes nothing. Augmentation then works on the cached tensors (data/augment.py), like CIFAR's.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import DataConfig
from ..errors import UserError
from .cache import cache_root, cached_tensors
from .images import IMAGE_SUFFIXES, read_image

SPLITS = ("train", "val", "test")
CACHE_VERSION = "1"


@dataclass
class FolderIndex:
    """Which file belongs to which split and class (nothing decoded yet)."""

    root: Path
    layout: str
    splits: dict[str, list[tuple[Path, str]]] = field(default_factory=dict)
    carved: dict[str, str] = field(default_factory=dict)
    """How each split that the data did not bring was made (e.g. test: "carved: 20 % of ...")."""

    def split_source(self, split: str) -> str:
        """Where a split's images come from: the dataset's own list or folder, carved from train, or none."""
        if split in self.carved:
            return self.carved[split]
        return f"the dataset's own {split} split" if self.splits.get(split) else "none"

    @property
    def classes(self) -> list[str]:
        return sorted({label for items in self.splits.values() for _, label in items})

    def labels(self, split: str) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.classes)}
        return torch.tensor([index[label] for _, label in self.splits.get(split, [])], dtype=torch.long)


# ----------------------------------------------------------------------------------------------- layouts


def _images_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def _is_terrassa_split(folder: Path, split: str) -> bool:
    return (folder / "images").is_dir() and (folder / f"{split}.txt").is_file()


def _class_folders(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def detect_layout(path: Path) -> str:
    """imagefolder | terrassa | csv for a dataset path, or a UserError that says what was expected."""
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "csv"
        raise UserError(f"{path} is a file but not a .csv of path,label; pass a dataset folder or a CSV file")
    if not path.is_dir():
        raise UserError(f"dataset {path} does not exist; pass a folder of class folders, a Terrassa-layout "
                        f"folder or a CSV file of path,label")
    if any(_is_terrassa_split(path / s, s) for s in SPLITS):
        return "terrassa"
    candidates = [path / s for s in SPLITS if (path / s).is_dir()] or [path]
    if any(_images_in(d) for c in candidates for d in _class_folders(c)):
        return "imagefolder"
    raise UserError(f"{path} is in no known layout: expected class folders of images (ImageFolder), "
                    f"<split>/images/ + <split>/<split>.txt + <split>/annotation.txt (Terrassa), or a CSV file")


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror})") from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def index_terrassa(root: Path) -> FolderIndex:
    index = FolderIndex(root, "terrassa")
    for split in SPLITS:
        folder = root / split
        if not _is_terrassa_split(folder, split):
            continue
        names_file, labels_file = folder / f"{split}.txt", folder / "annotation.txt"
        if not labels_file.is_file():
            raise UserError(f"{labels_file} is missing: the Terrassa layout needs a class name per line of "
                            f"{names_file.name}")
        names, labels = _read_lines(names_file), _read_lines(labels_file)
        if len(names) != len(labels):
            raise UserError(f"{names_file} lists {len(names)} images but {labels_file} has {len(labels)} class "
                            f"names; the two files must be aligned line by line")
        items = []
        for line, (name, label) in enumerate(zip(names, labels), 1):
            if not name or not label:
                raise UserError(f"line {line} of {names_file if not name else labels_file} is empty")
            image = folder / "images" / name
            if not image.is_file():
                raise UserError(f"{image} (line {line} of {names_file}) does not exist")
            items.append((image, label))
        index.splits[split] = items
    return index


def index_imagefolder(root: Path) -> FolderIndex:
    index = FolderIndex(root, "imagefolder")
    split_dirs = {s: root / s for s in SPLITS if (root / s).is_dir()}
    for split, folder in (split_dirs or {"train": root}).items():
        items = [(image, d.name) for d in _class_folders(folder) for image in _images_in(d)]
        if items:
            index.splits[split] = items
    if not index.splits:
        raise UserError(f"{root} holds no images in class folders ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return index


def index_csv(path: Path) -> FolderIndex:
    index = FolderIndex(path.parent, "csv")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise UserError(f"{path} must have a header with columns path,label (and optionally split)")
    for line, row in enumerate(rows, 2):
        split = (row.get("split") or "train").strip()
        if split not in SPLITS:
            raise UserError(f"{path} line {line}: split '{split}' is not one of {', '.join(SPLITS)}")
        image = (path.parent / (row["path"] or "").strip())
        if not (row["label"] or "").strip():
            raise UserError(f"{path} line {line}: the label is empty")
        if not image.is_file():
            raise UserError(f"{path} line {line}: image {image} does not exist")
        index.splits.setdefault(split, []).append((image, row["label"].strip()))
    return index


INDEXERS = {"imagefolder": index_imagefolder, "terrassa": index_terrassa, "csv": index_csv}


def index_dataset(cfg: DataConfig) -> FolderIndex:
    """The dataset's files, labels and splits (data.layout, or detected), with the missing splits carved."""
    path = Path(cfg.path).expanduser()
    layout = detect_layout(path) if cfg.layout == "auto" else cfg.layout
    if cfg.layout != "auto" and not path.exists():
        raise UserError(f"dataset {path} does not exist")
    index = INDEXERS[layout](path)
    if not index.splits.get("train"):
        raise UserError(f"dataset {path} ({layout} layout) has no training images")
    unknown = {label for s in ("val", "test") for _, label in index.splits.get(s, [])} - \
        {label for _, label in index.splits["train"]}
    if unknown:
        raise UserError(f"dataset {path}: class '{sorted(unknown)[0]}' appears in val/test but in no training "
                        f"image; every class needs training images")
    for split in cfg.ignore_splits:  # choosing settings: validate on images carved from train instead
        index.splits.pop(split, None)
    return carve_splits(index, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)


def carve_splits(index: FolderIndex, val_fraction: float, test_fraction: float, seed: int) -> FolderIndex:
    """Hold out test and validation images from train where the data has no such split (stratified)."""
    from .splits import stratified_split

    pool = len(index.splits["train"])  # both fractions are of the training images the data came with
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        train = index.splits["train"]
        if split in index.splits or fraction <= 0:
            continue
        count = int(round(fraction * pool))
        if count == 0:
            continue
        if count >= len(train):
            raise UserError(f"data.{split}_fraction {fraction} leaves no training images")
        labels = torch.tensor([index.classes.index(label) for _, label in train])
        keep, held = stratified_split(labels, count, seed)
        index.splits[split] = [train[i] for i in held.tolist()]
        index.splits["train"] = [train[i] for i in keep.tolist()]
        index.carved[split] = (f"carved once: {count} of the dataset's {pool} training images "
                               f"({100 * fraction:g} %), stratified by class, split seed {seed}")
    return index


# ----------------------------------------------------------------------------------------------- decode + cache


def files_key(index: FolderIndex, *parts: object) -> str:
    """A digest of every file's path, size and modification time (by split), plus `parts`."""
    h = hashlib.sha256(f"{CACHE_VERSION}|{index.layout}|{parts!r}".encode())
    for split in SPLITS:
        for path, label in index.splits.get(split, []):
            st = path.stat()
            h.update(f"{split}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{label}\n".encode())
    return h.hexdigest()[:20]


def decode(path: Path, resize: int, crop: int) -> torch.Tensor:
    """uint8 [3, crop, crop]: the shorter side resized to `resize` (antialiased), then a center crop."""
    from torchvision.transforms.v2 import functional as TF

    image = read_image(path)
    image = TF.resize(image, [resize], antialias=True)
    return TF.center_crop(image, [crop, crop])


@dataclass
class DecodedSplits:
    images: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    key: str
    decoded: int  # images decoded by this call (0 when the cache had them)


def load_images(index: FolderIndex, cfg: DataConfig, resize: int, crop: int) -> DecodedSplits:
    """Every split's images as uint8 [N, 3, crop, crop], from the cache when it has them (data/cache.py)."""
    key = files_key(index, resize, crop)
    labels = {s: index.labels(s) for s in SPLITS}

    def build() -> dict[str, torch.Tensor]:
        images = {}
        for split in SPLITS:
            items = index.splits.get(split, [])
            images[f"{split}_images"] = torch.stack([decode(p, resize, crop) for p, _ in items]) if items else \
                torch.empty(0, 3, crop, crop, dtype=torch.uint8)
        return images

    expect = {f"{s}_images": ((len(index.splits.get(s, [])), 3, crop, crop), torch.uint8) for s in SPLITS}
    entry = cached_tensors(cache_root(cfg), "images", [key], build, what="image cache", expect=expect,
                           metadata={"classes": json.dumps(index.classes), "root": str(index.root)})
    images = {s: entry.tensors[f"{s}_images"] for s in SPLITS}
    decoded = 0 if entry.hit else sum(len(index.splits.get(s, [])) for s in SPLITS)
    return DecodedSplits(images, labels, key, decoded)
