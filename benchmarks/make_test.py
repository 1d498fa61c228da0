"""How long the README's `make test` takes: on a fresh clone (the venv created first) and again (venv ready).

    python benchmarks/make_test.py [--warm-runs 1]

1. `git clone` of this checkout's HEAD into a temporary folder (only committed work: what CI and a new user get).
2. `make test` there, timed from outside: creating .venv (pip installs the locked versions), then the suite
   (`pytest -q -n 2`: two pytest-xdist workers, one core each on a 2-core machine; tests/conftest.py).
3. `make test` again in the same clone, --warm-runs times: the venv exists, so this is the suite alone.
Each row gives the wall time and pytest's own summary line (tests passed, its own seconds). A run that fails
stops the script with pytest's last lines: a time is only worth stating for a suite that passes.
Real data is read from $CNNLAB_DATA (default ../shared/data beside this checkout), as the Makefile does.
Writes benchmarks/results/make-test-<CPU class>.md. Run it with nothing else computing on the machine.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _common import cpu_banner, save_result, table

ROOT = Path(__file__).resolve().parents[1]


def timed_make_test(clone: Path, env: dict[str, str]) -> tuple[float, str]:
    """(wall seconds, pytest's summary line) of one `make test` in `clone`."""
    start = time.perf_counter()
    proc = subprocess.run(["make", "test"], cwd=clone, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    lines = proc.stdout.splitlines()
    summary = next((line.strip("= ") for line in reversed(lines) if re.search(r"\d+ passed", line)), "")
    if proc.returncode != 0:  # pytest's report is on stdout; stderr holds pip's and make's lines
        errors = [line for line in proc.stderr.splitlines() if not line.startswith("WARNING: Location")]
        raise SystemExit("make test failed in the fresh clone:\n" + "\n".join(lines[-60:] + errors[-10:]))
    return wall, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm-runs", type=int, default=1, help="`make test` runs after the fresh one")
    args = parser.parse_args()
    env = {**os.environ, "CNNLAB_DATA": os.environ.get("CNNLAB_DATA", str(ROOT.parent / "shared" / "data"))}
    env.pop("VIRTUAL_ENV", None)
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cnnlab-make-test-") as tmp:
        clone = Path(tmp) / "cnnlab"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        wall, summary = timed_make_test(clone, env)
        rows.append(["fresh clone (creates .venv, then the suite)", f"{wall / 60:.1f}", summary])
        print(rows[-1], flush=True)
        warm = []
        for i in range(args.warm_runs):
            wall, summary = timed_make_test(clone, env)
            warm.append(wall)
            rows.append([f"again, .venv ready (run {i + 1})", f"{wall / 60:.1f}", summary])
            print(rows[-1], flush=True)
    text = "\n".join([
        "# make test: wall time on a fresh clone and with the venv ready", "", cpu_banner(), "",
        f"Written by `python benchmarks/make_test.py --warm-runs {args.warm_runs}` on commit {commit}: each row one "
        "`make test` in a fresh `git clone` of that commit, timed from outside.", "",
        table(["make test", "wall minutes", "pytest's summary"], rows), "",
        *([f"Median of the runs with the venv ready: {statistics.median(warm) / 60:.1f} min."] if warm else []), ""])
    save_result("make-test", text)


if __name__ == "__main__":
    main()
