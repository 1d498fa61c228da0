"""cnnlab as a user gets it: a wheel and an sdist built from this checkout, the wheel installed WITHOUT -e into
a fresh venv, and cnnlab run from a folder outside the checkout.

The editable install the tests otherwise use reads every file straight from src/, so a template or config
missing from pyproject.toml's package-data goes unnoticed there (`cnnlab serve`'s page template once did);
here it cannot. The artifacts are built as `make dist` builds them (sdist first, the wheel from the unpacked
sdist, the venv's setuptools, no download), from a clean copy of the sources: the checkout's own build/ or
src/*.egg-info could otherwise carry stale files into them.

The fresh venv gets the dependencies (torch and the rest, gigabytes) from the running interpreter's
site-packages through a .pth file: a plain path line, which puts that folder on sys.path without running its
.pth files, so the checkout's editable install stays inactive and `import cnnlab` finds only the wheel's copy.

What pip reads from the wheel is checked too: no dependency pinned to one version (a user's torch stays as it
is; the exact versions are requirements/lock.txt's, for `make venv`), and the lock holds every declared
dependency at a version its range accepts.
"""

from __future__ import annotations

import email.parser
import json
import os
import shutil
import site
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
PACKAGE = ROOT / "src" / "cnnlab"
TOP_LEVEL = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "setup.py", "setup.cfg")  # where present
NOT_SHIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def package_files() -> list[str]:
    """Every file under src/cnnlab, as a path inside the package (``cnnlab/serve/templates/index.html.j2``):
    the modules and everything else the package reads at run time (configs, templates, schemas...)."""
    return sorted(p.relative_to(PACKAGE.parent).as_posix() for p in PACKAGE.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def _run(command: list, cwd: Path, timeout: float = 120, env: dict | None = None) -> str:
    result = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, (f"{' '.join(map(str, command))} exited {result.returncode}:\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def _user_env() -> dict:
    """The environment of a user who installed the wheel: no PYTHONPATH to the checkout's src/."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="session")
def dists(tmp_path_factory) -> dict[str, Path]:
    """{"sdist": the .tar.gz, "wheel": the .whl}, built once per session."""
    tmp = tmp_path_factory.mktemp("dists")
    source = tmp / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=NOT_SHIPPED)
    for name in TOP_LEVEL:
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, source / name)
    out = tmp / "out"
    # The PEP 517 call that `python -m build --sdist --no-isolation` makes (the `build` front end itself is not
    # needed here: only the backend, which the venv has).
    _run([sys.executable, "-c", "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))", out],
         cwd=source, env=_user_env())
    sdist = next(out.glob("cnnlab-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    unpacked = next((tmp / "unpacked").iterdir())
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", out, unpacked], cwd=tmp, env=_user_env())
    return {"sdist": sdist, "wheel": next(out.glob("cnnlab-*.whl"))}


def _members(kind: str, artifact: Path) -> set[str]:
    """The artifact's files as paths inside the package (the sdist's ``cnnlab-0.1.0/src/`` prefix taken off)."""
    if kind == "wheel":
        with zipfile.ZipFile(artifact) as whl:
            return set(whl.namelist())
    with tarfile.open(artifact) as tar:
        return {name.split("/src/", 1)[1] for name in tar.getnames() if "/src/" in name}


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_the_wheel_and_the_sdist_hold_every_package_file(dists, kind):
    wanted = package_files()
    data = [f for f in wanted if not f.endswith(".py")]
    assert "cnnlab/serve/templates/index.html.j2" in data and "cnnlab/configs/demo.yaml" in data  # the walk works
    missing = [f for f in wanted if f not in _members(kind, dists[kind])]
    assert not missing, (f"the {kind} lacks {missing}: add a pattern for each to [tool.setuptools.package-data] in "
                         f"pyproject.toml (a module: give its folder an __init__.py; a stray file: remove it)")


def _metadata(wheel: Path) -> email.message.Message:
    """The wheel's METADATA: what pip reads to decide what to install beside it."""
    with zipfile.ZipFile(wheel) as whl:
        name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.BytesParser().parsebytes(whl.read(name))


def _requirements(wheel: Path) -> list:
    from packaging.requirements import Requirement

    return [Requirement(r) for r in _metadata(wheel).get_all("Requires-Dist") or []]


def test_the_wheel_pins_no_dependency_to_one_version(dists):
    """Installed into a user's environment, cnnlab must take the torch that is there (a range), not replace it
    with ours (gigabytes) or fail: the exact versions belong to requirements/lock.txt, for `make venv`."""
    requirements = _requirements(dists["wheel"])
    pinned = [str(r) for r in requirements if any(s.operator in ("==", "===") for s in r.specifier)]
    assert not pinned, f"pinned to one version in pyproject.toml (give a range; the pin goes in {LOCK.name}): {pinned}"
    runtime = {r.name: r for r in requirements if r.marker is None}
    for name in ("torch", "torchvision"):
        assert any(s.operator == ">=" for s in runtime[name].specifier), f"{name} needs a lower bound"
    assert _metadata(dists["wheel"])["License-Expression"] == "MIT"  # PEP 639, not the deprecated table


def _locked() -> dict[str, str]:
    from packaging.utils import canonicalize_name

    lines = [line.strip() for line in LOCK.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert all("==" in line and not line.startswith("-") for line in lines), "only NAME==VERSION lines"
    return {canonicalize_name(line.split("==")[0]): line.split("==")[1] for line in lines}


def test_the_lock_holds_every_declared_dependency_within_its_range(dists):
    """`make venv` installs with -c requirements/lock.txt: every dependency of every extra must be locked (or
    its version would float) at a version its range accepts (or the install fails)."""
    from packaging.utils import canonicalize_name

    locked = _locked()
    assert "cnnlab" not in locked  # the project itself is the editable install, never a constraint
    for requirement in _requirements(dists["wheel"]):
        name = canonicalize_name(requirement.name)
        if name == "cnnlab":  # the dev extra names the other extras: cnnlab[onnx,serve,...]
            continue
        assert name in locked, f"{requirement} is not in {LOCK.relative_to(ROOT)}: install it, then `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), \
            f"{LOCK.relative_to(ROOT)} has {name}=={locked[name]}, outside {requirement}"


@pytest.fixture(scope="session")
def installed(dists, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (no -e); returns its bin/ folder."""
    venv = tmp_path_factory.mktemp("wheel-venv") / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv.parent)
    python = venv / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=venv.parent, env=_user_env()).strip())
    dependencies = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (purelib / "zz_cnnlab_test_dependencies.pth").write_text("".join(f"{p}\n" for p in dependencies))
    # --ignore-installed: pip sees the checkout's editable cnnlab through that path and must leave it alone.
    _run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--ignore-installed",
          dists["wheel"]], cwd=venv.parent, env=_user_env())
    return venv / "bin"


@pytest.fixture(scope="session")
def elsewhere(tmp_path_factory) -> Path:
    """A working folder outside the checkout, so that nothing is found relative to it."""
    return tmp_path_factory.mktemp("elsewhere")


def test_cnnlab_is_imported_from_the_wheel_not_the_checkout(installed, elsewhere):
    found = json.loads(_run([installed / "python", "-c", "import json, cnnlab, cnnlab.serve.app as a, sysconfig; "
                             "print(json.dumps([cnnlab.__file__, a.__file__, sysconfig.get_paths()['purelib']]))"],
                            cwd=elsewhere, env=_user_env()))
    purelib = Path(found[2]).resolve()
    for module in found[:2]:
        assert purelib in Path(module).resolve().parents, f"{module} is not the wheel's copy in {purelib}"


@pytest.fixture(scope="session")
def trained_run(installed, elsewhere, fake_cifar_root) -> Path:
    """`cnnlab train --config demo` from the wheel (its preset is package data) on the fake CIFAR-10: one epoch,
    its 2-minute budget off (a budget run lasts its minutes; page-started budget runs are test_serve.py's)."""
    out = elsewhere / "runs" / "wheel-demo"
    _run([installed / "cnnlab", "train", "--config", "demo", "train.budget_minutes=null", "--epochs", "1",
          "--limit-train", "300", "--val-size", "100", "--no-progress", "--out", out, f"data.root={fake_cifar_root}",
          "data.download=false"], cwd=elsewhere, timeout=150, env=_user_env())
    return out


def test_doctor_and_train_run_from_the_wheel(installed, elsewhere, trained_run):
    report = _run([installed / "cnnlab", "doctor", "--seconds", "0"], cwd=elsewhere, env=_user_env())
    assert "cpu capability" in report and "auto picks" in report, report
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["name"] == "demo" and summary["epochs"] == 1 and 0 <= summary["test_accuracy"] <= 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_from_the_wheel_answers_its_page_and_a_report(installed, elsewhere, trained_run):
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = elsewhere / f"serve-{port}.log"
    with log.open("w") as out:
        server = subprocess.Popen([installed / "cnnlab", "serve", "--port", str(port), "--runs",
                                   trained_run.parent, "--threads", "1"], cwd=elsewhere, env=_user_env(),
                                  stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"cnnlab serve exited {server.returncode}:\n{log.read_text()}"
            try:
                with no_proxy.open(f"{url}/healthz", timeout=2) as response:
                    assert json.load(response) == {"status": "ok"}
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, f"no answer on {url}/healthz in 60 s:\n{log.read_text()}"
                time.sleep(0.3)
        with no_proxy.open(url + "/", timeout=30) as response:
            assert response.status == 200 and response.headers["content-type"].startswith("text/html")
            page = response.read().decode()
        assert "<form" in page and 'id="predict-form"' in page and "wheel-demo" in page, page[:2000]
        with no_proxy.open(f"{url}/runs/wheel-demo/report/index.html", timeout=60) as response:  # report template
            assert response.status == 200 and "wheel-demo" in response.read().decode()
    finally:
        server.terminate()
        server.wait(timeout=20)
