"""The docs and the README say only what the results files and the parsers say.

- Every number in a hand-written Markdown table of README.md or docs/ sits in a table that names a
  benchmarks/results/*.md file (on its row, or in the paragraph just above the table), and that file holds the
  number. Changing a figure in a table without changing its file fails here.
- The CLI reference the docs site shows is generated from the real parser (docs/hooks/cnnlab_docs.py): it lists
  every command, sub-command and option, so a flag cannot be added without appearing in the docs.
- Every results file, picture and preset a page includes exists, and the README's links to docs pages resolve.

`make docs` builds the site itself (mkdocs build --strict, the notebooks executed); these checks are quick and run
in `make test`.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import re
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"


def _hook():
    spec = importlib.util.spec_from_file_location("cnnlab_docs_hook", DOCS / "hooks" / "cnnlab_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hand_written_pages() -> list[Path]:
    """README.md and the docs' own pages (not the executed notebooks, not what the hook generates)."""
    pages = [ROOT / "README.md"] + sorted(DOCS.rglob("*.md"))
    return [p for p in pages if "notebooks" not in p.relative_to(ROOT).parts]


# ---------------------------------------------------------------------------------------- numbers in tables

_CANDIDATE = re.compile(r"(?P<sign>[-+−]?)(?P<num>\d[\d,]*(?:\.\d+)*)")


def numbers(text: str) -> list[Decimal]:
    """The figures in `text`: 13,087 / 89.26 / -0.98 / 1.01x / 3.6-4.4 (two), but not the digits of a name
    (fast89, cnn4, CIFAR-10, efficientnet_lite0, x0.37), of a version (2.14.1) or of a number in other notation
    (3e-3, 512x341)."""
    found = []
    for m in _CANDIDATE.finditer(text):
        before = text[m.start() - 1] if m.start() > 0 else " "
        sign = m.group("sign")
        if before.isalnum() or before in "_.":
            if not (sign and before.isdigit()):  # "3.6-4.4" is a range; "CIFAR-10" a name
                continue
            sign = ""
        num = m.group("num").rstrip(",")
        if num.count(".") > 1:
            continue
        end = m.start("num") + len(num)
        after, after2 = text[end:end + 1], text[end + 1:end + 2]
        if after == "x" and not after2.isalnum():
            pass  # a ratio: 1.46x
        elif after.isalnum() or after == "_" or (after == "-" and after2.isalpha()):
            continue  # part of a name (3e-3, 512x341) or of a word (2-minute)
        found.append(Decimal(("-" if sign in "-−" and sign else "") + num.replace(",", "")))
    return found


def _strip_markup(cell: str) -> str:
    """A cell without its code spans (commands, paths) and links (navigation): what is left are its figures."""
    cell = re.sub(r"`[^`]*`", " ", cell)
    cell = re.sub(r"!?\[[^\]]*\]\([^)]*\)", " ", cell)
    return cell


def _cells(line: str) -> list[str]:
    line = re.sub(r"`[^`]*`", lambda m: m.group(0).replace("|", "\0"), line.strip())
    parts = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [p.replace("\0", "|").strip() for p in parts]


def tables(text: str):
    """Each Markdown table outside code blocks: (first line number, the paragraph just above it, its rows)."""
    lines = text.splitlines()
    out, i, fenced = [], 0, False
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        is_table = (not fenced and line.lstrip().startswith("|") and i + 1 < len(lines)
                    and re.match(r"^\s*\|?\s*:?-{3,}", lines[i + 1]))
        if not is_table:
            i += 1
            continue
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        above = []
        while j >= 0 and lines[j].strip():
            above.insert(0, lines[j])
            j -= 1
        rows, k = [], i + 2
        while k < len(lines) and lines[k].lstrip().startswith("|"):
            rows.append(lines[k])
            k += 1
        out.append((i + 1, "\n".join(above), rows))
        i = k
    return out


def named_results(text: str) -> list[Path]:
    """The results files a piece of text names (benchmarks/results/NAME.md, NAME.md, or a glob of them)."""
    names = sorted(p.name for p in RESULTS.glob("*.md"))
    found = []
    for token in re.findall(r"[\w*.\-]+\.md\b", text):
        found += [RESULTS / n for n in fnmatch.filter(names, token) if RESULTS / n not in found]
    return found


def table_problems(text: str, where: str) -> list[str]:
    """Every number of every table in `text` that its named results file does not hold, or that no file names."""
    problems = []
    for line_no, above, rows in tables(text):
        for offset, row in enumerate(rows):
            figures = [n for cell in _cells(row) for n in numbers(_strip_markup(cell))]
            if not figures:
                continue
            files = named_results(row) or named_results(above)
            at = f"{where}:{line_no + 2 + offset}"
            if not files:
                problems.append(f"{at}: a table with figures names no benchmarks/results/*.md file on the row or "
                                f"just above it: {row.strip()[:100]}")
                continue
            held = {n for f in files for n in numbers(f.read_text(encoding="utf-8"))}
            missing = [str(n) for n in figures if n not in held]
            if missing:
                problems.append(f"{at}: {', '.join(missing)} not in {', '.join(f.name for f in files)}: "
                                f"{row.strip()[:100]}")
    return problems


def test_numbers_parse_as_figures_not_names():
    assert numbers("13,087 img/s (3.4 s), 1.01x") == [Decimal("13087"), Decimal("3.4"), Decimal("1.01")]
    assert numbers("| -0.98 | 89.26 ± 0.26 % | 3.6-4.4 s |") == [Decimal("-0.98"), Decimal("89.26"),
                                                              Decimal("0.26"), Decimal("3.6"), Decimal("4.4")]
    assert numbers("fast89 cnn4 CIFAR-10 efficientnet_lite0 x0.37 torch 2.14.1 lr 3e-3 512x341 2-minute") == []


def test_every_number_in_a_table_is_in_the_results_file_it_names():
    problems = []
    for page in hand_written_pages():
        problems += table_problems(page.read_text(encoding="utf-8"), str(page.relative_to(ROOT)))
    assert not problems, "\n".join(problems)


def test_the_table_check_fails_when_a_figure_changes():
    """Each figure of the README's tables, changed by one in its last digit, is caught."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    checked = 0
    for line_no, above, rows in tables(text):
        for row in rows:
            if not (named_results(row) or named_results(above)):
                continue
            for m in re.finditer(r"\d+\.\d+", _strip_markup(row)):
                if not numbers(m.group(0)):
                    continue
                last = m.group(0)[-1]
                changed = m.group(0)[:-1] + str((int(last) + 1) % 10)
                broken = text.replace(row, row.replace(m.group(0), changed, 1), 1)
                if broken != text and Decimal(changed) not in {
                        n for f in (named_results(row) or named_results(above)) for n in numbers(f.read_text())}:
                    assert table_problems(broken, "README.md"), f"changing {m.group(0)} to {changed} went unnoticed"
                    checked += 1
    assert checked >= 5, "the README should keep a few headline figures in a table, each with its results file"


def test_a_table_without_a_results_file_is_refused():
    text = "Some paragraph.\n\n| run | accuracy |\n| --- | --- |\n| fast89 | 89.26 % |\n"
    assert "names no benchmarks/results" in table_problems(text, "x")[0]
    named = "From `benchmarks/results/fast-cifar-targets-fast89-avx2-no-bf16.md`:\n\n" + text.split("\n\n", 1)[1]
    assert table_problems(named, "x") == []
    assert table_problems(named.replace("89.26", "89.27"), "x")


# ---------------------------------------------------------------------------------------------- CLI reference

def _walk(parser: argparse.ArgumentParser, words: list[str]):
    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, words + [name])


def test_cli_reference_lists_every_command_and_option():
    hook = _hook()
    parser = hook.real_parser()
    page = hook.cli_reference(parser)
    sections = re.split(r"^#{2,4} ", page, flags=re.M)
    by_title = {}
    for section in sections[1:]:
        title = re.match(r"`([^`]+)`", section).group(1)
        by_title[title] = section
    commands = list(_walk(parser, ["cnnlab"]))
    assert len(commands) > 15
    for words, sub in commands:
        title = " ".join(words)
        assert title in by_title, f"the CLI reference has no section for {title}"
        section = by_title[title]
        for action in sub._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
                continue
            names = action.option_strings or [action.metavar or action.dest]
            for name in names:
                assert f"`{name}" in section or f" {name}" in section or f", {name}" in section, \
                    f"{title}: {name} missing from the CLI reference"
        assert "usage: " + title in section


def test_cli_reference_follows_the_parser():
    """A flag added to a parser is in the next build's reference (generated, not copied)."""
    hook = _hook()
    parser = hook.real_parser()
    train = next(sub for words, sub in _walk(parser, ["cnnlab"]) if words == ["cnnlab", "train"])
    train.add_argument("--a-flag-just-added", help="added by the test")
    assert "`--a-flag-just-added A_FLAG_JUST_ADDED` | added by the test" in hook.cli_reference(parser)


# ------------------------------------------------------------------------------------------ includes and links

def test_every_include_names_an_existing_file():
    hook = _hook()
    for page in hand_written_pages():
        text = page.read_text(encoding="utf-8")
        where = page.relative_to(ROOT)
        for kind, arg in hook.MARKER.findall(text):
            if kind == "results" and not any(c in arg for c in "*?["):
                assert "abstract" in hook.results_block(arg), f"{where}: {arg}"
            elif kind == "results":
                hook.results_blocks(arg)  # a glob: every file it matches (none yet is allowed)
            elif kind == "results-image":
                hook.results_image(arg, str(page.relative_to(DOCS)))
        for snippet in re.findall(r'--8<-- "([^"]+)"', text):
            assert (ROOT / snippet).is_file(), f"{where}: no {snippet}"


def test_results_block_is_the_files_own_text():
    hook = _hook()
    path = sorted(RESULTS.glob("*.md"))[0]
    block = hook.results_block(path.name)
    assert block.startswith(f'!!! abstract "benchmarks/results/{path.name}')
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("|"):
            assert "    " + line in block
    with pytest.raises(ValueError):
        hook.results_block("no-such-file.md")
    with pytest.raises(ValueError):
        hook.results_block("../README.md")


def test_readme_is_short_and_its_doc_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200, "the README is the newcomer's page: reference material goes in docs/"
    links = re.findall(r"\]\((docs/[^)#]+)", text)
    assert len(links) > 10
    for link in links:
        assert (ROOT / link).is_file(), f"README links to {link}, which does not exist"


def test_the_site_requires_all_five_notebooks(tmp_path):
    hook = _hook()
    (tmp_path / "notebooks").mkdir()
    for name in ["01-cifar10", "02-transfer", "03-fine-tuning", "05-style-transfer"]:
        (tmp_path / "notebooks" / f"{name}.ipynb").write_text("{}")
    with pytest.raises(ValueError, match="04"):
        hook.executed_notebooks(tmp_path)
    (tmp_path / "notebooks" / "04-plateau.ipynb").write_text("{}")
    assert len(hook.executed_notebooks(tmp_path)) == 5
