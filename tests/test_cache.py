"""The one tensor cache under the image, photo and feature caches (data/cache.py): built once, then read;
a damaged, tampered or foreign entry rebuilt instead of trusted; an unwritable folder one clear line."""

import pickle

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cnnlab.data.cache import cache_key, cached_tensors
from cnnlab.errors import UserError

EXPECT = {"x": ((4, 3), torch.float32), "y": ((4,), torch.long)}


class Builder:
    """Counts its calls; each call makes the same tensors (a cache must not change results)."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return {"x": torch.arange(12, dtype=torch.float32).view(4, 3), "y": torch.arange(4)}


def _entry(tmp_path, build, **kw):
    return cached_tensors(tmp_path / "cache", "test", ["a", 1], build, what="test cache", expect=EXPECT, **kw)


def _check(entry):
    assert torch.equal(entry.tensors["x"], torch.arange(12, dtype=torch.float32).view(4, 3))
    assert torch.equal(entry.tensors["y"], torch.arange(4))


def test_built_once_then_read_and_keyed_by_its_parts(tmp_path):
    build = Builder()
    first = _entry(tmp_path, build)
    assert not first.hit and build.calls == 1 and first.path.name == f"test-{first.key}.safetensors"
    second = _entry(tmp_path, build)
    assert second.hit and build.calls == 1 and second.key == first.key
    _check(second)
    other = cached_tensors(tmp_path / "cache", "test", ["a", 2], build, expect=EXPECT)
    assert not other.hit and other.key != first.key and build.calls == 2
    assert cache_key("test", ["a", 1]) != cache_key("other", ["a", 1])
    assert not list((tmp_path / "cache").glob(".*.tmp"))  # written atomically: no temporary file left


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "pickle"])
def test_a_damaged_entry_is_rebuilt(tmp_path, damage):
    build = Builder()
    path = _entry(tmp_path, build).path
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) - 7])
    elif damage == "garbage":
        path.write_bytes(bytes(len(data)))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(pickle.dumps({"x": 1}))
    again = _entry(tmp_path, build)
    assert not again.hit and build.calls == 2
    _check(again)
    assert _entry(tmp_path, build).hit and build.calls == 2  # replaced by a sound entry


def _metadata(path):
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


@pytest.mark.parametrize("tamper", ["content", "checksum", "no checksum", "names", "shape", "dtype", "key"])
def test_a_tampered_entry_is_rebuilt_not_trusted(tmp_path, tamper):
    """Valid safetensors files that are not what the cache wrote: other numbers under the old checksum, a
    wrong checksum, none, other tensor names, shapes or dtypes (checksum recomputed, so only the expectation
    catches them), an entry copied under another key."""
    from cnnlab.data.cache import CHECKSUM, KEY, tensors_digest

    build = Builder()
    entry = _entry(tmp_path, build)
    meta = _metadata(entry.path)
    good = {"x": entry.tensors["x"].clone(), "y": entry.tensors["y"].clone()}
    tensors = dict(good)
    if tamper == "content":
        tensors["x"] = tensors["x"] + 1
    elif tamper == "checksum":
        meta[CHECKSUM] = "0" * 64
    elif tamper == "no checksum":
        del meta[CHECKSUM]
    elif tamper == "names":
        tensors = {"x": tensors["x"], "z": tensors["y"]}
    elif tamper == "shape":
        tensors["x"] = tensors["x"][:3]
    elif tamper == "dtype":
        tensors["y"] = tensors["y"].int()
    else:
        meta[KEY] = "0" * 20
    if tamper in ("names", "shape", "dtype"):
        meta[CHECKSUM] = tensors_digest(tensors)
    save_file(tensors, str(entry.path), metadata=meta)
    again = _entry(tmp_path, build)
    assert not again.hit and build.calls == 2
    _check(again)


def test_an_unwritable_cache_folder_is_one_line_naming_it_and_the_setting(tmp_path):
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    with pytest.raises(UserError) as caught:
        _entry(tmp_path, Builder())
    message = str(caught.value)
    assert "\n" not in message and str(tmp_path / "cache") in message
    assert "data.cache_dir" in message and "--cache-dir" in message and "test cache" in message


def test_a_builder_that_breaks_its_own_expectation_is_a_bug_not_a_cache_entry(tmp_path):
    with pytest.raises(ValueError, match="not what its caller expects"):
        cached_tensors(tmp_path, "test", [], lambda: {"x": torch.zeros(2)}, expect=EXPECT)
    assert not list(tmp_path.glob("*.safetensors"))


def test_validate_rejects_an_entry_the_expectation_alone_would_accept(tmp_path):
    """A rule across tensors (the feature cache: one width in every split) is checked on every read."""
    build = Builder()
    _entry(tmp_path, build)
    assert _entry(tmp_path, build, validate=lambda t: t["y"].max().item() == 3).hit

    def doubled():
        return {"x": torch.zeros(4, 3), "y": torch.arange(4) * 2}

    entry = _entry(tmp_path, doubled, validate=lambda t: t["y"].max().item() == 6)
    assert not entry.hit and torch.equal(entry.tensors["y"], torch.arange(4) * 2)
