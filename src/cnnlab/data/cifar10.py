"""CIFAR-10 from the official *binary* version, straight into uint8 tensors (no pickle).

Each record is 3,073 bytes: one label byte (0-9), then the 1,024 red, 1,024 green and 1,024 blue bytes of a
32x32 image, each plane row-major. When the files are absent the official archive is downloaded with
torchvision's helpers and its md5 checked; every extracted file is checked against the official md5 too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILE = "test_batch.bin"
FILE_MD5 = {
    "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
    "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
    "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
    "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
    "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
    "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
}
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
RECORD_BYTES = 1 + 3 * 32 * 32


def read_batch_file(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Parse one .bin file into (images uint8 [N, 3, 32, 32], labels int64 [N])."""
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise UserError(f"{path} is {raw.size:,} bytes, not a whole number of {RECORD_BYTES:,}-byte CIFAR-10 "
                        f"records; delete it and download the dataset again")
    records = raw.reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise UserError(f"{path} record {bad[0]} has label byte {labels[bad[0]]} (labels are 0-9); "
                        f"the file is corrupt: delete it and download the dataset again")
    images = records[:, 1:].reshape(-1, 3, 32, 32)
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)


def find_folder(root: Path) -> Path | None:
    """The cifar-10-batches-bin folder under root (or root itself), if all files are there."""
    for candidate in (root / FOLDER, root):
        if all((candidate / name).is_file() for name in [*TRAIN_FILES, TEST_FILE]):
            return candidate
    return None


def safe_extract(archive: Path, root: Path) -> None:
    """Unpack a tar archive into root, refusing members that would land outside it (absolute paths, ``..``,
    links pointing out, devices): tarfile's 'data' filter. torchvision's own helper extracts without it."""
    import tarfile

    try:
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
    except tarfile.FilterError as exc:
        raise UserError(f"{archive} holds a member that would be written outside {root} ({exc}); the archive is "
                        f"not the official one: delete it and download again") from None


def download(root: Path) -> Path:
    """Fetch the official archive with torchvision's download helper (its md5 checked), unpack it with path
    checks (safe_extract), then check each file's md5."""
    from torchvision.datasets.utils import check_integrity, download_url

    try:
        root.mkdir(parents=True, exist_ok=True)
        download_url(URL, str(root), md5=ARCHIVE_MD5)
        safe_extract(root / Path(URL).name, root)
    except UserError:
        raise
    except Exception as exc:  # network or disk failure: tell the user where to put the files instead
        raise UserError(f"could not download CIFAR-10 into {root} ({type(exc).__name__}: {exc}); download "
                        f"{URL} yourself and unpack it there, or set --data-root / CNNLAB_DATA") from None
    folder = root / FOLDER
    for name, md5 in FILE_MD5.items():
        if not check_integrity(str(folder / name), md5):
            raise UserError(f"{folder / name} does not match the official md5 {md5}; delete {folder} and retry")
    return folder


def fingerprint(folder: Path) -> str:
    """Short content hash of the files read (recorded in summary.json for provenance)."""
    digest = hashlib.sha1()
    for name in [*TRAIN_FILES, TEST_FILE]:
        with open(folder / name, "rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def load(root: str | Path, download_missing: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                   torch.Tensor, Path]:
    """(train_x, train_y, test_x, test_y, folder) from root, downloading first if allowed and needed."""
    root = Path(root).expanduser()
    folder = find_folder(root)
    if folder is None:
        if not download_missing:
            raise UserError(f"CIFAR-10 binary files not found in {root / FOLDER}; download {URL} and unpack it "
                            f"there, or point --data-root / CNNLAB_DATA at the folder that holds {FOLDER}/")
        folder = download(root)
    parts = [read_batch_file(folder / name) for name in TRAIN_FILES]
    train_x = torch.cat([p[0] for p in parts])
    train_y = torch.cat([p[1] for p in parts])
    test_x, test_y = read_batch_file(folder / TEST_FILE)
    return train_x, train_y, test_x, test_y, folder
