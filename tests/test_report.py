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
from test_cli import assert_one_line_error, cnnlab


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


def test_report_bad_input(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        write_report([tmp_path / "nowhere"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    proc = cnnlab("report", tmp_path / "empty", "-o", tmp_path / "out")
    assert_one_line_error(proc, "holds no cnnlab run")
