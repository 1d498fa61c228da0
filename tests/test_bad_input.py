"""A bad-input corpus made by the tests: every case is a clear one-line error (exit code 2, no traceback) or
handled correctly. The table of cases and their outcomes is written to test-artifacts/bad-input.md
($CNNLAB_ARTIFACTS), so a note can quote what the code does rather than what it should do.

Cases run the real CLI in this process (cnnlab.cli.main), which keeps the corpus fast: torch is imported
once, not once per case. Ctrl-C and SIGKILL need a separate process and are in test_cli / test_resume.
"""

from __future__ import annotations

import errno
import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import cli
from conftest import SHARED_DATA, write_fake_cifar
from conftest import TINY as TINY_RUN

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("CNNLAB_ARTIFACTS", ROOT / "test-artifacts"))
TINY = [*TINY_RUN, "--epochs", "1"]
OUTCOMES: list[tuple[str, str, str]] = []
# Tests of one case each: unwritable output, full disk, NaN loss, --detect-anomaly, NaN/inf inputs, non-ASCII
# dataset names.
SINGLE_CASES = 6  # (case, expected, what happened): the table of the closing note


def run(argv: list, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return int(code or 0), out, err


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Data and a tiny finished classifier run the cases read."""
    base = tmp_path_factory.mktemp("bad-input")
    cifar = write_fake_cifar(base / "cifar")
    run_dir = base / "run"
    assert cli.main(["train", *TINY, "--data-root", str(cifar), "--out", str(run_dir)]) == 0
    return {"base": base, "cifar": cifar, "run": run_dir}


# ------------------------------------------------------------------------------------------- image files

def _photo(size=(48, 40)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (and holds no pixel data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    return _bytes(_photo((40, 20)), "JPEG", exif=exif.tobytes())


def _palette_transparent() -> bytes:
    img = _photo().convert("P")
    return _bytes(img, "PNG", transparency=0)


BAD_IMAGES: dict[str, tuple[str, Callable[[], bytes], str]] = {
    "truncated JPEG": ("x.jpg", lambda: _bytes(_photo((200, 160)), "JPEG")[:900], "truncated or damaged"),
    "truncated PNG": ("x.png", lambda: _bytes(_photo(), "PNG")[:300], "x.png"),
    "zero-byte file": ("empty.png", lambda: b"", "not an image file"),
    "text file named .jpg": ("notes.jpg", lambda: b"this is text, not a photo\n", "not an image file"),
    "HTML named .png": ("page.png", lambda: b"<html><body>hi</body></html>", "not an image file"),
    "PNG header claiming 20,000 x 20,000": ("bomb.png", lambda: _png_header_only(20000, 20000), "too large"),
}
GOOD_IMAGES: dict[str, tuple[str, Callable[[], bytes]]] = {
    "CMYK JPEG": ("cmyk.jpg", lambda: _bytes(_photo().convert("CMYK"), "JPEG")),
    "RGBA PNG": ("rgba.png", lambda: _bytes(_photo().convert("RGBA"), "PNG")),
    "16-bit greyscale PNG": ("deep.png", lambda: _bytes(Image.fromarray(
        (np.arange(48 * 40, dtype=np.uint16).reshape(40, 48) * 30).astype(np.uint16)), "PNG")),
    "greyscale PNG": ("grey.png", lambda: _bytes(_photo().convert("L"), "PNG")),
    "palette PNG": ("palette.png", lambda: _bytes(_photo().convert("P"), "PNG")),
    "palette PNG with transparency": ("palette-t.png", _palette_transparent),
    "float TIFF": ("float.tif", lambda: _bytes(Image.fromarray(np.linspace(-3, 7, 48 * 40, dtype=np.float32)
                                                              .reshape(40, 48)), "TIFF")),
    "BMP": ("bmp.bmp", lambda: _bytes(_photo(), "BMP")),
    "WebP": ("web.webp", lambda: _bytes(_photo(), "WEBP")),
    "file name with spaces and non-ASCII": ("mi foto é 1 ü.png", lambda: _bytes(_photo(), "PNG")),
    "image with EXIF rotation": ("rotated.jpg", _exif_rotated),
    "extension that lies (a PNG named .jpg)": ("liar.jpg", lambda: _bytes(_photo(), "PNG")),
}


def assert_one_line_error(code: int, err: str, *fragments: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_image_files_are_one_line_errors(case, world, tmp_path, capsys):
    name, make, fragment = BAD_IMAGES[case]
    path = tmp_path / name
    path.write_bytes(make())
    line = assert_one_line_error(*run(["predict", world["run"], path], capsys)[::2], fragment)
    OUTCOMES.append((case, "error", line))


@pytest.mark.parametrize("case", list(GOOD_IMAGES))
def test_unusual_but_valid_images_are_handled(case, world, tmp_path, capsys):
    from cnnlab.data.images import read_image

    name, make = GOOD_IMAGES[case]
    path = tmp_path / name
    path.write_bytes(make())
    code, out, err = run(["predict", world["run"], path, "--json"], capsys)
    assert code == 0 and not err.strip(), err
    import json

    [record] = json.loads(out)
    assert Path(record["image"]).name == name and len(record["predictions"]) == 5
    image = read_image(path)
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    if case == "image with EXIF rotation":
        assert tuple(image.shape[1:]) == (40, 20)  # stored 40 wide x 20 high, shown rotated: 20 x 40
    OUTCOMES.append((case, "handled", f"RGB uint8 {tuple(image.shape)}; predict exits 0"))


# ------------------------------------------------------------------------------------------- datasets

def _cifar_with(tmp_path: Path, damage: Callable[[Path], None]) -> Path:
    root = write_fake_cifar(tmp_path / "data")
    damage(root / "cifar-10-batches-bin")
    return root


def _truncate(folder: Path) -> None:
    path = folder / "data_batch_1.bin"
    path.write_bytes(path.read_bytes()[:-100])


def _label_12(folder: Path) -> None:
    path = folder / "data_batch_2.bin"
    raw = bytearray(path.read_bytes())
    raw[0] = 12
    path.write_bytes(bytes(raw))


def _terrassa(root: Path, names: list[str], labels: list[str], encoding: str = "utf-8") -> Path:
    split = root / "train"
    (split / "images").mkdir(parents=True)
    for n in names:
        (split / "images" / n).write_bytes(_bytes(_photo(), "JPEG"))
    (split / "train.txt").write_bytes("\n".join(names).encode(encoding))
    (split / "annotation.txt").write_bytes("\n".join(labels).encode(encoding))
    return root


def _dataset_cases(tmp: Path, world) -> dict[str, tuple[list, tuple[str, ...]]]:
    """name -> (argv, fragments of the expected one-line error)."""
    features = ["features", "--no-progress", "--epochs", "1", "--out", tmp / "run", "--data"]
    (tmp / "empty").mkdir()
    (tmp / "no-classes").mkdir()
    (tmp / "no-classes" / "readme.txt").write_text("no images here")
    csv_missing = tmp / "missing.csv"
    csv_missing.write_text("path,label\nnowhere.jpg,cat\n")
    csv_header = tmp / "noheader.csv"
    csv_header.write_text("a.jpg;cat\n")
    csv_latin1 = tmp / "latin1.csv"
    csv_latin1.write_bytes("path,label\nd\xe9j\xe0.jpg,caf\xe9\n".encode("latin-1"))
    return {
        "CIFAR-10 .bin of the wrong size": (["train", *TINY, "--data-root", _cifar_with(tmp / "c1", _truncate),
                                             "--out", tmp / "r1"], ("data_batch_1.bin", "whole number")),
        "CIFAR-10 label byte > 9": (["train", *TINY, "--data-root", _cifar_with(tmp / "c2", _label_12),
                                     "--out", tmp / "r2"], ("data_batch_2.bin", "label byte 12")),
        "CIFAR-10 files missing": (["train", *TINY, "--data-root", tmp / "empty", "--out", tmp / "r3"],
                                   ("not found",)),
        "empty dataset folder": ([*features, tmp / "empty"], ("no known layout",)),
        "folder with no images": ([*features, tmp / "no-classes"], ("no known layout",)),
        "Terrassa annotation of another length": (
            [*features, _terrassa(tmp / "t1", ["a.jpg", "b.jpg", "c.jpg"], ["house", "church"])],
            ("lists 3 images", "2 class")),
        "non-UTF-8 list file": (
            [*features, _terrassa(tmp / "t2", ["caf\xe9.jpg", "b.jpg"], ["house", "church"], "latin-1")],
            ("not UTF-8",)),
        "CSV naming a missing image": ([*features, csv_missing], ("nowhere.jpg", "does not exist")),
        "CSV without a path,label header": ([*features, csv_header], ("header", "path,label")),
        "non-UTF-8 CSV": ([*features, csv_latin1], ("not UTF-8",)),
        "dataset path that does not exist": ([*features, tmp / "nowhere"], ("does not exist",)),
    }


def test_bad_datasets_are_one_line_errors(world, tmp_path, capsys):
    for case, (argv, fragments) in _dataset_cases(tmp_path, world).items():
        code, _, err = run(argv, capsys)
        line = assert_one_line_error(code, err, *fragments)
        out = Path(argv[argv.index("--out") + 1])
        assert not out.exists(), f"{case}: the run that never trained left {sorted(p.name for p in out.iterdir())}"
        OUTCOMES.append((case, "error", line))


def test_names_with_spaces_and_non_ascii_in_a_dataset_are_handled(world, tmp_path, capsys):
    root = tmp_path / "mes données"
    for cls in ("église", "maison de ville"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            (root / cls / f"photo n°{i} é.jpg").write_bytes(_bytes(_photo((40 + i, 36)), "JPEG"))
    code, out, err = run(["features", "--data", root, "--no-progress", "--epochs", "2", "--val-fraction", "0.34",
                          "--out", tmp_path / "run é", "--cache-dir", tmp_path / "cache"], capsys)
    assert code == 0, err
    assert (tmp_path / "run é" / "summary.json").is_file()
    OUTCOMES.append(("dataset with spaces and non-ASCII in folder and file names", "handled",
                     "features run finishes; summary.json written"))


# ------------------------------------------------------------------------------------------- configs

def _config_cases(tmp: Path, world) -> dict[str, tuple[list, tuple[str, ...]]]:
    def yaml_file(name: str, text: str) -> Path:
        path = tmp / name
        path.write_text(text)
        return path

    base = ["train", "--data-root", world["cifar"], "--out", tmp / "never"]
    return {
        "YAML with an unknown key": ([*base, "--config", yaml_file("u.yaml", "model: {nmae: cnn4}\n")],
                                     ("nmae", "did you mean 'name'")),
        "YAML with a wrong type": ([*base, "--config", yaml_file("t.yaml", "train: {epochs: many}\n")],
                                   ("train.epochs",)),
        "YAML syntax error": ([*base, "--config", yaml_file("s.yaml", "model: {name: cnn4\n")], ("s.yaml",)),
        "YAML that is a list": ([*base, "--config", yaml_file("l.yaml", "- a\n- b\n")], ("l.yaml",)),
        "config file that does not exist": ([*base, "--config", tmp / "none.yaml"], ("none.yaml",)),
        "negative batch size": ([*base, "train.batch_size=-5"], ("train.batch_size",)),
        "NaN learning rate": ([*base, "optim.lr=nan"], ("optim.lr",)),
        "infinite epochs": ([*base, "train.epochs=inf"], ("train.epochs",)),
        "override without '='": ([*base, "optim.lr"], ("optim.lr",)),
        "override of an unknown key": ([*base, "optim.lrr=0.1"], ("optim.lrr", "did you mean 'optim.lr'")),
        "unknown model name": ([*base, "--model", "resnet9000"], ("unknown model 'resnet9000'",)),
        "unknown optimizer": ([*base, "--optimizer", "adamm"], ("adamm", "did you mean 'adam'")),
        "negative --minutes": ([*base, "--minutes", "-1"], ("minutes",)),
        "NaN --minutes": ([*base, "--minutes", "nan"], ("minutes",)),
        "zero threads": ([*base, "--threads", "0"], ("threads",)),
        "resume of a folder that is no run": (["train", "--resume", tmp], ("config.yaml", "does not exist")),
        "evaluate a folder that is no run": (["evaluate", tmp], ("config.yaml",)),
    }


def test_bad_configs_are_one_line_errors(world, tmp_path, capsys):
    for case, (argv, fragments) in _config_cases(tmp_path, world).items():
        code, _, err = run(argv, capsys)
        line = assert_one_line_error(code, err, *fragments)
        OUTCOMES.append((case, "error", line))
    assert not (tmp_path / "never").exists()  # nothing was started


# ------------------------------------------------------------------------------------------- classes, models

def _model_cases(tmp_path: Path, world) -> dict[str, tuple[list, tuple[str, ...]]]:
    photo = SHARED_DATA / "images" / "photos" / "chelsea.png"
    style = SHARED_DATA / "images" / "styles" / "the_scream.jpg"
    text = tmp_path / "text.jpg"
    text.write_text("not a painting")
    return {
        "class index out of range (visualize classes)": (
            ["visualize", "classes", "--run", world["run"], "--classes", "12", "--steps", "1",
             "--out", tmp_path / "v"], ("12",)),
        "class index out of range (attribution --target)": (
            ["visualize", "attribution", "--run", world["run"], photo, "--target", "99", "--out", tmp_path / "a"],
            ("99",)),
        "unknown class name": (["visualize", "classes", "--run", world["run"], "--classes", "unicorn",
                                "--steps", "1", "--out", tmp_path / "v2"], ("unicorn",)),
        "--top-k 0": (["predict", world["run"], photo, "--top-k", "0"], ("top-k",)),
        "style image that is text": (["stylize", "optimize", "--content", photo, "--style", text, "--size", "32",
                                      "--iterations", "1", "--out", tmp_path / "s"], ("text.jpg",)),
        "style weights of another length": (["stylize", "optimize", "--content", photo, "--style", style,
                                             "--style-weights", "0.5,0.5", "--size", "32", "--iterations", "1",
                                             "--out", tmp_path / "s2"], ("style",)),
        "a classifier run given as a style network": (["stylize", "apply", "--model", world["run"], "--input",
                                                       photo, "--out", tmp_path / "o.png"], ("style",)),
        "transfer from a folder that is no run": (["transfer", "--from", tmp_path / "nothing", "--data",
                                                   SHARED_DATA / "scenes6", "--no-progress"], ("nothing",)),
    }


def test_out_of_range_classes_and_wrong_models_are_one_line_errors(world, tmp_path, capsys):
    cases = _model_cases(tmp_path, world)
    for case, (argv, fragments) in cases.items():
        code, _, err = run(argv, capsys)
        line = assert_one_line_error(code, err, *fragments)
        OUTCOMES.append((case, "error", line))


# ------------------------------------------------------------------------------------------- outputs

def test_an_unwritable_output_is_a_one_line_error(world, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where a folder should be")
    code, _, err = run(["train", *TINY, "--data-root", world["cifar"], "--out", blocker / "run"], capsys)
    line = assert_one_line_error(code, err, "a-file")
    OUTCOMES.append(("unwritable output folder (a file in the way)", "error", line))


def test_a_full_disk_is_a_one_line_error_and_earlier_results_stay_intact(world, tmp_path, capsys, monkeypatch):
    from cnnlab import runs

    before = {p.name: p.read_bytes() for p in world["run"].iterdir() if p.is_file()}
    real = runs.files.atomic_write_bytes

    def full(path, data, *a, **kw):
        if Path(path).name == "summary.json":  # the disk fills up at the end of the second run
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data, *a, **kw)

    monkeypatch.setattr(runs.files, "atomic_write_bytes", full)
    code, _, err = run(["train", *TINY, "--data-root", world["cifar"], "--out", tmp_path / "second"], capsys)
    line = assert_one_line_error(code, err, "No space left", "free some space")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in world["run"].iterdir() if p.is_file()} == before
    assert not any(p.name.startswith(".") or p.suffix == ".tmp" for p in (tmp_path / "second").iterdir())
    OUTCOMES.append(("full disk (a write raising ENOSPC)", "error", line))


def test_a_loss_that_turns_nan_stops_and_keeps_the_last_good_checkpoint(world, tmp_path, capsys):
    out = tmp_path / "nan"
    code, _, err = run(["train", *TINY[:-2], "--epochs", "3", "--data-root", world["cifar"], "--out", out,
                        "--optimizer", "sgd", "--lr", "1e30", "optim.momentum=0"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and "Traceback" not in err, err
    assert "loss became" in lines[0] or "NaN" in lines[0]
    OUTCOMES.append(("a loss that turns NaN", "stopped", lines[0]))
    code, _, err = run(["train", *TINY, "--data-root", world["cifar"], "--out", tmp_path / "anomaly",
                        "--detect-anomaly"], capsys)
    assert code == 0, err
    OUTCOMES.append(("--detect-anomaly on a healthy run", "handled", "trains and exits 0"))


def test_nan_and_inf_inputs_stop_training_with_a_clear_error():
    import torch

    from cnnlab.data.loader import TensorBatches
    from cnnlab.engine import Trainer, TrainingDiverged
    from cnnlab.engine.optim import LrSchedule, build_optimizer
    from cnnlab.config import OptimConfig, ScheduleConfig

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    images = torch.randn(8, 3, 2, 2)
    images[3, 0, 0, 0] = float("inf")
    images[5, 1, 1, 1] = float("nan")
    batches = TensorBatches(images, torch.arange(8) % 3, 4, mean=(0.0,) * 3, std=(1.0,) * 3, normalize=False)
    optimizer = build_optimizer(model, OptimConfig(name="sgd", lr=0.1), "fp32")
    trainer = Trainer(model, optimizer, LrSchedule(optimizer, ScheduleConfig(), steps_per_epoch=2, total_steps=2),
                      device=torch.device("cpu"))
    with pytest.raises(TrainingDiverged, match="nan|inf") as caught:
        trainer.fit(batches, None, [2])
    OUTCOMES.append(("NaN and inf in the input images", "stopped", f"TrainingDiverged: {caught.value}"))


def test_the_corpus_has_at_least_40_cases(world, tmp_path):
    (tmp_path / "d").mkdir()
    counted = (len(BAD_IMAGES) + len(GOOD_IMAGES) + len(_dataset_cases(tmp_path / "d", world))
               + len(_config_cases(tmp_path, world)) + len(_model_cases(tmp_path, world)) + SINGLE_CASES)
    assert counted >= 40, counted


@pytest.fixture(scope="module", autouse=True)
def table_of_cases():
    """After the module: the table of every case that ran and its outcome (test-artifacts/bad-input.md)."""
    yield
    if OUTCOMES:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        lines = ["| case | outcome | message or result |", "| --- | --- | --- |"]
        lines += [f"| {c} | {o} | {m.replace('|', '/')} |" for c, o, m in OUTCOMES]
        (ARTIFACTS / "bad-input.md").write_text("# Bad-input corpus (written by tests/test_bad_input.py)\n\n"
                                                + "\n".join(lines) + "\n")
