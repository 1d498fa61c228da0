"""One on-disk cache of tensors, shared by every cache of cnnlab: decoded dataset images (data/folders.py),
style-training photos (style/photos.py) and backbone features (transfer/features.py).

    entry = cached_tensors(cache_root(cfg.data), "features", [data_key, backbone, digest], build,
                           what="feature cache", expect={"train": ((n, None), torch.float32)})
    entry.tensors["train"], entry.hit, entry.key

- The key is a digest of the namespace, the caller's key parts and FORMAT: the parts say what invalidates an
  entry (the files with their sizes and modification times, a backbone's weights, the sizes...); FORMAT
  changes when the layout of an entry changes, so old entries are never read as new ones.
- An entry is a safetensors file (never a pickle), written atomically (runs.atomic_write_bytes): a killed
  run leaves the old entry or the new one, never half of one.
- An entry is trusted only when it proves itself: readable as safetensors, its metadata naming this
  namespace and key, a sha256 of its tensors (names, dtypes, shapes and bytes) in its metadata that matches
  what was read, and, when the caller says what to expect, exactly the expected tensor names with the
  expected shapes and dtypes (and whatever its `validate` checks). Anything else (a truncated file, a disk
  error, a file edited or replaced by hand, a pickle under a .safetensors name) is rebuilt and replaced, not
  trusted and not an error: a cache is only ever a shortcut.
- A cache folder that cannot be written is one UserError line naming the folder and how to choose another
  (``data.cache_dir``, ``--cache-dir``, ``$CNNLAB_CACHE``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import DataConfig
from ..errors import UserError

FORMAT = "2"
"""Version of the entry layout (2: the checksum, namespace and key in the metadata)."""

CHECKSUM, NAMESPACE, KEY = "cnnlab_sha256", "cnnlab_namespace", "cnnlab_key"

Shape = Sequence[int | None]
"""An expected shape; None matches any size along that axis."""


def cache_root(cfg: DataConfig) -> Path:
    """data.cache_dir, else $CNNLAB_CACHE, else ~/.cache/cnnlab/cache (a folder the user may write)."""
    return Path(cfg.cache_dir or os.environ.get("CNNLAB_CACHE") or "~/.cache/cnnlab/cache").expanduser()


@dataclass
class Cached:
    tensors: dict[str, torch.Tensor]
    key: str
    hit: bool  # True when the tensors came from the cache (build was not called)
    path: Path


def cache_key(namespace: str, key_parts: Sequence[object]) -> str:
    """20 hex digits of sha256 over FORMAT, the namespace and the parts (JSON; other objects by their str)."""
    text = json.dumps([FORMAT, namespace, list(key_parts)], default=str, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over each tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def _fits(tensors: Mapping[str, torch.Tensor], expect: Mapping[str, tuple[Shape, torch.dtype]] | None) -> bool:
    if expect is None:
        return True
    if set(tensors) != set(expect):
        return False
    for name, (shape, dtype) in expect.items():
        t = tensors[name]
        if t.dtype != dtype or t.ndim != len(shape):
            return False
        if any(want is not None and got != want for got, want in zip(t.shape, shape)):
            return False
    return True


def _read(path: Path, namespace: str, key: str, expect: Mapping[str, tuple[Shape, torch.dtype]] | None,
          validate: Callable[[Mapping[str, torch.Tensor]], bool] | None) -> dict[str, torch.Tensor] | None:
    """The entry's tensors when it proves itself (see the module docstring), else None."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception:  # unreadable: truncated, not safetensors (a pickle), a disk error
        return None
    if meta.get(NAMESPACE) != namespace or meta.get(KEY) != key or not _fits(tensors, expect):
        return None
    if validate is not None and not validate(tensors):
        return None
    if meta.get(CHECKSUM) != tensors_digest(tensors):
        return None
    return tensors


def cached_tensors(folder: str | Path, namespace: str, key_parts: Sequence[object],
                   build: Callable[[], Mapping[str, torch.Tensor]], *, what: str = "cache",
                   expect: Mapping[str, tuple[Shape, torch.dtype]] | None = None,
                   validate: Callable[[Mapping[str, torch.Tensor]], bool] | None = None,
                   metadata: Mapping[str, str] | None = None) -> Cached:
    """The tensors `build()` makes, from `folder`/<namespace>-<key>.safetensors when a sound entry is there,
    else built and stored there (see the module docstring).

    `expect` ({name: (shape, dtype)}, None in a shape for any size) is what a sound entry holds, `validate`
    (tensors -> bool) any further rule it keeps (e.g. the same width in every split); `metadata`
    is stored with the entry for whoever looks at the file; `what` names the cache in the error when
    `folder` cannot be written ("image cache", "feature cache", ...)."""
    from safetensors.torch import save as to_bytes

    from ..runs import atomic_write_bytes

    folder = Path(folder)
    key = cache_key(namespace, key_parts)
    path = folder / f"{namespace}-{key}.safetensors"
    if path.is_file():
        stored = _read(path, namespace, key, expect, validate)
        if stored is not None:
            return Cached(stored, key, True, path)
    tensors = {name: t.detach().cpu().contiguous() for name, t in build().items()}
    if not _fits(tensors, expect) or (validate is not None and not validate(tensors)):
        raise ValueError(f"the {what} builder made {sorted(tensors)} with shapes "
                         f"{[list(t.shape) for t in tensors.values()]}, not what its caller expects: {expect}")
    meta = {**(metadata or {}), NAMESPACE: namespace, KEY: key, CHECKSUM: tensors_digest(tensors)}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, to_bytes(tensors, metadata=meta))
    except OSError as exc:
        raise UserError(f"cannot write the {what} in {folder} ({exc.strerror or exc}); set data.cache_dir "
                        f"(--cache-dir) or $CNNLAB_CACHE to a folder you can write") from None
    return Cached(tensors, key, False, path)
