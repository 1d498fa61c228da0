#!/usr/bin/env python3
"""Execute the course notebooks (notebooks/*.ipynb) top to bottom and write the executed copies.

    python scripts/execute_notebooks.py --out docs/notebooks               # all five, in order
    python scripts/execute_notebooks.py --out /tmp/nb 03-fine-tuning       # one (name with or without .ipynb)

`make docs` runs it so that the docs site shows every notebook with its outputs, and CI fails when one no
longer runs. Each notebook runs in a fresh python3 kernel of the interpreter running this script (so the
venv that runs `make docs` is the one the notebooks import cnnlab from), with the notebook's own folder as
its working directory, as Jupyter does: what a notebook writes (runs/...) lands where it would for a person.
They run in order, because 02 reuses 01's CIFAR network and 04 compares itself with 03 when they are there.

Prints each notebook's wall time. On a failure the partly executed copy is still written (its outputs show
how far it got), the others still run, and the exit code is 1, with a line naming the notebook, the failing
cell and its error.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "cnnlab-python"


def kernel_manager(kernels: Path):
    """A kernel manager whose only kernel is ipykernel on sys.executable: a user-level 'python3' kernelspec
    (another Python, another environment) cannot take its place."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = kernels / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (cnnlab)", "language": "python"}))
    # IPC sockets in the temporary folder: local, and no warning about unencrypted TCP
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]),
                         transport="ipc", ip=str(kernels / "ipc"))


def first_line(source: str) -> str:
    lines = [line for line in source.splitlines() if line.strip()]
    return (lines[0][:80] if lines else "").strip()


def execute(path: Path, out: Path, timeout: int, kernels: Path) -> tuple[float, str | None]:
    """Run one notebook; write the executed copy to `out`; (wall seconds, None or what failed)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, km=kernel_manager(kernels), allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    failure = None
    started = time.perf_counter()
    try:
        with client.setup_kernel(cleanup_kc=True):  # shut the kernel down after (nbclient keeps one it was given)
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                try:
                    client.execute_cell(cell, index)
                except (CellExecutionError, CellTimeoutError) as error:
                    what = getattr(error, "ename", None) or type(error).__name__
                    detail = getattr(error, "evalue", None) or str(error).strip().splitlines()[-1:] or [""]
                    detail = detail if isinstance(detail, str) else detail[0]
                    failure = f"cell {index} ({first_line(cell.source)!r}): {what}: {detail}"
                    break
    except Exception as error:  # the kernel did not start or died: no cell to name
        failure = f"kernel: {type(error).__name__}: {error}"
    seconds = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out / path.name)
    return seconds, failure


def selected(names: list[str]) -> list[Path]:
    every = sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))
    if not names:
        return every
    chosen = []
    for name in names:
        stem = Path(name).name.removesuffix(".ipynb")
        matches = [p for p in every if p.stem == stem or p.stem.startswith(stem)]
        if len(matches) != 1:
            known = ", ".join(p.stem for p in every)
            sys.exit(f"execute_notebooks: {name!r} names {len(matches)} notebooks; choose one of {known}")
        chosen.append(matches[0])
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the executed copies")
    parser.add_argument("--timeout", type=int, default=600, help="seconds one cell may take (default 600)")
    parser.add_argument("names", nargs="*", help="notebooks to run (default: all, in order), e.g. 01 or "
                                                 "01-cifar10.ipynb")
    args = parser.parse_args(argv)
    notebooks = selected(args.names)
    out = Path(args.out)
    failures, total = [], 0.0
    with tempfile.TemporaryDirectory(prefix="cnnlab-kernels-") as kernels:
        for path in notebooks:
            print(f"{path.name}: running", flush=True)
            seconds, failure = execute(path, out, args.timeout, Path(kernels))
            total += seconds
            status = "ok" if failure is None else f"FAILED at {failure}"
            print(f"{path.name}: {seconds:.1f} s, {status}", flush=True)
            if failure is not None:
                failures.append(f"{path.name}: {failure}")
    print(f"{len(notebooks)} notebook(s) in {total / 60:.1f} minutes; executed copies in {out}")
    for line in failures:
        print(f"execute_notebooks: {line}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
