"""`cnnlab report`: a self-contained HTML page over run directories of every kind."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from cnnlab.data.images import save_png
from cnnlab.errors import UserError
from cnnlab.report.html import write_report
from test_bad_input import assert_one_line_error
from test_bad_input import run as run_cli


def _classifier_run(folder: Path, kind: str = "train", val: float = 0.8) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"name: {folder.name}\nmodel: {{name: cnn4}}\n")
    (folder / "summary.json").write_text(json.dumps({"kind": kind, "model": "cnn4", "test_accuracy": val - 0.01,
                                                     "best_val_accuracy": val, "epochs": 2, "train_seconds": 30,
                                                     "precision": "fp32", "cpu_class": "avx2-no-bf16"}))
    (folder / "metrics.csv").write_text("epoch,train_loss,val_accuracy\n1,1.5,0.6\n2,1.1,%s\n" % val)
    save_png(torch.rand(3, 20, 30), folder / "curves.png")
    save_png(torch.rand(3, 20, 20), folder / "confusion_matrix.png")
    return folder


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def _refs(index: Path) -> list[str]:
    parser = _Refs()
    parser.feed(index.read_text())
    return parser.refs


def test_report_covers_every_kind_and_references_only_its_own_files(tmp_path):
    a = _classifier_run(tmp_path / "runs" / "cnn4-a", val=0.7)
    b = _classifier_run(tmp_path / "runs" / "features-b", kind="features", val=0.9)
    grid = tmp_path / "runs" / "ablate-x"
    _classifier_run(grid / "bn", val=0.75)
    (grid / "comparison.csv").write_text("run,val_accuracy\nbn,0.75\n")
    save_png(torch.rand(3, 10, 10), grid / "comparison.png")
    styled = tmp_path / "runs" / "stylize-1"
    styled.mkdir()
    (styled / "summary.json").write_text(json.dumps({"method": "optimize", "initial": {"content_loss": 0,
                                                     "style_loss": 1.2}, "final": {"content_loss": 0.6,
                                                     "style_loss": 0.07}, "loss_net": {"name": "efficientnet_lite0"},
                                                     "seconds": 5}))
    save_png(torch.rand(3, 16, 16), styled / "stylized.png")
    index = write_report([a, b, grid, styled], tmp_path / "out")
    html = index.read_text()
    for fragment in ("cnn4-a", "features-b", "ablate-x", "stylize-1", "90.00 %", "style loss", "Comparison"):
        assert fragment in html, fragment
    refs = _refs(index)
    files = [r for r in refs if not r.startswith("#")]
    assert len(files) >= 8
    for ref in files:
        assert not re.match(r"^[a-z]+:", ref) and not ref.startswith("/"), ref  # no URL, no absolute path
        target = (index.parent / ref).resolve()
        assert target.is_file() and index.parent.resolve() in target.parents, ref
    anchors = {r[1:] for r in refs if r.startswith("#")}
    assert all(f'id="{a}"' in html for a in anchors)


def test_report_escapes_what_runs_contain(tmp_path):
    run = _classifier_run(tmp_path / "r")
    (run / "config.yaml").write_text("name: <script>alert(1)</script>\n")
    html = write_report([run], tmp_path / "out").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;" in html


def test_report_bad_input(tmp_path, capsys):
    with pytest.raises(UserError, match="does not exist"):
        write_report([tmp_path / "nowhere"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["report", tmp_path / "empty", "-o", tmp_path / "out"], capsys)
    assert_one_line_error(code, err, "holds no cnnlab run")


def _config_run(folder: Path, config: str, summary: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(config)
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "metrics.csv").write_text("epoch,val_accuracy\n1,0.5\n2,0.6\n")
    return folder


def test_course_report_places_runs_in_the_five_tasks_beside_the_published_figures(tmp_path):
    aug = "data: {augment: {translate: 0.1, flip: true}}\n"
    cnn = _config_run(tmp_path / "r" / "a-cnn", "model: {name: cnn4, batchnorm: true, dropout: [0.25, 0.25, 0.5]}\n"
                      + aug, {"kind": "train", "test_accuracy": 0.6311, "best_val_accuracy": 0.64,
                              "budget_minutes": 2, "cpu_class": "avx2-no-bf16", "precision": "fp32", "epochs": 3})
    mlp = _config_run(tmp_path / "r" / "b-mlp", "model: {name: mlp}\ntrain: {epochs: 200}\n",
                      {"kind": "train", "test_accuracy": 0.4012})
    feats = _config_run(tmp_path / "r" / "c-features", "model: {name: efficientnet_lite0}\n",
                        {"kind": "features", "val_accuracy": 0.9, "best_val_accuracy": 0.9122})
    plain = _config_run(tmp_path / "r" / "d-finetune", "schedule: {name: constant}\n",
                        {"kind": "finetune", "best_val_accuracy": 0.8833})
    plateau = _config_run(tmp_path / "r" / "e-finetune", "schedule: {name: plateau}\ndata: {augment: {flip: true}}\n",
                          {"kind": "finetune", "best_val_accuracy": 0.9444})
    styled = tmp_path / "r" / "f-style"
    styled.mkdir()
    (styled / "summary.json").write_text(json.dumps({"kind": "style_network", "final_loss": 3.25}))
    save_png(torch.rand(3, 16, 16), styled / "evolution.png")
    index = write_report([styled, plateau, plain, feats, mlp, cnn], tmp_path / "out", course=True)
    html = index.read_text()
    # The five tasks, in order, before the runs; each run's section follows its task's table.
    positions = [html.index(f'id="task{i}"') for i in range(1, 6)]
    assert positions == sorted(positions)
    where = {name: html.index(f'id="{name}"') for name in ("a-cnn", "b-mlp", "c-features", "d-finetune",
                                                             "e-finetune", "f-style")}
    bounds = [*positions, len(html)]
    for name, task in (("a-cnn", 1), ("b-mlp", 1), ("c-features", 2), ("d-finetune", 3), ("e-finetune", 4),
                       ("f-style", 5)):
        assert bounds[task - 1] < where[name] < bounds[task], name

    def row(label: str) -> str:
        return re.search(rf"<tr><td>{re.escape(label)}</td>(.*?)</tr>", html, re.S).group(1)

    # Course figure beside cnnlab's, cnnlab's linked to its run's section, with its conditions.
    bn = row("CNN + batch norm + dropout + augmentation")
    assert "89.00 %" in bn and '<a href="#a-cnn">63.11 %</a>' in bn and "budget 2 min" in bn and "avx2" in bn
    assert "35.00 %" in row("2-FC network, 200 epochs") and "40.12 %" in row("2-FC network, 200 epochs")
    assert "not run" in row("2-FC network, 100 epochs")
    assert "89.80 %" in row("ImageNet features + softmax") and "91.22 %" in row("ImageNet features + softmax")
    assert "93.20 %" in row("fine-tuning, low learning rate") and "88.33 %" in row("fine-tuning, low learning rate")
    tuned = row("fine-tuning + reduce-on-plateau + augmentation")
    assert "92.80 %" in tuned and "94.44 %" in tuned
    assert "3.25" in row("fast style network (Johnson et al.): training loss at the end")
    assert "validation split" in html and "test set" in html  # the protocol difference is stated
    for ref in _refs(index):
        assert ref.startswith("#") or (index.parent / ref).is_file(), ref


def test_course_figures_keep_the_keys_of_the_published_ones():
    from cnnlab.report import course

    figures = course.published()
    assert figures["task1"]["cnn_bn_dropout_aug"] == pytest.approx(0.89)
    assert figures["task1"]["fc_100"] == pytest.approx(0.36)
    assert figures["task1"]["cnn_aggressive_dropout"] is None  # the course showed its curves only
    assert figures["task2"]["features_softmax"] == pytest.approx(0.898)
    assert course.task1_key({"model": {"name": "cnn4", "dropout": "aggressive"},
                             "data": {"augment": {"flip": True}}}) == "cnn_aggressive_dropout"
    assert course.task1_key({"model": {"name": "cnn4", "dropout": [0.25, 0.25, 0.5]}}) == "cnn"
    assert course.task1_key({"model": {"name": "cnn4", "dropout": "none"}}) is None
    assert course.task1_key({"model": {"name": "mlp"}, "train": {"epochs": 100}}) == "fc_100"
