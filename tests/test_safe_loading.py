"""Nothing a user is handed can run code: weights only through safetensors or torch.load(weights_only=True),
YAML through safe loading, archives unpacked with path checks, a malicious pickle refused (or, for a cache,
ignored and rebuilt) in every place a file is read, without running its payload."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
import torch

from cnnlab import cli
from cnnlab.data.cifar10 import safe_extract
from cnnlab.errors import UserError
from test_bad_input import TINY, _bytes, _photo, assert_one_line_error, run


class Payload:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _malicious(path: Path, marker: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"state_dict": Payload(marker)}, buffer)  # what a tampered torch file looks like
    path.write_bytes(buffer.getvalue())


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_archives_are_unpacked_with_path_checks(tmp_path):
    good = _tar(tmp_path / "good.tar.gz", {"cifar-10-batches-bin/readme.html": b"hi"})
    safe_extract(good, tmp_path / "out")
    assert (tmp_path / "out" / "cifar-10-batches-bin" / "readme.html").read_bytes() == b"hi"
    evil = _tar(tmp_path / "evil.tar.gz", {"../escaped.txt": b"owned"})
    with pytest.raises(UserError, match="outside"):
        safe_extract(evil, tmp_path / "out2")
    assert not (tmp_path / "escaped.txt").exists()
    absolute = _tar(tmp_path / "absolute.tar.gz", {"/tmp/cnnlab-absolute-escape.txt": b"owned"})
    safe_extract(absolute, tmp_path / "out3")  # the leading / is stripped: it lands inside the destination
    assert not Path("/tmp/cnnlab-absolute-escape.txt").exists()
    assert (tmp_path / "out3" / "tmp" / "cnnlab-absolute-escape.txt").is_file()


def test_yaml_tags_that_would_run_code_are_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f'model: !!python/object/apply:os.system ["touch {marker}"]\n')
    assert_one_line_error(*run(["train", "--config", evil, "--out", tmp_path / "r"], capsys)[::2], "evil.yaml")
    assert not marker.exists()


def test_a_run_whose_every_weights_file_is_a_malicious_pickle_is_refused(tmp_path, capsys, fake_cifar_root):
    out = tmp_path / "run"
    assert cli.main(["train", *TINY, "--data-root", str(fake_cifar_root), "--out", str(out)]) == 0
    marker = tmp_path / "pwned"
    for name in ("best.safetensors", "checkpoint.pt"):
        _malicious(out / name, marker)
    assert_one_line_error(*run(["evaluate", out, "--data-root", fake_cifar_root], capsys)[::2], "best.safetensors")
    (out / "summary.json").unlink()  # as if it had been killed before its end: resume reads the checkpoint
    assert_one_line_error(*run(["train", "--resume", out, "--data-root", fake_cifar_root], capsys)[::2],
                          "checkpoint")
    assert not marker.exists()


def test_a_malicious_weights_file_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    weights = tmp_path / "weights.pt"
    _malicious(weights, marker)
    code, _, err = run(["visualize", "layers", "--model", "efficientnet_lite0", "--weights", weights], capsys)
    assert_one_line_error(code, err, "weights.pt")
    assert not marker.exists()


def test_malicious_caches_are_ignored_and_rebuilt_without_running(tmp_path, capsys):
    data = tmp_path / "data"
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        for i in range(5):
            (data / cls / f"{i}.jpg").write_bytes(_bytes(_photo((36 + i, 30)), "JPEG"))
    cache = tmp_path / "cache"
    args = ["features", "--data", data, "--no-progress", "--epochs", "1", "--val-fraction", "0.4",
            "--cache-dir", cache]
    assert run([*args, "--out", tmp_path / "first"], capsys)[0] == 0
    caches = sorted(cache.rglob("*.safetensors"))
    assert {p.name.split("-")[0] for p in caches} >= {"images", "features"}
    marker = tmp_path / "pwned"
    for path in caches:
        _malicious(path, marker)
    code, _, err = run([*args, "--out", tmp_path / "second"], capsys)
    assert code == 0, err
    assert not marker.exists()
    first = torch.load(tmp_path / "first" / "checkpoint.pt", weights_only=True)
    second = torch.load(tmp_path / "second" / "checkpoint.pt", weights_only=True)
    assert first["fit"]["history"][0]["train_loss"] == pytest.approx(second["fit"]["history"][0]["train_loss"])
