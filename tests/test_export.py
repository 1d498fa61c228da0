"""cnnlab export: a run's network as an ONNX or TorchScript file that reproduces the run (fp32 logits within a
stated tolerance, the same top-1 on a folder of real photos), carries its preprocessing, and that `cnnlab
predict FILE` uses as it uses the run folder; style networks too; bad input is one line."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import onnxruntime as ort
import pytest
import torch

from cnnlab.classify.inference import photo_batch
from cnnlab.data.images import expand_image_paths, read_image
from cnnlab.export import export, load_exported
from cnnlab.models.trained import load_trained
from cnnlab.runs import RunDir
from conftest import SHARED_DATA
from test_bad_input import assert_one_line_error, run

PHOTOS = SHARED_DATA / "images" / "photos"
# fp32 both sides; the file computes what the run's model computes, in another order (ONNX Runtime fuses
# and reorders, TorchScript is the same kernels): logits agree to ~1e-6 on these networks, far inside these.
CNN4_TOLERANCE = 1e-4
BACKBONE_TOLERANCE = 1e-3  # efficientnet_lite0's 200+ layers at 224 px accumulate more rounding
STYLE_TOLERANCE = 1e-4  # on [0, 1] pixel values
MEASURED: dict[str, float] = {}  # printed at the end (pytest -s) for the record


def _run_logits(run_dir: Path, x: torch.Tensor) -> torch.Tensor:
    model, _, _, _ = load_trained(run_dir)
    with torch.no_grad():
        return model.float()(x)


def _photos(run_dir: Path) -> torch.Tensor:
    """The folder of real photos as the run's model takes them."""
    _, _, _, meta = load_trained(run_dir)
    return photo_batch(expand_image_paths([PHOTOS]), meta)


@pytest.fixture(scope="module")
def exported(trained_classifier, tmp_path_factory):
    """The tiny cnn4 run (fp32) exported in both formats, into a copy of the run (default --out)."""
    run_dir = tmp_path_factory.mktemp("export") / "tiny"
    shutil.copytree(trained_classifier, run_dir)
    return run_dir, {fmt: export(run_dir, fmt) for fmt in ("onnx", "torchscript")}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_the_file_reproduces_the_runs_logits_on_real_photos(exported, fmt):
    run_dir, infos = exported
    info = infos[fmt]
    assert info["file"] == str(run_dir / "export" / ("model.onnx" if fmt == "onnx" else "model.pt"))
    assert info["max_abs_diff"] is not None and info["max_abs_diff"] < CNN4_TOLERANCE  # export's own check
    x = _photos(run_dir)
    assert len(x) >= 10  # the folder of photos, in one batch of another size than the one traced (2)
    expected = _run_logits(run_dir, x)
    got = load_exported(info["file"])(x)
    diff = float((got - expected).abs().max())
    MEASURED[f"cnn4 {fmt}"] = diff
    assert got.shape == expected.shape and diff < CNN4_TOLERANCE, diff
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_the_metadata_holds_the_preprocessing_for_readers_outside_cnnlab(exported):
    run_dir, infos = exported
    _, _, _, meta = load_trained(run_dir)
    session = ort.InferenceSession(infos["onnx"]["file"], providers=["CPUExecutionProvider"])
    from_onnx = json.loads(session.get_modelmeta().custom_metadata_map["cnnlab"])
    files = {"cnnlab.json": ""}
    torch.jit.load(infos["torchscript"]["file"], _extra_files=files)
    from_torchscript = json.loads(files["cnnlab.json"])
    for doc in (from_onnx, from_torchscript):
        assert doc["format"] == "cnnlab-export" and doc["task"] == "classifier" and doc["kind"] == "train"
        assert doc["classes"] == list(meta.classes) and len(doc["classes"]) == 10
        assert doc["mean"] == pytest.approx(list(meta.mean)) and doc["std"] == pytest.approx(list(meta.std))
        assert doc["crop"] == doc["resize"] == 32 and doc["input"]["shape"] == ["batch", 3, 32, 32]
        assert doc["input"]["name"] == "image" and doc["output"]["name"] == "logits"
        assert doc["cnnlab_version"] and doc["torch_version"] == torch.__version__
        assert doc["run"] == str(run_dir.resolve())
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert session.get_inputs()[0].shape[0] == "batch"  # the free batch axis


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_predict_with_the_file_prints_what_predict_with_the_run_prints(exported, fmt, capsys):
    run_dir, infos = exported
    code, out, err = run(["predict", infos[fmt]["file"], PHOTOS, "--json", "--top-k", "3"], capsys)
    assert code == 0, err
    from_file = json.loads(out)
    code, out, err = run(["predict", run_dir, PHOTOS, "--json", "--top-k", "3"], capsys)
    assert code == 0, err
    from_run = json.loads(out)
    assert [r["image"] for r in from_file] == [r["image"] for r in from_run] and len(from_run) >= 10
    for a, b in zip(from_file, from_run):
        assert set(a) == set(b) and set(a["predictions"][0]) == set(b["predictions"][0])
        assert [p["class_name"] for p in a["predictions"]] == [p["class_name"] for p in b["predictions"]]
        assert [p["probability"] for p in a["predictions"]] == pytest.approx(
            [p["probability"] for p in b["predictions"]], abs=1e-5)


# ------------------------------------------------------------------------------ features and finetune runs


@pytest.mark.parametrize("kind", ["features", "finetune"])
def test_features_and_finetune_runs_export_whole_and_predict_alike(transfer_runs, kind, tmp_path, capsys):
    run_dir = transfer_runs / kind
    target = tmp_path / f"{kind}.onnx"
    code, out, err = run(["export", run_dir, "--format", "onnx", "--out", target], capsys)
    assert code == 0 and target.is_file() and "checked" in out, err
    doc = json.loads(ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
                     .get_modelmeta().custom_metadata_map["cnnlab"])
    assert doc["kind"] == kind and doc["classes"] == ["blue", "green", "red"]
    assert doc["input"]["shape"] == ["batch", 3, 224, 224] and doc["resize"] == 256
    # the whole pipeline: images in, logits out (for a features run, the frozen backbone and its classifier)
    x = _photos(run_dir)
    diff = float((load_exported(target)(x) - _run_logits(run_dir, x)).abs().max())
    MEASURED[f"{kind} onnx"] = diff
    assert diff < BACKBONE_TOLERANCE, diff
    code, out, _ = run(["predict", target, PHOTOS, "--json"], capsys)
    from_file = [r["predictions"][0]["class_name"] for r in json.loads(out)]
    code2, out, _ = run(["predict", run_dir, PHOTOS, "--json"], capsys)
    assert code == code2 == 0 and from_file == [r["predictions"][0]["class_name"] for r in json.loads(out)]


# ------------------------------------------------------------------------------------------- style networks


@pytest.fixture(scope="module")
def style_run(tmp_path_factory) -> Path:
    """A style-network run folder as `stylize train` writes its weights (a small random network: exporting
    does not care whether it was trained)."""
    from cnnlab.style.train import WEIGHTS_KIND
    from cnnlab.style.transformer import TransformNet

    torch.manual_seed(0)
    net = TransformNet(width=8, residual_blocks=2)
    for module in net.modules():  # instance norms' scale and shift away from 1 and 0
        if isinstance(module, torch.nn.InstanceNorm2d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.2, 0.2)
    folder = RunDir(tmp_path_factory.mktemp("style") / "net").create()
    folder.save_weights(net.state_dict(), metadata={"kind": WEIGHTS_KIND, "arguments": json.dumps(net.arguments()),
                                                   "style": "scream.jpg", "loss_net": "vgg16", "image_size": "64"})
    return folder.path


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_style_network_exports_and_applies_like_the_run(style_run, fmt, tmp_path):
    from cnnlab import style

    info = export(style_run, fmt, tmp_path / f"style{'.onnx' if fmt == 'onnx' else '.pt'}")
    assert info["task"] == "style" and info["kind"] == "style-network" and info["max_abs_diff"] < STYLE_TOLERANCE
    model = load_exported(info["file"])
    saved = json.loads(RunDir(style_run).weights_metadata()["arguments"])
    assert model.meta.style == "scream.jpg" and model.meta.network == saved and saved["width"] == 8
    assert model.meta.input_shape == ("batch", 3, "height", "width")
    photo = read_image(PHOTOS / "coffee.png")  # another size than the one traced (64 x 64)
    net, _ = style.load_network(style_run)
    x = photo[None].float() / 255
    with torch.no_grad():
        expected = net(x).clamp(0, 1)
    got = model(x)
    diff = float((got - expected).abs().max())
    MEASURED[f"style {fmt}"] = diff
    assert got.shape == x.shape and diff < STYLE_TOLERANCE, diff
    applied = style.apply(style_run, PHOTOS / "coffee.png", tmp_path / "a.png", precision="fp32", progress=False)
    pixels = (got[0] * 255).round().to(torch.uint8)
    assert (read_image(applied["outputs"][0]).int() - pixels.int()).abs().max() <= 1  # as `stylize apply` makes it


# ----------------------------------------------------------------------------------------------- bad input


def test_bad_export_requests_are_one_line_errors(exported, style_run, tmp_path, capsys, monkeypatch):
    run_dir, _ = exported
    empty = tmp_path / "empty"
    empty.mkdir()
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run_dir, unfinished, ignore=shutil.ignore_patterns("best.safetensors", "export"))
    cases = [(["export", tmp_path / "nowhere"], "not a run folder"),
             (["export", empty], "not a run folder"),
             (["export", unfinished], "no trained weights"),
             (["export", run_dir, "--format", "tflite"], "invalid choice"),
             (["export", run_dir, "--format", "onnx", "--out", tmp_path / "model.pt"], "must end in .onnx"),
             (["export", run_dir, "--out", tmp_path], "must end in .onnx")]
    for argv, fragment in cases:
        assert_one_line_error(*run(argv, capsys)[::2], fragment)
    import cnnlab.export.onnx_file as onnx_file

    real = onnx_file.find_spec
    monkeypatch.setattr(onnx_file, "find_spec", lambda name: None if name == "onnx" else real(name))
    assert_one_line_error(*run(["export", run_dir, "--out", tmp_path / "x.onnx"], capsys)[::2],
                          "pip install 'cnnlab[onnx]'")
    assert not (tmp_path / "x.onnx").exists()


def test_bad_files_given_to_predict_are_one_line_errors(style_run, tmp_path, capsys):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    marker = tmp_path / "owned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    tampered = tmp_path / "tampered.pt"
    buffer = io.BytesIO()
    torch.save({"model": Payload()}, buffer)  # a pickle with a payload, named like an exported file
    tampered.write_bytes(buffer.getvalue())
    style_file = export(style_run, "onnx", tmp_path / "style.onnx")["file"]
    photo = PHOTOS / "coffee.png"
    for target, fragment in [(tmp_path / "missing.onnx", "does not exist"), (garbage, "cannot read"),
                             (tampered, "cannot read"), (style_file, "not a classifier")]:
        assert_one_line_error(*run(["predict", target, photo, "--json"], capsys)[::2], fragment)
    assert not marker.exists()


def test_measured_differences_are_reported():
    """Not a check: the differences measured above, for the record (pytest -s shows them)."""
    print("\nmax abs difference, exported file vs the run's model (fp32):",
          ", ".join(f"{k} {v:.2g}" for k, v in MEASURED.items()))
