"""Transfer learning on a small dataset of your own: layouts, splits, the image and feature caches, the three
ways through the one engine, evaluation on other data, predict and compare. Freezing, head surgery and fast
feature extraction: test_transfer_models.py."""

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from cnnlab import config, train
from cnnlab.classify import evaluate, load_run_model, predict_images
from cnnlab.config import DataConfig
from cnnlab.data import folders, load
from cnnlab.errors import UserError
from cnnlab.models import create, surgery
from conftest import SHARED_DATA, assert_cell, read_table, split_accuracy
from test_bad_input import assert_one_line_error as assert_error_line
from test_bad_input import run as run_cli
from test_cli import cnnlab


def cli_main(argv: list) -> int:
    """The `cnnlab` command in this process (torch imported once); the features_runs fixture runs it as a process."""
    from cnnlab import cli

    return cli.main([str(a) for a in argv])

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
SCENES = SHARED_DATA / "scenes6"


def photo(path: Path, color, seed: int, size=(40, 30)) -> None:
    """A noisy image of one dominant colour (the class), saved in the format of the suffix."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(color, 40, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def imagefolder(root: Path, per_class=8, splits=False) -> Path:
    for split in (("train", "val") if splits else (None,)):
        for c, color in COLORS.items():
            folder = root / split / c if split else root / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class if split != "val" else 3):
                photo(folder / f"{c}_{i}.{'png' if i % 2 else 'jpg'}", color, zlib.crc32(f"{c}{i}{split}".encode()))
    return root


def terrassa(root: Path, per_class=6) -> Path:
    for split in ("train", "val"):
        images = root / split / "images"
        images.mkdir(parents=True)
        names, labels = [], []
        for c, color in COLORS.items():
            for i in range(per_class if split == "train" else 2):
                name = f"{split}_{c}_{i}.jpg"
                photo(images / name, color, i + (100 if split == "val" else 0))
                names.append(name)
                labels.append(c)
        (root / split / f"{split}.txt").write_text("\n".join(names) + "\n")
        (root / split / "annotation.txt").write_text("\n".join(labels) + "\n")
    return root


def csv_dataset(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "img").mkdir()
    lines = ["path,label"]
    for c, color in COLORS.items():
        for i in range(6):
            photo(root / "img" / f"{c} {i}.png", color, i)  # a space in the name
            lines.append(f"img/{c} {i}.png,{c}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def data_cfg(path, tmp_path, **kw) -> DataConfig:
    return DataConfig(dataset="folder", path=str(path), cache_dir=str(tmp_path / "cache"), **kw)


# ------------------------------------------------------------------------------------------- layouts and splits


def test_each_layout_is_detected_and_read(tmp_path):
    cases = [(imagefolder(tmp_path / "if"), "imagefolder", {"train"}),
             (imagefolder(tmp_path / "ifs", splits=True), "imagefolder", {"train", "val"}),
             (terrassa(tmp_path / "ter"), "terrassa", {"train", "val"}),
             (csv_dataset(tmp_path / "csv"), "csv", {"train"}),
             (SCENES, "terrassa", {"train", "val"})]
    for path, layout, splits in cases:
        assert folders.detect_layout(path) == layout, path
        index = folders.INDEXERS[layout](path)
        assert set(index.splits) == splits
        if path != SCENES:
            assert index.classes == ["blue", "green", "red"]
    scenes = folders.index_terrassa(SCENES)
    assert len(scenes.splits["train"]) == 450 and len(scenes.splits["val"]) == 180
    assert scenes.classes == ["buildings", "forest", "glacier", "mountain", "sea", "street"]


def test_missing_splits_are_carved_stratified_and_seeded(tmp_path):
    root = imagefolder(tmp_path / "d", per_class=10)
    a = folders.index_dataset(data_cfg(root, tmp_path, val_fraction=0.2, test_fraction=0.1))
    assert [len(a.splits[s]) for s in ("train", "val", "test")] == [21, 6, 3]
    assert torch.bincount(a.labels("val"), minlength=3).tolist() == [2, 2, 2]  # stratified
    assert torch.bincount(a.labels("test"), minlength=3).tolist() == [1, 1, 1]
    seen = [p for s in a.splits.values() for p, _ in s]
    assert len(seen) == len(set(seen)) == 30  # disjoint, nothing lost
    b = folders.index_dataset(data_cfg(root, tmp_path, val_fraction=0.2, test_fraction=0.1))
    assert a.splits == b.splits
    c = folders.index_dataset(data_cfg(root, tmp_path, val_fraction=0.2, test_fraction=0.1, split_seed=5))
    assert a.splits["val"] != c.splits["val"]
    kept = folders.index_dataset(data_cfg(terrassa(tmp_path / "t"), tmp_path, val_fraction=0.5))
    assert len(kept.splits["val"]) == 6  # the data's own val split is kept, not carved
    # choosing settings: the data's own val split left out, validation carved from its training images
    chosen = folders.index_dataset(data_cfg(tmp_path / "t", tmp_path, val_fraction=0.5, ignore_splits=["val"]))
    own_val = {p for p, _ in kept.splits["val"]}
    assert len(chosen.splits["val"]) == 9 and len(chosen.splits["train"]) == 9
    assert not own_val & {p for s in chosen.splits.values() for p, _ in s}  # never seen while choosing


@pytest.mark.parametrize("damage,message", [
    ("short-annotation", "lists 18 images but .*annotation.txt has 17 class names"),
    ("missing-image", "train_red_0.jpg \\(line 1 of .*train.txt\\) does not exist"),
    ("latin1-list", "train.txt is not UTF-8 text"),
])
def test_broken_terrassa_folders_are_one_line_errors(damage, message, tmp_path):
    root = terrassa(tmp_path / "t")
    if damage == "short-annotation":
        lines = (root / "train" / "annotation.txt").read_text().splitlines()
        (root / "train" / "annotation.txt").write_text("\n".join(lines[:-1]) + "\n")
    elif damage == "missing-image":
        (root / "train" / "images" / "train_red_0.jpg").unlink()
    else:
        (root / "train" / "train.txt").write_bytes("caf\xe9.jpg\n".encode("latin-1"))
    with pytest.raises(UserError, match=message):
        folders.index_dataset(data_cfg(root, tmp_path))


def test_unknown_layouts_and_empty_folders_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="in no known layout"):
        folders.detect_layout(tmp_path / "empty")
    with pytest.raises(UserError, match="does not exist"):
        folders.detect_layout(tmp_path / "nowhere")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(UserError, match="not a .csv"):
        folders.detect_layout(tmp_path / "x.txt")


# ------------------------------------------------------------------------------------------- decode once


def test_images_are_decoded_once_then_come_from_the_cache(tmp_path):
    root = imagefolder(tmp_path / "d")
    cfg = data_cfg(root, tmp_path)
    first = load(cfg, None)
    assert first.decoded_images == 24 and first.train_images.shape[1:] == (3, 224, 224)
    again = load(cfg, None)
    assert again.decoded_images == 0 and torch.equal(again.train_images, first.train_images)
    assert torch.equal(again.val_images, first.val_images) and first.classes == ["blue", "green", "red"]
    photo(root / "red" / "red_0.jpg", COLORS["blue"], 1)  # a file changed: decoded again
    assert load(cfg, None).decoded_images == 24


# ------------------------------------------------------------------------------------------- the three ways


def tiny_cifar_run(fake_cifar_root, out):
    cfg = config.resolve(None, {"data.root": str(fake_cifar_root), "data.download": False, "data.val_size": 100,
                                "model.widths": [8, 16], "model.fc_width": 16, "model.batchnorm": True,
                                "train.epochs": 2, "train.batch_size": 50, "train.progress": False, "out": str(out)})
    return train(cfg).run_dir


def test_transfer_from_a_cifar_run_trains_only_the_new_classifier(fake_cifar_root, tmp_path):
    source = tiny_cifar_run(fake_cifar_root, tmp_path / "cifar")
    root = imagefolder(tmp_path / "d")
    # the preset's learning rate is for real datasets: on 13 training photos (one step an epoch) it barely moves
    assert cli_main(["transfer", "--from", source, "--data", root, "--epochs", "40", "--out", tmp_path / "t",
                     "--no-progress", "--cache-dir", tmp_path / "cache", "--val-fraction", "0.25", "--lr", "0.01"]) == 0
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["kind"] == "transfer" and summary["classes"] == ["blue", "green", "red"]
    assert summary["trainable"] == "head"
    # learned, judged on 60 photos no epoch was chosen on (chance: 1/3; 49 or more right by luck: p < 1e-12;
    # measured: 1.0 in fp32 and bf16)
    held_out = tmp_path / "held-out"
    for c, color in COLORS.items():
        (held_out / c).mkdir(parents=True)
        for i in range(20):
            photo(held_out / c / f"{i}.png", color, 1000 + i)
    held = evaluate(tmp_path / "t", data_path=str(held_out))
    assert held["test_images"] == 60 and held["test_accuracy"] > 0.8, held["test_accuracy"]
    src, new = load_file(Path(source) / "best.safetensors"), load_file(tmp_path / "t" / "best.safetensors")
    assert new["classifier.fc2.weight"].shape == (3, 16)
    for k in src:
        if not k.startswith("classifier.fc2"):
            assert torch.equal(src[k], new[k]), k  # frozen: weights and batch-norm statistics unchanged
    model, cfg, _ = load_run_model(tmp_path / "t")
    assert cfg.model.name == "cnn4" and cfg.transfer.from_run == str(source)


@pytest.fixture(scope="module")
def features_runs(tmp_path_factory):
    """Two features runs on one small colour dataset, sharing one cache: f1 (the preset, 20 epochs), started from
    another folder (the preset is found from anywhere), then f2 (a weak run: a tiny learning rate, 3 epochs),
    which finds the features f1 extracted. Tests read them; what they write goes elsewhere."""
    base = tmp_path_factory.mktemp("features")
    root = imagefolder(base / "d")
    common = ["--data", root, "--epochs", "20", "--no-progress", "--cache-dir", base / "cache", "--val-fraction",
              "0.25"]
    proc = cnnlab("features", *common, "--out", base / "f1", cwd=base)  # the command as a user runs it
    assert proc.returncode == 0, proc.stderr
    assert cli_main(["features", *common, "--lr", "0.00003", "--epochs", "3", "--out", base / "f2"]) == 0
    return base


def test_features_run_extracts_once_and_trains_a_softmax_classifier(features_runs, tmp_path, capsys):
    base = features_runs
    first = json.loads((base / "f1" / "summary.json").read_text())
    assert first["kind"] == "features" and first["feature_cache"] == "miss" and first["decoded_images"] == 24
    assert first["feature_dimensions"] == 1280 and first["best_val_accuracy"] >= 0.8
    # the interface's key is the kept weights' accuracy: best.safetensors evaluated again on the validation split
    accuracy, images = split_accuracy(base / "f1", "val")
    assert images == first["val_images"] == 6
    assert first["val_accuracy"] == first["best_val_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    second = json.loads((base / "f2" / "summary.json").read_text())
    assert second["feature_cache"] == "hit" and second["decoded_images"] == 0  # decoded and extracted nothing
    # `compare`'s table holds each run's own figures, read from its summary.json: a strong run, a weak one, and a
    # copy of the weak one whose figures were changed to values no two columns share (a column read from the
    # wrong key shows there even where real runs happen to have equal figures)
    import shutil

    shutil.copytree(base / "f2", tmp_path / "f3")
    doctored = json.loads((tmp_path / "f3" / "summary.json").read_text())
    doctored.update(best_val_accuracy=0.71, val_accuracy=0.71, final_val_accuracy=0.43, test_accuracy=0.29, epochs=7,
                    train_seconds=90.0)
    (tmp_path / "f3" / "summary.json").write_text(json.dumps(doctored))
    runs = [base / "f1", base / "f2", tmp_path / "f3"]
    code, out, err = run_cli(["compare", *runs, "--course", "--out", tmp_path / "cmp"], capsys)
    assert code == 0 and "course: fine-tuning" in out, err
    assert (tmp_path / "cmp" / "comparison.png").is_file()
    rows = read_table(tmp_path / "cmp" / "comparison.csv")
    assert [r["run"] for r in rows[:3]] == ["f1", "f2", "f3"] and len(rows) == 3 + 3  # the course's rows follow
    for row, run in zip(rows, runs):
        s = json.loads((run / "summary.json").read_text())
        for column, key in (("kind", "kind"), ("model", "model"), ("trainable", "trainable"), ("epochs", "epochs"),
                            ("val_accuracy", "best_val_accuracy"), ("test_accuracy", "test_accuracy")):
            assert_cell(row[column], s[key])
        assert_cell(row["minutes"], s["train_seconds"] / 60)
        assert row["data"] == "d" and row["source"] == str(run)
    from cnnlab.report.compare import COURSE

    assert [(r["run"], float(r["val_accuracy"])) for r in rows[3:]] == [(label, acc) for label, _, acc in COURSE]
    weights = load_file(base / "f1" / "best.safetensors")
    assert set(weights) == {"weight", "bias"} and weights["weight"].shape == (3, 1280)
    # the whole model (backbone + this classifier) predicts images
    preds = predict_images(base / "f1", [base / "d" / "red"], top_k=2)
    assert len(preds) == 8 and all(p["predictions"][0]["class_name"] == "red" for p in preds)


def test_finetune_trains_the_last_layers_and_keeps_frozen_batch_norm(tmp_path):
    root = imagefolder(tmp_path / "d", per_class=4)
    out = tmp_path / "ft"
    assert cli_main(["finetune", "--data", root, "--trainable-layers", "4", "--epochs", "2", "--head-epochs", "1",
                     "--no-progress", "--cache-dir", tmp_path / "cache", "--out", out, "train.batch_size=6",
                     "--val-fraction", "0.25", "--test-fraction", "0", "data.augment.color_jitter=0.1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "finetune" and summary["trainable"] == "4"
    pretrained = create("efficientnet_lite0", num_classes=3).state_dict()
    tuned = load_file(out / "best.safetensors")
    trainable = surgery.trainable_layers(create("efficientnet_lite0", num_classes=3), "4")
    assert trainable == ["_blocks.15._bn2", "_conv_head", "_bn1", "_fc"]
    for k, v in pretrained.items():
        layer = k.rsplit(".", 1)[0]
        if layer not in trainable:
            assert torch.equal(v, tuned[k]), k  # frozen weights and running statistics untouched
    assert not torch.equal(pretrained["_conv_head.weight"], tuned["_conv_head.weight"])


def test_kept_batch_norm_statistics_still_learn_scale_and_shift(tmp_path):
    """transfer.bn_statistics=frozen: the trainable layers' batch norms keep ImageNet's running statistics (eval
    mode in training) while their scale and shift train."""
    root = imagefolder(tmp_path / "d", per_class=4)
    out = tmp_path / "ft"
    assert cli_main(["finetune", "--data", root, "--trainable-layers", "4", "--epochs", "2", "--no-progress",
                     "--cache-dir", tmp_path / "cache", "--out", out, "train.batch_size=6", "--val-fraction", "0.25",
                     "--test-fraction", "0", "transfer.bn_statistics=frozen", "--lr", "0.01"]) == 0
    pretrained = create("efficientnet_lite0", num_classes=3).state_dict()
    tuned = load_file(out / "best.safetensors")
    for stat in ("running_mean", "running_var"):
        assert torch.equal(pretrained[f"_bn1.{stat}"], tuned[f"_bn1.{stat}"]), stat
    assert not torch.equal(pretrained["_bn1.weight"], tuned["_bn1.weight"])


def test_evaluate_on_other_data_matches_classes_by_name(features_runs, tmp_path, capsys):
    run = features_runs / "f1"
    other = tmp_path / "other"
    for c, color in reversed(list(COLORS.items())):  # same classes, other images
        (other / c).mkdir(parents=True)
        for i in range(3):
            photo(other / c / f"{i}.jpg", color, 500 + i)
    ev = evaluate(run, data_path=str(other))
    assert ev["test_images"] == 9 and ev["test_accuracy"] >= 0.8 and ev["classes"] == ["blue", "green", "red"]
    (other / "purple").mkdir()
    photo(other / "purple" / "0.jpg", (150, 0, 150), 1)
    assert_error_line(*run_cli(["evaluate", run, "--data", other], capsys)[::2],
                      "has class 'purple' that the run does not know")


def test_pretrained_features_separate_real_scenes(tmp_path):
    """The issue's check on real photos: scenes6 (6 classes, chance 17 %), EfficientNet-Lite0 features."""
    out = tmp_path / "scenes"
    assert cli_main(["features", "--data", SCENES, "--no-progress", "--cache-dir", tmp_path / "cache", "--out",
                     out]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layout"] == "terrassa" and summary["val_images"] == 180 and summary["test_images"] == 90
    assert summary["best_val_accuracy"] > 0.8 and summary["test_accuracy"] > 0.8
    # both figures are the kept weights' own: best.safetensors evaluated again on the split's features
    for split, key in (("val", "val_accuracy"), ("test", "test_accuracy")):
        accuracy, images = split_accuracy(out, split)
        assert images == summary[f"{split}_images"] and summary[key] == pytest.approx(accuracy, abs=1e-6), split


def test_bad_transfer_requests_are_one_line_errors(tmp_path, capsys):
    assert_error_line(*run_cli(["features", "--data", tmp_path / "nowhere", "--out", tmp_path / "r"], capsys)[::2],
                      "nowhere does not exist")
    assert_error_line(*run_cli(["transfer", "--from", tmp_path, "--data", SCENES, "--out", tmp_path / "r"],
                               capsys)[::2], "is not a trained cnnlab run directory")
    assert_error_line(*run_cli(["finetune", "--data", SCENES, "--trainable-layers", "_blocks.99", "--out",
                                tmp_path / "r", "--cache-dir", tmp_path / "cache", "--epochs", "1"], capsys)[::2],
                      "neither a number, 'all', 'head' nor a block")


def test_finetuning_can_start_from_a_features_runs_classifier(features_runs, tmp_path, capsys):
    f1, root = features_runs / "f1", features_runs / "d"
    common = ["--data", root, "--no-progress", "--cache-dir", tmp_path / "cache", "--val-fraction", "0.25"]
    assert cli_main(["finetune", *common, "--epochs", "1", "--head-from", f1, "--out", tmp_path / "ft",
                     "--trainable-layers", "head", "--head-epochs", "0", "optim.lr=1e-12", "train.batch_size=6",
                     "train.label_smoothing=0"]) == 0
    start, tuned = load_file(f1 / "best.safetensors"), load_file(tmp_path / "ft" / "best.safetensors")
    assert torch.allclose(tuned["_fc.weight"], start["weight"], atol=1e-6)  # began at the features run's head
    assert torch.allclose(tuned["_fc.bias"], start["bias"], atol=1e-6)
    code, _, err = run_cli(["finetune", *common, "--epochs", "1", "--head-from", tmp_path / "ft", "--out",
                            tmp_path / "x"], capsys)
    assert_error_line(code, err, "is not a features run")
    other = imagefolder(tmp_path / "d2", per_class=4)
    (other / "red").rename(other / "rouge")
    code, _, err = run_cli(["finetune", "--data", other, "--epochs", "1", "--head-from", f1, "--out", tmp_path / "y",
                            "--cache-dir", tmp_path / "cache"], capsys)
    assert_error_line(code, err, "was trained on classes")


def test_transfer_runs_report_a_test_split_no_choice_saw(tmp_path):
    """The presets carve a test split once (stratified, seeded) where the data has none: summary.json reports
    test_accuracy on it beside best_val_accuracy, and its photos are neither training nor validation photos."""
    from cnnlab.data.folders import index_dataset

    root = imagefolder(tmp_path / "d", per_class=10)
    cfg = config.resolve("features", {"data.path": str(root), "data.cache_dir": str(tmp_path / "cache"),
                                      "train.epochs": 30, "train.precision": "fp32", "train.progress": False,
                                      "out": str(tmp_path / "f")})
    summary = train(cfg).summary
    assert summary["test_images"] == 6 and summary["val_images"] == 6 and summary["train_images"] == 18
    assert summary["test_accuracy"] is not None and summary["best_val_accuracy"] is not None
    assert "carved once" in summary["test_split"] and "split seed 0" in summary["test_split"]
    index = index_dataset(cfg.data)
    files = {split: {str(p) for p, _ in items} for split, items in index.splits.items()}
    assert not files["test"] & files["train"] and not files["test"] & files["val"]
    assert not files["val"] & files["train"] and sum(map(len, files.values())) == 30
    assert index_dataset(cfg.data).splits["test"] == index.splits["test"]  # carved the same every time
    # the reported test figure is the kept weights' accuracy on exactly those photos, recomputed from the files
    evaluation = evaluate(tmp_path / "f")
    assert evaluation["test_images"] == 6 and evaluation["test_accuracy"] == pytest.approx(summary["test_accuracy"])
