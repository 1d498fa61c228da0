"""`cnnlab serve` left running while its user browses the web (issue 23): who may ask (Host on every bind, the
token off loopback, state changes only from the app's own page), names checked before anything is loaded,
a bounded model cache, bounded decoding off the threads the pages use, bounded page-started runs, no server
paths or linked files on the web, and a stop within seconds with a progress stream open."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from cnnlab.errors import UserError
from cnnlab.serve import ServeSettings, create_app
from cnnlab.serve.state import Models
from conftest import SHARED_DATA
from test_report import _classifier_run
from test_serve import local_client

PHOTO = (SHARED_DATA / "images" / "photos" / "chelsea.png").read_bytes()
EVIL = {"Origin": "http://evil.example"}
BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/130"}
PAGE = {**BROWSER, "Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin", "X-Requested-With": "cnnlab"}
PAGE_AT_8123 = {**PAGE, "Origin": "http://127.0.0.1:8123"}


def _image(**kw):
    return {"image": ("c.png", kw.pop("data", PHOTO), "application/octet-stream")}


def _png(width: int, height: int, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def app_client(tmp_path):
    runs = tmp_path / "runs"
    _classifier_run(runs / "cnn4-a")
    app = create_app(ServeSettings(runs))
    with local_client(app) as c:
        yield app, c, runs


def test_another_sites_requests_are_refused_and_start_nothing(app_client):
    app, c, runs = app_client
    before = sorted(p.name for p in runs.iterdir())
    for headers in (EVIL, {**EVIL, "X-Requested-With": "cnnlab"}, {"Origin": "null"},
                    {**BROWSER, "Sec-Fetch-Site": "cross-site"}, {**BROWSER, "Sec-Fetch-Site": "same-site"},
                    BROWSER, {"Origin": "http://127.0.0.1:9999"}):  # another port is another origin
        for url, extra in (("/api/train", {"data": {"preset": "demo"}}),
                           ("/api/predict", {"files": _image(), "data": {"model": "vgg19"}}),
                           ("/api/stylize", {"files": _image(), "data": {"network": "cnn4-a"}})):
            response = c.post(url, headers=headers, **extra)
            assert response.status_code == 403, (url, headers, response.text)
            assert "refused" in response.json()["error"]
    train_plain = c.post("/api/train", headers={**EVIL, "Content-Type": "text/plain"}, content=b"x=1")
    assert train_plain.status_code == 403  # a form posted as text/plain (a beacon) too
    assert sorted(p.name for p in runs.iterdir()) == before  # no run folder
    assert c.get("/api/status").json() == {"models": [], "training": False, "stopping": False}
    own = c.post("/api/predict", headers=PAGE, files=_image())  # the page itself (its header, its Origin)
    assert own.status_code == 200, own.text
    assert c.post("/api/predict", files=_image()).status_code == 200  # a program: no browser marks
    assert c.get("/api/status").json()["models"] == ["classifier:efficientnet_lite0"]


def test_unknown_model_names_are_refused_before_anything_is_kept(app_client):
    app, c, _ = app_client
    for i in range(30):
        response = c.post("/api/predict", files=_image(data=b"not even an image"), data={"model": f"junk-{i}" * 50})
        assert response.status_code == 400, response.text  # the name first: no decoding, no 415
        error = response.json()["error"]
        assert "unknown model" in error and "efficientnet_lite0" in error and "vgg19" in error and len(error) < 600
    models = app.state.serve.models
    assert models.loaded() == [] and models.loading() == 0 and models.loads == 0


def test_the_model_cache_keeps_a_few_recently_used_and_failed_loads_leave_nothing():
    models = Models(capacity=2)
    for key in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" comes
        models.get(key, lambda key=key: f"model {key}")
    assert models.loaded() == ["a", "c"] and models.loads == 3

    def broken():
        raise ValueError("no such weights")

    for _ in range(3):
        with pytest.raises(ValueError):
            models.get("bad", broken)
    assert models.loaded() == ["a", "c"] and models.loading() == 0
    with ThreadPoolExecutor(8) as pool:  # concurrent first requests: one build
        items = list(pool.map(lambda _: models.get("d", lambda: (time.sleep(0.2), object())[1]), range(8)))
    assert len({id(item) for item in items}) == 1 and models.loads == 4 and models.loading() == 0


def test_the_host_check_is_on_every_bind(tmp_path):
    for host in ("127.0.0.1", "0.0.0.0"):
        settings = ServeSettings(tmp_path, host=host, extra_hosts=["Lab-Box.example"], token="t" * 20)
        with TestClient(create_app(settings)) as c:
            auth = {"Authorization": "Bearer " + "t" * 20}
            for name in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "127.0.0.2", "lab-box.example:8000",
                         socket.gethostname()):
                assert c.get("/api/runs", headers={**auth, "Host": name}).status_code == 200, (host, name)
            for name in ("evil.example", "evil.example:8000", "localhost.evil.example", "[::1", "a:b:c"):
                refused = c.get("/api/runs", headers={**auth, "Host": name})
                assert refused.status_code == 400 and "--allow-host" in refused.json()["error"], (host, name)
            lan = c.get("/api/runs", headers={**auth, "Host": "192.0.2.7:8000"}).status_code
            assert lan == (200 if host == "0.0.0.0" else 400)  # an IP literal is no DNS rebinding


def test_off_loopback_every_request_but_healthz_needs_the_token(tmp_path):
    settings = ServeSettings(tmp_path, host="0.0.0.0", port=8123)
    token = settings.token
    assert token and len(token) >= 32 and settings.url().endswith(f":8123/?token={token}")
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8123") as c:
        assert c.get("/healthz").status_code == 200
        for url in ("/", "/api/runs", "/api/status"):
            missing = c.get(url)
            assert missing.status_code == 401 and "token" in missing.json()["error"], url
        assert c.get("/api/runs", params={"token": "wrong"}).status_code == 403
        assert c.post("/api/predict", files=_image(), data={"model": "x"}).status_code == 401
        assert c.post("/api/predict", files=_image(), data={"model": "x"},
                      headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert c.get("/api/runs", params={"token": token}).status_code == 200
        assert c.get("/api/runs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        refused = c.post("/api/predict", files=_image(), data={"model": "x"},
                         headers={**EVIL, "Authorization": f"Bearer {token}"})
        assert refused.status_code == 403  # the token does not make a foreign page's request its own
        unknown = c.post("/api/predict", files=_image(), data={"model": "x"}, params={"token": token})
        assert unknown.status_code == 400
        opened = c.get("/", params={"token": token}, follow_redirects=False)  # the printed URL, in a browser
        assert opened.status_code == 303 and opened.headers["location"] == "/"
        cookie = opened.headers["set-cookie"]
        assert "cnnlab-token-8123=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        c.cookies.set("cnnlab-token-8123", token)
        assert c.get("/").status_code == 200  # the page, its requests and links now carry the cookie
        assert c.post("/api/predict", files=_image(), data={"model": "x"}, headers=PAGE_AT_8123).status_code == 400
        assert c.post("/api/predict", files=_image(), data={"model": "x"}, headers=BROWSER).status_code == 403



def test_decoding_is_bounded_in_pixels_and_in_size(tmp_path):
    from cnnlab.serve.safety import decode_upload

    with local_client(create_app(ServeSettings(tmp_path))) as c:
        big = c.post("/api/predict", files=_image(data=_png(6000, 5000)))  # 30 MP, a small file
        assert big.status_code == 413 and "6,000 x 5,000" in big.json()["error"] and "--max-megapixels" in big.text
    jpeg = io.BytesIO()
    Image.new("RGB", (3000, 2000), "red").save(jpeg, "JPEG")
    small = decode_upload(jpeg.getvalue(), "j", max_pixels=2_000_000, side=1024)  # decoded at 1/2 scale
    assert tuple(small.shape) == (3, 1000, 1500)
    with pytest.raises(Exception, match="too large"):
        decode_upload(_png(2000, 1100), "p", max_pixels=2_000_000, side=1024)  # a PNG has no reduced decoding
    for mode in ("RGBA", "P", "I;16", "F", "1", "LA"):
        picture = decode_upload(_png(2100, 1000, mode) if mode != "F" else _tiff_f(2100, 1000), "m",
                                max_pixels=25_000_000, side=512)
        assert picture.dtype == torch.uint8 and picture.shape[0] == 3 and 512 <= picture.shape[2] < 1024, mode


def _tiff_f(width, height) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.linspace(0, 1, width * height, dtype=np.float32).reshape(height, width)).save(out, "TIFF")
    return out.getvalue()


def test_model_work_waits_off_the_threads_that_answer_the_pages(app_client, monkeypatch):
    import cnnlab.serve.deps as deps
    import cnnlab.serve.routes.predict as predict

    app, c, _ = app_client
    busy, most = [0], [0]
    lock = threading.Lock()
    real_decode = deps.decode_upload

    def counted_decode(*args):
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        time.sleep(0.05)
        try:
            return real_decode(*args)
        finally:
            with lock:
                busy[0] -= 1

    monkeypatch.setattr(deps, "decode_upload", counted_decode)
    monkeypatch.setattr(predict, "_answer", lambda *a: time.sleep(0.25) or {"predictions": []})
    with ThreadPoolExecutor(44) as pool:  # more requests than AnyIO's 40 worker threads
        answers = [pool.submit(c.post, "/api/predict", files=_image()) for _ in range(42)]
        time.sleep(1.5)
        for url in ("/healthz", "/api/runs", "/"):
            start = time.monotonic()
            assert c.get(url).status_code == 200
            assert time.monotonic() - start < 1.0, url
        assert all(a.result().status_code == 200 for a in answers)
    assert most[0] == 2  # at most two decodes at once


def test_page_started_runs_are_spaced_and_only_the_newest_kept(tmp_path, monkeypatch):
    for proxy in ("http_proxy", "https_proxy"):  # the runs fail at once (no data): this is about starting them
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    runs, empty = tmp_path / "runs", tmp_path / "no-data"
    empty.mkdir()
    old = [runs / f"web-demo-2024010{i}-120000-abcde{i}" for i in range(1, 5)]
    for folder in old:
        folder.mkdir(parents=True)
    (runs / "web-notes").mkdir()  # not a name the server gives: never deleted
    os.symlink(tmp_path, runs / "web-demo-20230101-120000-aaaaaa")
    settings = ServeSettings(runs, data_root=str(empty), keep_web_runs=3, train_interval=30)
    with local_client(create_app(settings)) as c:
        job = c.post("/api/train", data={"preset": "demo", "minutes": "0.2", "train_images": "200"})
        assert job.status_code == 202
        names = {p.name for p in runs.iterdir()} - {job.json()["run"]}
        assert names == {old[2].name, old[3].name, "web-notes", "web-demo-20230101-120000-aaaaaa"}
        with c.stream("GET", job.json()["events"]) as events:
            assert "failed" in "".join(events.iter_lines())  # the run has ended
        again = c.post("/api/train", data={"preset": "demo"})
        assert again.status_code == 429 and "--train-interval" in again.json()["error"]
        assert 0 < int(again.headers["retry-after"]) <= 30


def test_progress_events_are_json_and_resume_where_the_browser_left(tmp_path):
    from cnnlab.serve.jobs import Job, TrainingJobs

    run = tmp_path / "runs" / "web-demo-x"
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("epoch,train_loss,val_accuracy\n1,1.5,\n2,1.1,0.5\n3,0.9,0.6\n")
    done = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    done.wait()
    log = tmp_path / "log"
    log.write_text(f"error: cannot read {Path.home()}/secret/data.bin\n")
    jobs = TrainingJobs(tmp_path / "runs", tmp_path, scrub=lambda t: t.replace(str(Path.home()), "~"))
    job = Job("0" * 32, run.name, run, log, done)

    async def collect(after):
        return "".join([chunk async for chunk in jobs.events(job, after)])

    text = asyncio.run(collect(0))
    assert "NaN" not in text and '"val_accuracy": null' in text
    assert [line for line in text.splitlines() if line.startswith("id: ")] == ["id: 1", "id: 2", "id: 3"]
    assert "~/secret" in text and str(Path.home()) + "/" not in text
    resumed = asyncio.run(collect(2))  # Last-Event-ID: 2
    assert "id: 3" in resumed and "id: 1" not in resumed and "id: 2" not in resumed


def test_reports_on_the_web_show_no_server_paths_and_no_linked_files(tmp_path, monkeypatch):
    runs, data = tmp_path / "runs", tmp_path / "data"
    run = _classifier_run(runs / "r")
    (run / "config.yaml").write_text(f"out: {run}\ndata: {{root: {data}}}\ncache: {Path.home()}/.cache/x\n")
    secret = tmp_path / "secret.csv"
    secret.write_text("run,val_accuracy\nTOP-SECRET,0.99\n")
    os.symlink(secret, run / "comparison.csv")
    linked = _classifier_run(runs / "linked")
    (linked / "metrics.csv").unlink()
    os.symlink(secret, linked / "metrics.csv")
    with local_client(create_app(ServeSettings(runs, data_root=data))) as c:
        page = c.get("/runs/r/report/index.html")
        assert page.status_code == 200 and "out: r" in page.text
        assert str(tmp_path) not in page.text and str(Path.home()) not in page.text and "TOP-SECRET" not in page.text
        other = c.get("/runs/linked/report/index.html").text
        assert "TOP-SECRET" not in other
        state = c.app.state.serve
        def broken(*_args, **_kwargs):
            raise UserError("the report could not be written")

        monkeypatch.setattr("cnnlab.report.html.write_report", broken)
        (run / "summary.json").touch()  # stale: written again, and this time it fails
        os.utime(run / "summary.json", (time.time() + 5, time.time() + 5))
        assert c.get("/runs/r/report/index.html").status_code == 400
        assert sorted(p.name for p in state.reports.iterdir()) == ["linked", "r"]  # no half-written folder left
        real_glob = Path.glob
        monkeypatch.setattr(Path, "glob", lambda self, pattern: [*real_glob(self, pattern), self / "gone.png"])
        state.keep_recent()  # a picture that vanished during the sort is skipped, not a 500


def test_the_serve_flags_are_made_from_the_settings(monkeypatch):
    import argparse

    from cnnlab.serve.run import add_arguments, settings_from

    parser = add_arguments(argparse.ArgumentParser())
    assert settings_from(parser.parse_args([])) == ServeSettings()  # one set of defaults
    args = parser.parse_args(["--host", "0.0.0.0", "--allow-host", "Lab", "--allow-host", "lab.example",
                              "--max-megapixels", "10", "--keep-web-runs", "3", "--train-interval", "0",
                              "--max-models", "1", "--access-log"])
    settings = settings_from(args)
    assert settings.extra_hosts == ("lab", "lab.example") and settings.max_pixels == 10_000_000
    assert settings.keep_web_runs == 3 and settings.train_interval == 0 and settings.max_models == 1
    assert settings.access_log and len(settings.token) >= 32 and not settings.loopback
    monkeypatch.setenv("CNNLAB_SERVE_TOKEN", "s" * 20)
    assert settings_from(parser.parse_args(["--host", "0.0.0.0"])).token == "s" * 20
    for bad in (["--max-megapixels", "0"], ["--port", "70000"], ["--host", "0.0.0.0", "--token", "short"]):
        with pytest.raises(UserError):
            settings_from(parser.parse_args(bad))


def _serve(tmp_path: Path, *flags: str, env: dict | None = None) -> tuple[subprocess.Popen, str, int]:
    """A real `cnnlab serve` process; (process, its first printed line, port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / f"serve-{port}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", "--port", str(port), "--threads", "1", *flags],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, Path(log.name).read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            assert time.monotonic() < deadline, Path(log.name).read_text()
            time.sleep(0.2)
    return proc, Path(log.name).read_text().splitlines()[0], port


def test_a_lan_bind_prints_its_token_url_and_refuses_without_it(tmp_path):
    import httpx

    proc, line, port = _serve(tmp_path, "--host", "0.0.0.0", "--runs", str(tmp_path / "runs"))
    try:
        assert "?token=" in line, line
        token = line.split("?token=")[1].split()[0]
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(trust_env=False, timeout=30) as h:
            assert h.get(f"{base}/healthz").status_code == 200
            assert h.get(f"{base}/api/runs").status_code == 401
            foreign = h.get(f"{base}/api/runs", params={"token": token}, headers={"Host": "evil.example"})
            assert foreign.status_code == 400
            assert h.get(f"{base}/api/runs", params={"token": token}).status_code == 200
            assert h.get(f"{base}/api/runs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_kill_term_with_a_progress_stream_open_stops_server_and_run_within_5_s(tmp_path, fake_cifar_root):
    import httpx

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc, _, port = _serve(tmp_path, "--runs", str(tmp_path / "runs"), "--data-root", str(fake_cifar_root),
                           env={"TMPDIR": str(scratch)})
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(trust_env=False, timeout=30) as h:
            job = h.post(f"{base}/api/train", data={"preset": "demo", "minutes": "5", "train_images": "500"}).json()
            with h.stream("GET", base + job["events"]) as stream:
                lines = stream.iter_lines()
                assert next(lines).startswith(("retry", "event: start"))
                time.sleep(1.0)
                children = _children(proc.pid)
                assert children, "the training run was not started"
                start = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                rest = list(lines)  # the stream ends (not at the 30-minute budget)
                proc.wait(timeout=5)
                took = time.monotonic() - start
        assert took < 5, took
        assert any("stopped" in line for line in rest), rest
        for child in children:
            assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
        assert [p for p in scratch.iterdir() if p.name.startswith("cnnlab-serve-")] == []  # scratch removed
    finally:
        if proc.poll() is None:
            proc.kill()
