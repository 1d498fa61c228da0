#!/usr/bin/env python3
"""Screenshots of the built docs site (site/) in headless Chromium, to look at after `make docs`.

    python scripts/screenshot_docs.py [--site site] [--out test-artifacts/docs] [PAGE ...]

PAGE is a path inside the site (default: the home page, a tutorial, a benchmarks page, a notebook). The site is
served over HTTP on 127.0.0.1 (a free port) for the time of the screenshots, as a reader's browser would get it;
file:// would break its search and its folder links. Debian's chromium and chromedriver, driven by Selenium, as in
tests/test_browser.py (scripts/ensure-browser installs them). Without a browser it says so and exits 0: the
screenshots are for people, the build's checks are mkdocs' --strict and tests/test_docs.py.

Each page is checked before its screenshot: it has the site's title and no broken image (every <img> loaded).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["", "tutorials/task1-cifar10/", "benchmarks/style/", "notebooks/01-cifar10/"]


def executable(*names: str) -> str | None:
    for name in names:
        for candidate in (shutil.which(name), f"/usr/bin/{name}", f"/usr/lib/chromium/{name}"):
            if candidate and Path(candidate).is_file():
                return candidate
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", default=str(ROOT / "site"))
    parser.add_argument("--out", default=str(ROOT / "test-artifacts" / "docs"))
    parser.add_argument("--max-height", type=int, default=5000, help="longest screenshot in pixels (default 5000)")
    parser.add_argument("pages", nargs="*", metavar="PAGE")
    args = parser.parse_args(argv)
    site, out = Path(args.site), Path(args.out)
    if not (site / "index.html").is_file():
        sys.exit(f"screenshot_docs: no {site}/index.html: run make docs first")
    chromium, driver_path = executable("chromium", "chromium-browser"), executable("chromedriver")
    if not (chromium and driver_path):
        print("screenshot_docs: no chromium/chromedriver (scripts/ensure-browser installs them); no screenshots")
        return 0

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1000", "--renderer-process-limit=2"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    out.mkdir(parents=True, exist_ok=True)
    problems = []
    try:
        for page in args.pages or PAGES:
            url = f"http://127.0.0.1:{server.server_port}/{page}"
            driver.get(url)
            broken = driver.execute_script(
                "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
                ".map(i => i.getAttribute('src'))")
            if "cnnlab" not in driver.title:
                problems.append(f"{page or '/'}: title {driver.title!r}")
            if broken:
                problems.append(f"{page or '/'}: images that did not load: {broken}")
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(1280, min(max(int(height), 1000), args.max_height))  # the whole page, or its top
            name = (page.strip("/").replace("/", "-") or "home") + ".png"
            driver.save_screenshot(str(out / name))
            print(f"{url} -> {out / name} ({driver.title})")
    finally:
        driver.quit()
        server.shutdown()
    for line in problems:
        print(f"screenshot_docs: {line}", file=sys.stderr)
    return 1 if problems else 0


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


if __name__ == "__main__":
    sys.exit(main())
