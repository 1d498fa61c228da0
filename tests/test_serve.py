"""`cnnlab serve`: the endpoints, the upload limits, content sniffing, path traversal, concurrency. Who may
ask (Host, token, own page), bounded decoding and model cache, page-started runs and stopping: test_serve_access.py."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from cnnlab import style
from cnnlab.data.cifar10 import CLASSES
from cnnlab.errors import UserError
from cnnlab.serve import ServeSettings, create_app
from cnnlab.serve.jobs import EPOCH_FIELDS
from conftest import SHARED_DATA, assert_cell, read_table
from test_report import _classifier_run

PHOTOS = SHARED_DATA / "images" / "photos"


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory, trained_classifier):
    root = tmp_path_factory.mktemp("runs")
    _classifier_run(root / "cnn4-a")
    shutil.copytree(trained_classifier, root / "tiny-cifar")  # a real run: config, weights, metadata
    settings = style.StyleTrainSettings(style=str(SHARED_DATA / "images" / "styles" / "the_scream.jpg"),
                                        content_dir=str(SHARED_DATA / "scenes6" / "train"), image_size=64,
                                        style_size=64, batch_size=4, epochs=1, width=8, residual_blocks=1,
                                        limit_images=8, loss_net="efficientnet_lite0", preview_images=1)
    style.train(settings, root / "scream-net", progress=False, cache_dir=str(root.parent / "cache"))
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_text("not for the web")
    os.symlink(outside, root / "escape")
    return root


def local_client(app) -> TestClient:
    """A test client addressed as a browser on this machine addresses the app (the Host check is on every
    bind; the test client's own default name, "testserver", is refused)."""
    return TestClient(app, base_url="http://127.0.0.1:8000")


@pytest.fixture(scope="module")
def client(runs_dir):
    with local_client(create_app(ServeSettings(runs_dir, max_upload_mb=1))) as c:
        yield c


def _photo(name="chelsea.png"):
    return {"image": (name, (PHOTOS / name).read_bytes(), "application/octet-stream")}


def test_health_and_page(client):
    assert client.get("/healthz").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "cnn4-a" in page.text and "scream-net" in page.text
    runs = client.get("/api/runs").json()["runs"]
    assert {r["name"] for r in runs} == {"cnn4-a", "scream-net", "tiny-cifar"}


def test_predict_top5_and_heatmap(client):
    response = client.post("/api/predict", files=_photo())
    assert response.status_code == 200, response.text
    data = response.json()
    assert len(data["predictions"]) == 5
    assert set(data["predictions"][0]) == {"class_index", "class_name", "probability"}
    assert "cat" in data["predictions"][0]["class_name"]
    probabilities = [p["probability"] for p in data["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001
    heat = client.get(data["heatmap"])
    assert heat.status_code == 200 and heat.headers["content-type"] == "image/png" and heat.content[:4] == b"\x89PNG"


def test_predict_with_a_trained_classifier_run(client, runs_dir):
    """A classifier run under --runs, named in the `model` field, predicts as `cnnlab predict` does with it."""
    from cnnlab.classify import predict_images

    response = client.post("/api/predict", files=_photo(), data={"model": "tiny-cifar"})
    assert response.status_code == 200, response.text
    served = response.json()["predictions"]
    expected = predict_images(runs_dir / "tiny-cifar", [PHOTOS / "chelsea.png"], top_k=5)[0]["predictions"]
    assert [p["class_name"] for p in served] == [p["class_name"] for p in expected]
    assert [p["probability"] for p in served] == pytest.approx([p["probability"] for p in expected], abs=1e-4)
    assert {p["class_name"] for p in served} <= set(CLASSES)  # the run's classes, not ImageNet's
    assert client.get(response.json()["heatmap"]).content[:4] == b"\x89PNG"


def test_images_are_accepted_by_content_not_name(client):
    renamed = {"image": ("photo.txt", (PHOTOS / "coffee.png").read_bytes(), "text/plain")}
    assert client.post("/api/predict", files=renamed).status_code == 200
    fake = {"image": ("photo.jpg", b"just some text, not a JPEG", "image/jpeg")}
    response = client.post("/api/predict", files=fake)
    assert response.status_code == 415 and "not an image file" in response.json()["error"]


def test_uploads_over_the_limit_get_413(client):
    big = {"image": ("big.png", b"\x89PNG" + b"0" * (2 * 2**20), "image/png")}
    response = client.post("/api/predict", files=big)
    assert response.status_code == 413 and "limit" in response.json()["error"]


@pytest.mark.parametrize("url", ["/runs/..%2f..%2fetc/report/index.html", "/runs/%2e%2e/report/index.html",
                                 "/runs/escape/report/index.html", "/runs/cnn4-a/report/..%2f..%2fsummary.json",
                                 "/runs/cnn4-a/report/%2fetc%2fpasswd", "/api/heatmaps/..%2f..%2fsecret.txt",
                                 "/runs/nothing-here/report/index.html"])
def test_no_path_leaves_the_runs_folder(client, url):
    response = client.get(url)
    assert response.status_code == 404, url
    assert "not for the web" not in response.text and "Traceback" not in response.text


def test_reports_of_runs_are_served(client):
    response = client.get("/runs/cnn4-a/report/index.html")
    assert response.status_code == 200 and "cnn4-a" in response.text
    assert client.get("/runs/cnn4-a/report/assets/cnn4-a/curves.png").status_code == 200


def test_errors_are_messages(client):
    response = client.post("/api/predict", files=_photo(), data={"model": "no_such_model"})
    assert response.status_code == 400 and "unknown model" in response.json()["error"]
    assert "efficientnet_lite0" in response.json()["error"]  # it names the valid models


def test_stylize_with_a_trained_network(client):
    response = client.post("/api/stylize", files=_photo("coffee.png"), data={"network": "scream-net"})
    assert response.status_code == 200, response.text
    assert client.get(response.json()["image"]).content[:4] == b"\x89PNG"
    bad = client.post("/api/stylize", files=_photo("coffee.png"), data={"network": "cnn4-a"})
    assert bad.status_code == 400 and "not a style network" in bad.json()["error"]
    unknown = client.post("/api/stylize", files={"image": ("x.png", b"no image", "x")}, data={"network": "nope"})
    assert unknown.status_code == 404  # the name is checked before anything is decoded


def test_twenty_concurrent_predictions_load_the_model_once(runs_dir):
    app = create_app(ServeSettings(runs_dir))
    with local_client(app) as c:
        payload = (PHOTOS / "chelsea.png").read_bytes()
        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(lambda _: c.post("/api/predict", files={"image": ("c.png", payload, "x")}),
                                    range(20)))
    assert all(a.status_code == 200 for a in answers)
    tops = {a.json()["predictions"][0]["class_name"] for a in answers}
    assert len(tops) == 1 and app.state.serve.models.loads == 1


def test_streamed_uploads_over_the_limit_get_413_too(client):
    def body():  # no Content-Length: the limit is counted as the body arrives
        yield b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n"
        for _ in range(40):
            yield b"0" * 65536
        yield b"\r\n--x--\r\n"

    response = client.post("/api/predict", content=body(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413 and "limit" in response.json()["error"]


def test_every_error_is_a_json_message(client):
    missing = client.post("/api/stylize", files=_photo())  # no network field
    assert missing.status_code == 422 and "network" in missing.json()["error"]
    assert client.get("/no/such/page").json() == {"error": "Not Found"}
    assert client.delete("/healthz").status_code == 405


def test_create_app_takes_settings_or_the_arguments_cmd_serve_passes(tmp_path):
    app = create_app(tmp_path, 2.5, allowed_hosts=["localhost"], data_root="d")  # cnnlab serve's call
    assert app.state.settings == ServeSettings(runs=tmp_path, max_upload_mb=2.5, allowed_hosts=("localhost",),
                                               data_root="d")
    assert not hasattr(app.state, "serve")  # nothing made (temporary folders, jobs) until it serves
    with pytest.raises(TypeError):
        create_app(ServeSettings(tmp_path), max_upload_mb=1)
    with pytest.raises(UserError, match="max_upload_mb"):
        ServeSettings(tmp_path, max_upload_mb=0)


def test_only_the_allowed_hosts_are_answered(tmp_path):
    with TestClient(create_app(ServeSettings(tmp_path, allowed_hosts=["localhost"]))) as c:
        assert c.get("/healthz").status_code == 400  # the test client's Host is "testserver"
        assert c.get("/healthz", headers={"host": "localhost"}).status_code == 200


def test_symlinked_files_inside_a_run_are_not_published(tmp_path):
    root = tmp_path / "runs"
    run = _classifier_run(root / "r")
    secret = tmp_path / "secret.png"
    secret.write_bytes((PHOTOS / "coffee.png").read_bytes())
    os.symlink(secret, run / "leak.png")
    with local_client(create_app(ServeSettings(root))) as c:
        page = c.get("/runs/r/report/index.html").text
        assert "leak" not in page and c.get("/runs/r/report/assets/r/leak.png").status_code == 404
        assert str(tmp_path) not in page  # no server paths in served pages


def _events(client, url: str) -> list[tuple[str, dict]]:
    events, name = [], None
    with client.stream("GET", url) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: "):])))
    return events


def test_a_run_started_from_the_page_streams_its_epochs_then_its_summary(tmp_path, fake_cifar_root):
    with local_client(create_app(ServeSettings(tmp_path / "runs", data_root=str(fake_cifar_root)))) as c:
        assert c.post("/api/train", data={"preset": "nope"}).status_code == 400
        refused = c.post("/api/train", data={"preset": "demo", "minutes": "999"})
        assert refused.status_code == 400 and "minutes" in refused.json()["error"]
        # Half a minute: a slowed CI machine's setup alone took 9 s, and 0.2 was refused as too small for a step.
        started = c.post("/api/train", data={"preset": "demo", "minutes": "0.5", "train_images": "300"})
        assert started.status_code == 202, started.text
        job = started.json()
        assert c.post("/api/train", data={"preset": "demo"}).status_code == 409  # one at a time
        events = _events(c, job["events"])
        kinds = [k for k, _ in events]
        assert kinds[0] == "start" and kinds[-1] == "done", events[-1]
        epochs = [d for k, d in events if k == "epoch"]
        run = tmp_path / "runs" / job["run"]
        rows = read_table(run / "metrics.csv")
        assert len(epochs) == len(rows) >= 1  # one event per row the run wrote, none missed
        for event, row in zip(epochs, rows):  # each event is its row of metrics.csv, field for field
            assert set(event) == set(EPOCH_FIELDS)
            for key in EPOCH_FIELDS:
                assert_cell(row.get(key, ""), event[key])
        done = events[-1][1]
        summary = json.loads((run / "summary.json").read_text())
        for key in ("test_accuracy", "best_val_accuracy", "epochs"):
            assert done[key] == summary[key], key
        assert done["seconds"] == summary["total_seconds"] and done["run"] == job["run"]
        assert done["report"] == f"/runs/{job['run']}/report/index.html"
        assert c.get(done["report"]).status_code == 200
        assert c.get("/api/train/" + "0" * 32 + "/events").status_code == 404
        assert c.get("/api/train/..%2f/events").status_code == 404


def test_a_run_that_fails_streams_its_one_line_error(tmp_path, monkeypatch):
    for proxy in ("http_proxy", "https_proxy"):  # the run's download attempt fails at once, offline or not
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    empty = tmp_path / "no-data"
    empty.mkdir()
    cwd = tmp_path / "cwd"  # a stray yaml.py where the server was started must not shadow the library
    cwd.mkdir()
    (cwd / "yaml.py").write_text("raise SystemExit('the stray yaml.py in the server folder was imported')\n")
    monkeypatch.chdir(cwd)
    with local_client(create_app(tmp_path / "runs", data_root=str(empty))) as c:
        job = c.post("/api/train", data={"preset": "demo", "minutes": "0.3", "train_images": "300"}).json()
        kind, data = _events(c, job["events"])[-1]
        assert kind == "failed" and "CIFAR-10" in data["error"], data
        assert str(tmp_path) not in data["error"] and "stray" not in data["error"]
