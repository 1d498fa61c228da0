"""Helpers shared by the benchmark scripts: timing with medians, table printing."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> tuple[float, list[float]]:
    """(median seconds, all samples) of `fn()` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), samples


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table."""
    cells = [[str(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def cpu_class() -> str:
    """The CPU class every figure names: 'native-bf16' or e.g. 'avx2-no-bf16' (see cnnlab.engine.device)."""
    from cnnlab.engine.device import cpu_class as klass

    return klass()


def cpu_banner() -> str:
    """One line naming the machine, its CPU class, the software and the commit a figure comes from."""
    import datetime

    import torch

    from cnnlab.engine.device import cpu_capability, cpu_name, cpu_native_bf16
    from cnnlab.runs import git_commit

    native = "native bf16" if cpu_native_bf16() else "no native bf16"
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    commit, dirty, _ = git_commit().partition("+dirty")  # a figure from uncommitted code says so
    return (f"CPU {cpu_name()} ({cpu_capability()}, {native}: class {cpu_class()}){gpu}, torch {torch.__version__}, "
            f"{datetime.date.today().isoformat()}, commit {commit[:12]}{dirty}")


def code_version() -> str:
    """The git tree of src/ (changes only when the code does), '+dirty' with uncommitted source changes."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    try:
        tree = subprocess.run(["git", "rev-parse", "HEAD:src"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True,
                               text=True).stdout.strip()
        return tree[:12] + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


RUNS_SEEN: list[dict] = []  # every run train_process returned in this process (for code_versions_note)


def accepted_code_versions() -> list[str]:
    """Earlier code versions whose cached runs count as this one's: CNNLAB_BENCH_ACCEPT_CODE, comma-separated.

    For a change that cannot move a figure (a printed message, say) so hours of runs need not be redone; the
    run's own code version stays in its bench.json and the results list every version their runs came from."""
    return [v.strip() for v in os.environ.get("CNNLAB_BENCH_ACCEPT_CODE", "").split(",") if v.strip()]


def cnnlab_env() -> dict[str, str]:
    """The environment of a benchmarked `cnnlab` process: this tree's src/ first on the path, so a script run
    from a worktree measures that worktree's code (not whichever copy the virtual environment installed)."""
    from pathlib import Path

    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}


def _cached_or_cleared(run_dir, fresh: bool, version: str, keys: set[str]) -> dict | None:
    """A benchmark run's earlier record when its key matches (never for uncommitted code), else None with the
    folder cleared for a new run. A measured run is never thrown away because src/ has uncommitted changes."""
    import json
    import shutil

    record = run_dir / "bench.json"
    if record.is_file() and not fresh:
        if "+dirty" in version:
            raise SystemExit(f"{run_dir} holds a measured run, and src/ has uncommitted changes (code version "
                             f"{version}): commit them first (the run is then reused where "
                             f"CNNLAB_BENCH_ACCEPT_CODE allows), or pass --fresh to measure it again")
        cached = json.loads(record.read_text())
        if cached.get("key") in keys:
            RUNS_SEEN.append(cached)
            return cached
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return None


def train_process(name: str, config_file, seed: int, overrides: list[str], out, fresh: bool = False,
                  extra_args: list[str] | None = None) -> dict:
    """One whole `cnnlab train` process (or its earlier result, reused only for the same config text,
    overrides, seed, arguments and code version, or a version accepted by CNNLAB_BENCH_ACCEPT_CODE):
    test/val accuracy and whole-process minutes."""
    import hashlib
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    run_dir = Path(out) / name
    record = run_dir / "bench.json"
    config_file = Path(config_file)
    extra_args = list(extra_args or [])
    version = code_version()
    def key_for(code: str) -> str:
        return hashlib.sha1((config_file.read_text() + repr(overrides) + repr(extra_args) + str(seed) + code)
                            .encode()).hexdigest()[:12]

    key = key_for(version)
    cached = _cached_or_cleared(run_dir, fresh, version, {key_for(code) for code in [version, *accepted_code_versions()]})
    if cached is not None:
        return cached
    cmd = [sys.executable, "-m", "cnnlab", "train", "--config", str(config_file), "--seed", str(seed),
           "--out", str(run_dir), "--no-progress", *extra_args, *overrides]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=cnnlab_env())
    minutes = (time.perf_counter() - start) / 60
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    result = {"name": name, "key": key, "code": version, "config": config_file.stem, "seed": seed,
              "overrides": overrides, "args": extra_args, "minutes": minutes,
              "test_accuracy": summary["test_accuracy"], "val_accuracy": summary["best_val_accuracy"],
              "train_seconds": summary["train_seconds"], "epochs": summary["epochs"],
              "epochs_planned": summary["epochs_planned"], "steps": summary.get("steps"),
              "precision": summary.get("precision"), "cpu_class": summary.get("cpu_class"),
              "stop_reason": summary.get("stop_reason")}
    record.write_text(json.dumps(result, indent=2))
    RUNS_SEEN.append(result)
    acc = result["test_accuracy"] if result["test_accuracy"] is not None else result["val_accuracy"]
    which = "test" if result["test_accuracy"] is not None else "val"
    print(f"  {name}: {which} {100 * acc:.2f} % in {minutes:.2f} min", flush=True)
    return result


def save_result(stem: str, text: str):
    """Write benchmarks/results/<stem>-<CPU class>.md (the figures a README table cites) and return its path."""
    from pathlib import Path

    path = Path(__file__).resolve().parent / "results" / f"{stem}-{cpu_class()}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"written to {path}")
    return path


def code_versions_note(runs: list[dict] | None = None) -> str:
    """One line naming the code versions (git tree of src/) the runs (default: all seen) came from."""
    runs = RUNS_SEEN if runs is None else runs
    versions = sorted({r.get("code", "unknown") for r in runs})
    return f"Runs from code version{'s' if len(versions) > 1 else ''} (git tree of src/): {', '.join(versions)}."


def cnnlab_process(name: str, args: list[str], out, fresh: bool = False) -> dict:
    """One whole `cnnlab <args> --out <out>/<name>` process (or its earlier result, reused only for the same
    arguments and code version): its summary.json plus the process's seconds and code version."""
    import hashlib
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    run_dir = Path(out) / name
    record = run_dir / "bench.json"
    version = code_version()
    key = hashlib.sha1((repr(args) + version).encode()).hexdigest()[:12]
    cached = _cached_or_cleared(run_dir, fresh, version, {key})
    if cached is not None:
        return cached
    cmd = [sys.executable, "-m", "cnnlab", *args, "--out", str(run_dir), "--no-progress"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=cnnlab_env())
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    result = {**json.loads((run_dir / "summary.json").read_text()), "name": name, "key": key, "code": version,
              "args": args, "process_seconds": seconds}
    record.write_text(json.dumps(result, indent=2))
    RUNS_SEEN.append(result)
    print(f"  {name}: val {100 * result['val_accuracy']:.2f} % in {seconds:.0f} s", flush=True)
    return result
