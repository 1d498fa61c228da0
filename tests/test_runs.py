"""The run contract: typed summaries with kind and schema_version, the shipped JSON Schema, legacy run folders,
RunMeta, and the run session's checks (engine/run.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import SHARED_DATA
from test_transfer import imagefolder

from cnnlab import config, runs, style, train
from cnnlab.classify import evaluate
from cnnlab.engine.run import RunSession
from cnnlab.errors import UserError
from cnnlab.runs import schema

LEGACY = Path(__file__).parent / "fixtures" / "legacy-runs"
STYLES, PHOTOS = SHARED_DATA / "images" / "styles", SHARED_DATA / "images" / "photos"


def assert_valid_summary(folder: Path, kind: str) -> dict:
    """summary.json validates against the schema shipped in the package and has the expected kind."""
    data = json.loads((Path(folder) / "summary.json").read_text())
    jsonschema.validate(data, schema.load_shipped())
    assert data["kind"] == kind and data["schema_version"] == runs.SCHEMA_VERSION
    assert runs.read_summary(folder).kind == kind
    return data


def test_the_shipped_schema_is_the_one_the_dataclasses_generate():
    assert schema.load_shipped() == json.loads(schema.schema_text()), \
        "regenerate it: python -m cnnlab.runs.schema"
    kinds = [k for option in schema.load_shipped()["oneOf"] for k in option["properties"]["kind"]["enum"]]
    assert sorted(kinds) == sorted(["train", "features", "finetune", "transfer", "style-network", "stylize",
                                    "visualize", "ablation", "course", "evaluate"])


def test_a_summary_with_an_undeclared_key_or_a_wrong_type_fails_the_schema():
    good = runs.ClassifierSummary(kind="train", test_accuracy=0.5).to_dict()
    jsonschema.validate(good, schema.load_shipped())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "tset_accuracy": 0.5}, schema.load_shipped())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "test_accuracy": "high"}, schema.load_shipped())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "kind": "style-network"}, schema.load_shipped())  # wrong fields for that kind


def test_train_evaluate_transfer_and_ablation_write_valid_summaries(fake_cifar_root, trained_classifier, tmp_path):
    source = trained_classifier  # the session's finished train run (read only: what this test writes goes elsewhere)
    assert_valid_summary(source, "train")
    first = evaluate(source, out=tmp_path / "eval-a")
    data = assert_valid_summary(tmp_path / "eval-a", "evaluate")
    assert data["accuracy"] == first["test_accuracy"] and data["images"] == 200
    assert (tmp_path / "eval-a" / "confusion_matrix.png").is_file()
    evaluate(source, out=tmp_path / "eval-b")  # a second evaluation keeps its own folder
    assert (tmp_path / "eval-a" / "summary.json").is_file() and (tmp_path / "eval-b" / "summary.json").is_file()
    with pytest.raises(UserError, match="already holds"):
        evaluate(source, out=tmp_path / "eval-a")
    photos = imagefolder(tmp_path / "photos", per_class=4)
    cfg = config.resolve("transfer", {"data.dataset": "folder", "data.path": str(photos), "transfer.from_run":
                                      str(source), "train.epochs": 1, "train.progress": False,
                                      "data.cache_dir": str(tmp_path / "cache"), "out": str(tmp_path / "transfer")})
    train(cfg)
    assert_valid_summary(tmp_path / "transfer", "transfer")
    from cnnlab import ablate

    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"name": "g", "base": {"data": {"root": str(fake_cifar_root), "download": False,
                                                                   "val_size": 100},
                                                          "model": {"widths": [4, 8], "fc_width": 8},
                                                          "train": {"epochs": 1, "batch_size": 50, "progress": False}},
                                    "runs": [{"name": "a", "set": {}}, {"name": "b", "set": {"optim.lr": 0.01}}]}))
    out = ablate(grid, tmp_path / "abl")
    data = assert_valid_summary(out, "ablation")
    assert data["runs"] == ["a", "b"] and data["finished"] == 2


def test_features_and_finetune_write_valid_summaries(transfer_runs):
    assert_valid_summary(transfer_runs / "features", "features")
    assert_valid_summary(transfer_runs / "finetune", "finetune")


def test_style_network_and_stylize_write_valid_summaries(tmp_path):
    settings = style.StyleTrainSettings(style=str(STYLES / "starry_night.jpg"),
                                        content_dir=str(SHARED_DATA / "scenes6" / "train"), image_size=32,
                                        style_size=32, batch_size=2, iterations=2, width=4, residual_blocks=1,
                                        limit_images=4, loss_net="efficientnet_lite0", preview_images=1)
    style.train(settings, tmp_path / "net", progress=False, cache_dir=str(tmp_path / "cache"))
    assert_valid_summary(tmp_path / "net", "style-network")
    style.optimize(PHOTOS / "chelsea.png", [STYLES / "starry_night.jpg"], tmp_path / "opt",
                   style.OptimizeSettings(size=32, iterations=2), loss_net="efficientnet_lite0", progress=False)
    assert_valid_summary(tmp_path / "opt", "stylize")


def test_the_course_summary_validates(tmp_path):
    from cnnlab.course import runner
    from cnnlab.course.plan import CourseSettings

    folder = runs.RunDir(tmp_path / "course").create()
    step = type("Step", (), {"name": "t1-fc"})()
    runner._write_summary(folder, CourseSettings(minutes=20, out=str(folder)), [step], folder / "report", 12.5)
    data = assert_valid_summary(folder.path, "course")
    assert data["steps"] == ["t1-fc"] and data["minutes"] == 20


@pytest.mark.parametrize("name, kind", [("train", "train"), ("style-network", "style-network"),
                                        ("stylize", "stylize")])
def test_run_folders_written_before_typed_summaries_still_load(name, kind, tmp_path):
    """The fixtures are summary.json files written by cnnlab at commit eb70675 (before kind/schema_version)."""
    folder = shutil.copytree(LEGACY / name, tmp_path / name)
    assert "schema_version" not in json.loads((folder / "summary.json").read_text())
    summary = runs.read_summary(folder)
    assert summary.kind == kind and summary.schema_version == runs.SCHEMA_VERSION
    if kind == "train":
        assert isinstance(summary, runs.ClassifierSummary) and summary.test_accuracy is not None
        assert summary.classes[0] == "airplane" and not summary.unknown
    if kind == "style-network":
        assert summary.final_loss is not None and summary.settings["width"] == 4


def test_a_newer_schema_version_is_a_one_line_error(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"kind": "train", "schema_version": 99}))
    with pytest.raises(UserError, match="schema_version 99, newer than this cnnlab reads"):
        runs.read_summary(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"kind": "poem", "schema_version": 1}))
    with pytest.raises(UserError, match="unknown kind 'poem'"):
        runs.read_summary(tmp_path)


def test_run_meta_round_trips_through_weights_metadata():
    meta = runs.RunMeta(("cat", "dog"), (3, 32, 32), (0.5, 0.4, 0.3), (0.2, 0.2, 0.2), epoch=3)
    assert runs.RunMeta.from_metadata(meta.to_metadata()) == meta
    # a time budget validates inside epochs: its best weights may come from epoch 3.3864 (evaluate and
    # `transfer --from` once refused such a run as one without metadata)
    inside = runs.RunMeta(("cat", "dog"), (3, 32, 32), (0.5,) * 3, (0.2,) * 3, epoch=3.3864)
    assert runs.RunMeta.from_metadata(inside.to_metadata()).epoch == 3.3864
    assert meta.view().crop == meta.view().resize == 32 and meta.view().mean == (0.5, 0.4, 0.3)
    backbone = runs.RunMeta(("a",), (3, 224, 224), (0.5,) * 3, (0.5,) * 3, resize=256)  # resize, then crop
    assert runs.RunMeta.from_metadata(backbone.to_metadata()).view().resize == 256
    with pytest.raises(UserError, match="lacks cnnlab's classifier metadata"):
        runs.RunMeta.from_metadata({"kind": "style_network"})


def test_the_session_refuses_to_overwrite_or_to_resume_what_is_not_there(tmp_path):
    with pytest.raises(UserError, match="cannot resume .*: it has no style.json"):
        RunSession.open(tmp_path / "none", kind="style-network", resume=True, settings_file="style.json")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "config.yaml").write_text("name: x\n")
    (tmp_path / "done" / "summary.json").write_text("{}")
    with pytest.raises(UserError, match="already finished"):
        RunSession.open(tmp_path / "done", kind="train", resume=True)
    with pytest.raises(UserError, match="already holds a run; continue it with --resume"):
        RunSession.open(tmp_path / "done", kind="train")
    session = RunSession.open(tmp_path / "fresh", kind="finetune")
    assert session.resume_command == f"cnnlab finetune --resume {tmp_path / 'fresh'}"


def test_a_new_run_that_fails_before_its_first_epoch_leaves_no_folder(tmp_path):
    """A one-line error before any epoch (bad data, a budget too small) removes the folder the run made;
    the user's own folder, a resumed run's, a trained run's and a run stopped by Ctrl-C stay."""
    from cnnlab.engine.run import Interrupted

    def fail(session, error=UserError("bad data")):
        session.run.write_text("config.yaml", "name: x\n")  # what a run writes before its data loads
        with pytest.raises(type(error)), session.removed_if_it_fails_early():
            raise error

    fail(RunSession.open(tmp_path / "runs" / "new", kind="train"))
    assert not (tmp_path / "runs").exists()  # runs/ was made for it
    (tmp_path / "runs").mkdir()
    fail(RunSession.open(tmp_path / "runs" / "new", kind="train"))
    assert not (tmp_path / "runs" / "new").exists() and (tmp_path / "runs").is_dir()  # a parent that was there stays
    (tmp_path / "mine").mkdir()
    fail(RunSession.open(tmp_path / "mine", kind="train"))
    assert (tmp_path / "mine" / "config.yaml").is_file()
    fail(RunSession.open(tmp_path / "stopped", kind="train"), Interrupted("interrupted after 0 finished epochs"))
    assert (tmp_path / "stopped" / "config.yaml").is_file()
    trained = RunSession.open(tmp_path / "trained", kind="train")
    trained.run.write_text("metrics.csv", "epoch\n1\n")
    fail(trained)
    assert (tmp_path / "trained" / "metrics.csv").is_file()
    fail(RunSession.open(tmp_path / "stopped", kind="train", resume=True))
    assert (tmp_path / "stopped" / "config.yaml").is_file()


def test_a_style_network_with_unreadable_photos_leaves_no_folder(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a jpeg")
    settings = style.StyleTrainSettings(style=str(STYLES / "starry_night.jpg"), content_dir=str(tmp_path / "photos"),
                                        image_size=32, iterations=1, loss_net="efficientnet_lite0")
    with pytest.raises(UserError, match="broken.jpg"):
        style.train(settings, tmp_path / "net", progress=False, cache_dir=str(tmp_path / "cache"))
    assert not (tmp_path / "net").exists()


def test_visualize_writes_a_valid_summary(trained_classifier, tmp_path):
    from cnnlab import visualize

    source = trained_classifier  # read only
    subject = visualize.load_subject(run=source)
    visualize.attribution(subject, [PHOTOS / "chelsea.png"], tmp_path / "attr", methods=["saliency", "gradcam"])
    data = assert_valid_summary(tmp_path / "attr", "visualize")
    assert data["method"] == "attribution" and data["source_run"] == str(source) and data["outputs"]
    visualize.classes(subject, [0, 1], tmp_path / "cls", visualize.MaximizeSettings(steps=2))
    assert assert_valid_summary(tmp_path / "cls", "visualize")["method"] == "classes"
