"""What `make demo` gives on this machine: the course CNN with a 2-minute budget, as a whole process.

    python benchmarks/demo.py [--repeats 2]

Runs `cnnlab train --config demo` (the command `make demo` runs) as a separate process, timed from outside
(interpreter start, imports, calibration, training, the final evaluation and every file included), and writes
benchmarks/results/demo-<CPU class>.md: test accuracy, best validation accuracy, epochs, steps, the budget's
planned seconds, the run's own clock and the wall time of each process.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import cnnlab_env, cpu_banner, save_result, table

ROOT = Path(__file__).resolve().parents[1]


def demo_process(out: Path) -> tuple[dict, float]:
    """(summary.json, wall seconds) of one `cnnlab train --config demo` process writing `out`."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--config", "demo", "--no-progress",
                           "--out", str(out)], env=cnnlab_env(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"cnnlab train --config demo failed:\n{proc.stderr[-2000:]}")
    return json.loads((out / "summary.json").read_text()), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for i in range(args.repeats):
        s, wall = demo_process(ROOT / "runs" / f"bench-demo-{i}")
        rows.append([i + 1, f"{100 * s['test_accuracy']:.2f} %", f"{100 * s['best_val_accuracy']:.2f} %",
                     f"{s['epochs']}", s["steps"], f"{s['planned_seconds']:.1f}", f"{s['actual_seconds']:.1f}",
                     f"{wall:.1f}", f"{s['precision']}{' + channels_last' if s['channels_last'] else ''}"])
        print(rows[-1], flush=True)
    text = "\n".join([
        "# make demo: the course CNN with a 2-minute budget", "", cpu_banner(), "",
        f"Written by `python benchmarks/demo.py --repeats {args.repeats}`: each row one `cnnlab train --config "
        f"demo` process (what `make demo` runs before its report), timed from outside.", "",
        table(["process", "test accuracy", "best val accuracy", "epochs", "steps", "planned seconds",
               "run's own clock (s)", "wall seconds (whole process)", "precision"], rows), ""])
    save_result("demo", text)


if __name__ == "__main__":
    main()
