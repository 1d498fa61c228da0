"""End to end in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium)
opens a report and the web app as a person would. `make test` installs the browser where it is missing
(scripts/ensure-browser); without one these tests fail with the command that installs it, never skip.

Screenshots are kept in test-artifacts/browser/ (or $CNNLAB_ARTIFACTS/browser/) for a person to look at.
"""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def server(tmp_path_factory, fake_cifar_root):
    """A real `cnnlab serve` process on loopback, over a runs folder holding one classifier run."""
    runs = tmp_path_factory.mktemp("browser-runs")
    _classifier_run(runs / "cnn4-a")
    port = _free_port()
    log = (tmp_path_factory.mktemp("server") / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", "--port", str(port), "--runs", str(runs),
                             "--data-root", str(fake_cifar_root), "--threads", "1"], stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            assert proc.poll() is None, Path(log.name).read_text()
            time.sleep(0.3)
    yield url, runs
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


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


def test_upload_a_photo_and_see_predictions_and_a_heatmap(browser, server):
    from selenium.webdriver.common.by import By

    url, _ = server
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

    url, runs = server
    browser.get(url)
    form = browser.find_element(By.ID, "train-form")
    Select(form.find_element(By.NAME, "preset")).select_by_visible_text("demo")
    for name, value in (("minutes", "0.3"), ("train_images", "300")):
        field = form.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    form.find_element(By.CSS_SELECTOR, "button").click()
    _wait(browser, "document.querySelectorAll('circle.curve-point').length >= 1", 180)
    _wait(browser, "document.getElementById('train-report') !== null", 180)
    points = browser.execute_script("return document.querySelectorAll('circle.curve-point').length")
    run = next(p for p in runs.iterdir() if p.name.startswith("web-demo-"))
    assert points == len((run / "metrics.csv").read_text().splitlines()) - 1  # one point per epoch written
    assert "test accuracy" in browser.find_element(By.ID, "train-status").text
    browser.save_screenshot(str(ARTIFACTS / "train.png"))
    browser.find_element(By.ID, "train-report").click()
    _wait(browser, "document.readyState === 'complete' && document.title.includes('web-demo')", 60)
    _wait(browser, f"{IMAGES_LOADED}.length === 0", 30)
