"""CIFAR-10 binary parsing, download and its errors."""

import functools
import hashlib
import http.server
import tarfile
import threading

import numpy as np
import pytest
import torch

from cnnlab.data import cifar10
from cnnlab.errors import UserError
from conftest import cifar_records, write_fake_cifar


def test_parses_records_written_by_the_test(tmp_path):
    labels = np.array([3, 7, 0])
    raw = cifar_records(labels)
    path = tmp_path / "b.bin"
    path.write_bytes(raw)
    images, parsed = cifar10.read_batch_file(path)
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 32, 32)
    assert parsed.tolist() == [3, 7, 0]
    # record 1: label byte, then the red plane row-major, then green, then blue
    rec = np.frombuffer(raw, dtype=np.uint8)[3073:2 * 3073]
    assert images[1, 0, 0, 5] == rec[1 + 5]  # red, row 0, col 5
    assert images[1, 1, 2, 0] == rec[1 + 1024 + 2 * 32]  # green, row 2, col 0
    assert images[1, 2, 31, 31] == rec[-1]  # blue, last pixel


def test_wrong_size_names_file(tmp_path):
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(b"\0" * 3072)
    with pytest.raises(UserError, match=r"data_batch_1.bin is 3,072 bytes.*3,073-byte"):
        cifar10.read_batch_file(path)


def test_label_above_9_names_record(tmp_path):
    raw = bytearray(cifar_records(np.array([1, 2, 3])))
    raw[2 * 3073] = 12
    path = tmp_path / "x.bin"
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match=r"x.bin record 2 has label byte 12"):
        cifar10.read_batch_file(path)


def test_missing_dataset_says_where_and_how(tmp_path):
    with pytest.raises(UserError) as err:
        cifar10.load(tmp_path / "nowhere", download_missing=False)
    assert "nowhere/cifar-10-batches-bin" in str(err.value) and "cifar-10-binary.tar.gz" in str(err.value)


@pytest.fixture
def archive_server(tmp_path):
    """A local HTTP server serving tmp_path/www (stands in for the CIFAR-10 website)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_extracts_and_checks_md5(tmp_path, monkeypatch, archive_server):
    """The real download path (torchvision helpers), fed by a local server instead of the internet."""
    www, url = archive_server
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    src = write_fake_cifar(tmp_path / "src", per_file=20, test=20) / "cifar-10-batches-bin"
    archive = www / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-bin")
    md5 = lambda p: hashlib.md5(p.read_bytes()).hexdigest()  # noqa: E731
    monkeypatch.setattr(cifar10, "URL", f"{url}/cifar-10-binary.tar.gz")
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", md5(archive))
    monkeypatch.setattr(cifar10, "FILE_MD5", {f.name: md5(f) for f in src.glob("*.bin")})
    train_x, train_y, test_x, test_y, folder = cifar10.load(tmp_path / "root", download_missing=True)
    assert train_x.shape == (100, 3, 32, 32) and test_y.shape == (20,)
    assert folder == tmp_path / "root" / "cifar-10-batches-bin"
    # a corrupted archive is refused by its md5
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", "0" * 32)
    with pytest.raises(UserError, match="could not download CIFAR-10"):
        cifar10.load(tmp_path / "root2", download_missing=True)


def test_real_cifar_files_parse(tmp_path):
    from conftest import real_data_root

    images, labels = cifar10.read_batch_file(real_data_root() / "cifar-10-batches-bin" / "test_batch.bin")
    assert images.shape == (10000, 3, 32, 32)
    assert torch.bincount(labels).tolist() == [1000] * 10
    # the per-channel mean of the test set is close to the published training mean
    mean = images.float().mean((0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor(cifar10.MEAN), atol=0.01)
