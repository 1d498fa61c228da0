"""End to end in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium)
opens a report and the web app as a person would, and a page from another origin tries to drive the app (it
must not: issue 23). `make test` installs the browser where it is missing
(scripts/ensure-browser); without one these tests fail with the command that installs it, never skip.

Screenshots are kept in test-artifacts/browser/ (or $CNNLAB_ARTIFACTS/browser/) for a person to look at.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SHARED_DATA
from test_report import _classifier_run

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("CNNLAB_ARTIFACTS", ROOT / "test-artifacts")) / "browser"
INSTALL = "scripts/ensure-browser (apt-get install chromium chromium-driver)"


def _executable(*names: str) -> str:
    for name in names:
        for candidate in (shutil.which(name), f"/usr/bin/{name}", f"/usr/lib/chromium/{name}"):
            if candidate and Path(candidate).is_file():
                return candidate
    pytest.fail(f"no {names[0]} found: run {INSTALL}; make test does it when it can")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _executable("chromium", "chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1600", "--renderer-process-limit=2"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=_executable("chromedriver")), options=options)
    driver.set_page_load_timeout(60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(folder: Path, runs: Path, *flags: str) -> tuple[subprocess.Popen, int, Path]:
    """A real `cnnlab serve` process (its requests logged); (process, port, log file) once it listens."""
    port = _free_port()
    log = folder / f"serve-{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", "--port", str(port), "--runs", str(runs),
                                 "--threads", "1", "--access-log", *flags], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.3)
    return proc, port, log


@pytest.fixture(scope="module")
def server(tmp_path_factory, fake_cifar_root):
    """A real `cnnlab serve` process on loopback, over a runs folder holding one classifier run."""
    runs = tmp_path_factory.mktemp("browser-runs")
    _classifier_run(runs / "cnn4-a")
    proc, port, log = _start_server(tmp_path_factory.mktemp("server"), runs, "--data-root", str(fake_cifar_root))
    yield f"http://127.0.0.1:{port}", runs, log
    proc.terminate()
    proc.wait(timeout=20)


def _wait(driver, condition: str, seconds: float = 120):
    """Poll a JavaScript expression until it is truthy; fail with a screenshot when it never is."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return {condition};")
        if value:
            return value
        time.sleep(0.25)
    driver.save_screenshot(str(ARTIFACTS / "timeout.png"))
    pytest.fail(f"the page never satisfied {condition} in {seconds:g} s (screenshot: {ARTIFACTS / 'timeout.png'})")


IMAGES_LOADED = "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"


def test_the_report_opens_offline_and_every_image_loads(browser, tmp_path):
    from cnnlab.report.html import write_report

    a = _classifier_run(tmp_path / "runs" / "cnn4-a", val=0.7)
    b = _classifier_run(tmp_path / "runs" / "features-b", kind="features", val=0.9)
    index = write_report([a, b], tmp_path / "report", course=True)
    browser.get(index.as_uri())
    _wait(browser, "document.readyState === 'complete'")
    height = browser.execute_script("return document.body.scrollHeight")
    for y in range(0, height + 800, 800):  # scrolled through, so that lazy pictures load too
        browser.execute_script(f"window.scrollTo(0, {y})")
        time.sleep(0.05)
    _wait(browser, f"{IMAGES_LOADED}.length === 0", 30)
    assert browser.execute_script("return document.images.length") >= 5
    assert browser.execute_script("return document.querySelectorAll('section.task').length") == 5
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(ARTIFACTS / "report.png"))


ATTACK = """<!doctype html><html><body>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe>
<form id="train" action="APP/api/train" method="POST" target="sink1" enctype="text/plain">
  <input name="preset" value="demo"></form>
<form id="predict" action="APP/api/predict" method="POST" target="sink2" enctype="multipart/form-data">
  <input name="model" value="vgg19"></form>
<script>
window.attempts = [];
const png = Uint8Array.from(atob("PNG64"), c => c.charCodeAt(0));
document.getElementById("train").submit();
document.getElementById("predict").submit();
const photo = new FormData();
photo.append("model", "vgg19");
photo.append("image", new Blob([png], {type: "image/png"}), "cat.png");
const tries = [
  fetch("APP/api/predict", {method: "POST", mode: "no-cors", body: photo}),
  fetch("APP/api/train", {method: "POST", mode: "no-cors", body: new URLSearchParams({preset: "demo"})}),
  // with the page's own header the browser asks first (a CORS preflight), is not allowed, and sends nothing
  fetch("APP/api/train", {method: "POST", headers: {"X-Requested-With": "cnnlab"}, body: "preset=demo"}),
];
navigator.sendBeacon("APP/api/train", "preset=demo");
Promise.allSettled(tries).then(r => { window.attempts = r.map(x => x.status); });
</script></body></html>"""


def test_a_page_from_another_origin_cannot_train_or_load_a_model(browser, server, tmp_path):
    """Another site's page (here: another port on 127.0.0.1, another origin) auto-submits forms, fetches and
    beacons to the app: every POST is answered 403, no run folder appears, no model is loaded."""
    import base64
    import functools
    import http.server
    import threading
    import urllib.request

    url, runs, log = server
    before = sorted(p.name for p in runs.iterdir())
    (tmp_path / "attack.html").write_text(ATTACK.replace("APP", url).replace(
        "PNG64", base64.b64encode((SHARED_DATA / "images" / "photos" / "chelsea.png").read_bytes()).decode()))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as other:
        threading.Thread(target=other.serve_forever, daemon=True).start()
        browser.get(f"http://127.0.0.1:{other.server_address[1]}/attack.html")
        _wait(browser, "window.attempts && window.attempts.length === 3", 60)
        time.sleep(2)  # the forms and the beacon are answered too
        other.shutdown()
    posts = [line for line in log.read_text().splitlines() if '"POST /api/' in line]
    trains, predicts = (sum(f"/api/{name}" in line for line in posts) for name in ("train", "predict"))
    assert trains >= 3 and predicts >= 2, posts  # the forms, the fetches and the beacon all arrived
    assert all('" 403' in line for line in posts), posts  # every one refused
    assert sorted(p.name for p in runs.iterdir()) == before  # no run folder
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with no_proxy.open(url + "/api/status", timeout=10) as response:
        status = json.load(response)
    assert status["models"] == [] and not status["training"], status  # no model loaded, nothing training


def test_upload_a_photo_and_see_predictions_and_a_heatmap(browser, server):
    from selenium.webdriver.common.by import By

    url, _, _ = server
    browser.get(url)
    form = browser.find_element(By.ID, "predict-form")
    form.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(SHARED_DATA / "images" / "photos" /
                                                                          "chelsea.png"))
    form.find_element(By.CSS_SELECTOR, "button").click()
    _wait(browser, "document.querySelectorAll('tr.prediction').length === 5", 180)
    _wait(browser, "document.getElementById('heatmap').complete && "
                   "document.getElementById('heatmap').naturalWidth > 0", 30)
    top = browser.find_elements(By.CSS_SELECTOR, "tr.prediction")[0].text
    assert "cat" in top.lower(), top  # chelsea.png is a tabby cat
    assert not browser.find_element(By.ID, "predict-error").text
    browser.save_screenshot(str(ARTIFACTS / "predict.png"))


def test_start_a_run_and_watch_its_curve_grow(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, runs, _ = server
    browser.get(url)
    form = browser.find_element(By.ID, "train-form")
    Select(form.find_element(By.NAME, "preset")).select_by_visible_text("demo")
    # Half a minute, not the least a fast machine allows: a slowed CI machine's setup alone took 10 s, and a
    # budget too small for one step is refused (as it should be), which this test is not about.
    for name, value in (("minutes", "0.5"), ("train_images", "300")):
        field = form.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    form.find_element(By.CSS_SELECTOR, "button").click()
    _wait(browser, "document.querySelectorAll('circle.curve-point').length >= 1"
                   " || document.getElementById('train-error').textContent !== ''", 180)
    assert browser.find_element(By.ID, "train-error").text == ""  # a refused or failed run says why, here
    _wait(browser, "document.getElementById('train-report') !== null", 180)
    points = browser.execute_script("return document.querySelectorAll('circle.curve-point').length")
    run = next(p for p in runs.iterdir() if p.name.startswith("web-demo-"))
    assert points == len((run / "metrics.csv").read_text().splitlines()) - 1  # one point per epoch written
    assert "test accuracy" in browser.find_element(By.ID, "train-status").text
    browser.save_screenshot(str(ARTIFACTS / "train.png"))
    browser.find_element(By.ID, "train-report").click()
    _wait(browser, "document.readyState === 'complete' && document.title.includes('web-demo')", 60)
    _wait(browser, f"{IMAGES_LOADED}.length === 0", 30)


def test_a_lan_server_opened_by_its_printed_url_works_in_the_browser(browser, tmp_path):
    """`cnnlab serve --host 0.0.0.0` prints a URL with ?token=: opened in a browser, the token moves into a
    cookie (and out of the address bar), and the page classifies and opens reports as on loopback."""
    from selenium.webdriver.common.by import By

    runs = tmp_path / "runs"
    _classifier_run(runs / "cnn4-a")
    proc, port, log = _start_server(tmp_path, runs, "--host", "0.0.0.0")
    try:
        printed = log.read_text().splitlines()[0]
        token = printed.split("?token=")[1].split()[0]
        browser.get(f"http://127.0.0.1:{port}/")  # without the token: refused
        assert "needs its token" in browser.find_element(By.TAG_NAME, "body").text
        browser.get(f"http://127.0.0.1:{port}/?token={token}")
        _wait(browser, "document.getElementById('predict-form') !== null", 30)
        assert "token" not in browser.current_url
        form = browser.find_element(By.ID, "predict-form")
        form.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(SHARED_DATA / "images" / "photos" /
                                                                              "chelsea.png"))
        form.find_element(By.CSS_SELECTOR, "button").click()
        _wait(browser, "document.querySelectorAll('tr.prediction').length === 5", 180)
        assert not browser.find_element(By.ID, "predict-error").text
        browser.find_element(By.LINK_TEXT, "cnn4-a").click()
        _wait(browser, "document.readyState === 'complete' && document.title.includes('cnn4-a')", 60)
        _wait(browser, f"{IMAGES_LOADED}.length === 0", 30)
        browser.save_screenshot(str(ARTIFACTS / "lan.png"))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
