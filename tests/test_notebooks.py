"""The course notebooks (notebooks/*.ipynb), checked without running them (seconds): `make docs` executes them
(scripts/execute_notebooks.py) and CI fails when one does not run. Here: the five are there, valid nbformat 4,
committed without outputs, each with its budget variable first, each on the Python API rather than the CLI."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["01-cifar10.ipynb", "02-transfer.ipynb", "03-fine-tuning.ipynb",
         "04-fine-tuning-plateau-augmentation.ipynb", "05-style-transfer.ipynb"]
BUDGET = re.compile(r"^MINUTES\s*=\s*[0-9.]+\s*(#.*)?$", re.M)
# Shelling out (to the cnnlab command or anything else) instead of calling the API.
SHELL = re.compile(r"^\s*!|%%(bash|sh|script)|\bsubprocess\b|\bos\.system\b|\bos\.popen\b|get_ipython\(\)\.system",
                   re.M)


def _code(nb) -> list[str]:
    return [cell.source for cell in nb.cells if cell.cell_type == "code"]


def test_the_five_notebooks_are_there():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_valid_and_clean(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=nbformat.NO_CONVERT)
    assert nb.nbformat == 4
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":  # outputs are made by `make docs`, not committed
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: a code cell has stored outputs"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), f"{name}: no title first"


@pytest.mark.parametrize("name", NAMES)
def test_budget_first_and_api_not_cli(name):
    code = _code(nbformat.read(NOTEBOOKS / name, as_version=4))
    assert BUDGET.search(code[0]), f"{name}: the first code cell must set the budget (MINUTES = ...)"
    for source in code:
        assert not SHELL.search(source), f"{name}: a cell shells out; call cnnlab's Python API instead:\n{source}"
        # Python apart from IPython's magics (%matplotlib inline) parses: no syntax error waits for `make docs`.
        ast.parse("\n".join("pass" if line.lstrip().startswith("%") else line for line in source.splitlines()))
    assert any("import cnnlab" in s or "from cnnlab" in s for s in code), f"{name}: does not use cnnlab's API"
