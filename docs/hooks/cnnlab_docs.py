"""MkDocs hook: the parts of the site that are generated when it is built, so that they cannot drift.

- The CLI reference (``reference/cli.md``) is written from ``cnnlab.cli.build_parser()`` itself: every command,
  sub-command and option with its usage line and help. A flag added to a parser is in the next build.
- Benchmark figures are read from ``benchmarks/results/`` at build time, never copied into a page: a page says
  ``<!-- results: NAME.md -->`` where a results file's tables go (the file's title, conditions and tables, in a box
  that names the file; a glob, ``<!-- results: demo-*.md -->``, includes every matching file, one per CPU class,
  and says so when none exists yet), ``<!-- results-image: NAME.jpg | alt text -->`` for one of its pictures, and
  ``<!-- results-index -->`` for the list of every results file. The pictures are copied into the site under
  ``results/``.
- ``<!-- results-rest -->`` includes every results file that no page includes by name, so a new file shows up in
  the site before a page is written for it.
- ``<!-- notebook: 03 -->`` links to the executed notebook of that number (docs/notebooks/03-*.ipynb, written by
  `make docs`), whatever its name.

The functions below are plain (no MkDocs import at module level): tests/test_docs.py calls them directly.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import posixpath
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
CLI_PAGE = "reference/cli.md"
SITE_RESULTS = "results"  # where the results files' pictures go in the site

MARKER = re.compile(r"<!--\s*(results-image|results-index|results-rest|results|notebook)\s*:?\s*(.*?)\s*-->")


# ---------------------------------------------------------------------------------------------- CLI reference

def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each sub-command of `parser`, in the order `--help` lists them."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            seen = set()
            for name, sub in action.choices.items():
                if id(sub) in seen:  # an alias
                    continue
                seen.add(id(sub))
                out.append((name, helps.get(name, ""), sub))
    return out


def walk_commands(parser: argparse.ArgumentParser):
    """Every parser under `parser` (itself included), depth first: (prog words, one-line help, parser)."""
    def walk(p, words, summary):
        yield words, summary, p
        for name, text, sub in _subcommands(p):
            yield from walk(sub, words + [name], text)
    yield from walk(parser, [parser.prog], parser.description or "")


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("*", "\\*").replace("_", "\\_")


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """(invocation, expanded help) of each argument `--help` would show, sub-command choosers left out."""
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        invocation = formatter._format_action_invocation(action)
        text = formatter._expand_help(action) if action.help else ""
        rows.append((invocation, " ".join(text.split())))
    return rows


def cli_reference(parser: argparse.ArgumentParser, width: int = 100) -> str:
    """The Markdown of the CLI reference: for each command, its help, usage and a table of its options."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)  # argparse wraps the usage line to the terminal's width
    try:
        lines = ["# CLI reference", "",
                 "Generated from the `cnnlab` command's own argparse parsers (`cnnlab.cli.build_parser()`) each time "
                 "the site is built (`docs/hooks/cnnlab_docs.py`), so it lists exactly the commands and options "
                 "of this version. `cnnlab COMMAND --help` prints the same text. Commands that take `KEY=VALUE` "
                 "words accept any config field anywhere among their flags (`cnnlab train model.batchnorm=true`).",
                 ""]
        commands = list(walk_commands(parser))
        lines += ["| command | what it does |", "| --- | --- |"]
        for words, summary, sub in commands[1:]:
            anchor = "-".join(words)
            lines.append(f"| [`{' '.join(words)}`](#{anchor}) | {_md_escape(summary)} |")
        lines.append("")
        for words, summary, sub in commands:
            level = "#" * min(max(len(words), 2), 4)  # cnnlab and its commands: ##; sub-commands: ###
            lines += [f"{level} `{' '.join(words)}` {{ #{'-'.join(words)} }}", ""]
            description = sub.description or summary
            if description:
                lines += [_md_escape(" ".join(description.split())), ""]
            usage = sub.format_usage().strip()
            lines += ["```text", usage, "```", ""]
            options = _options(sub)
            if options:
                lines += ["| argument | help |", "| --- | --- |"]
                lines += [f"| `{inv}` | {_md_escape(text)} |" for inv, text in options]
                lines.append("")
        return "\n".join(lines)
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def real_parser() -> argparse.ArgumentParser:
    """The checkout's own `cnnlab` parser (its src/ first on the path, not another installed copy)."""
    src = str(ROOT / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    from cnnlab.cli import build_parser

    return build_parser()


# ------------------------------------------------------------------------------------------ benchmark results

def results_files() -> list[Path]:
    return sorted(RESULTS.glob("*.md"))


def results_title(path: Path) -> str:
    """The file's title (its first '# ' line), or '' when it has none."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return ""


def results_matching(pattern: str) -> list[str]:
    """The results files a marker names: one file, or every file a glob matches (sorted)."""
    if "/" in pattern or not pattern.endswith(".md"):
        raise ValueError(f"<!-- results: {pattern} -->: name a file in benchmarks/results/ (NAME.md or a glob)")
    if any(c in pattern for c in "*?["):
        return [p.name for p in results_files() if fnmatch.fnmatch(p.name, pattern)]
    return [pattern]


def results_blocks(pattern: str) -> str:
    names = results_matching(pattern)
    if not names:
        return f"*No results file `benchmarks/results/{pattern}` yet: the script named above writes it.*\n"
    return "\n".join(results_block(name) for name in names)


def results_block(name: str) -> str:
    """A results file as a box that names it: its title, conditions, notes and tables, headings as bold lines.

    The file's own text is used, so a figure in the site is the figure in the file."""
    path = RESULTS / name
    if path.parent != RESULTS or path.suffix != ".md" or not path.is_file():
        raise ValueError(f"<!-- results: {name} -->: no file benchmarks/results/{name}")
    body = []
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and line.startswith("# ") and not body:
            continue  # the title goes into the box's header
        if not in_code and re.match(r"#{2,6} ", line):
            line = f"**{line.lstrip('#').strip()}**"
        body.append(line)
    while body and not body[0].strip():
        body.pop(0)
    title = results_title(path).replace('"', "'")
    out = [f'!!! abstract "benchmarks/results/{name}{": " + title if title else ""}"', ""]
    out += [("    " + line) if line.strip() else "" for line in body]
    return "\n".join(out) + "\n"


def results_image(spec: str, page_src: str) -> str:
    name, _, alt = (part.strip() for part in spec.partition("|"))
    if not (RESULTS / name).is_file() or "/" in name:
        raise ValueError(f"<!-- results-image: {spec} -->: no file benchmarks/results/{name}")
    link = posixpath.relpath(f"{SITE_RESULTS}/{name}", posixpath.dirname(page_src) or ".")
    return f"![{alt or name}]({link})\n\n*`benchmarks/results/{name}`*\n"


def results_index(docs_dir: Path, page_src: str) -> str:
    """Every results file, its title, and the page that shows it."""
    shown = included_by_pages(docs_dir)
    lines = ["| results file | what it holds | shown on |", "| --- | --- | --- |"]
    for path in results_files():
        title = results_title(path) or next((line.lstrip("# ") for line in path.read_text(encoding="utf-8")
                                             .splitlines() if line.startswith("## ")), "")
        page = shown.get(path.name)
        where = f"[{Path(page).stem}]({posixpath.relpath(page, posixpath.dirname(page_src) or '.')})" if page else \
            "[below](#results-files-no-page-shows-yet)"
        lines.append(f"| `benchmarks/results/{path.name}` | {_md_escape(title)} | {where} |")
    return "\n".join(lines) + "\n"


def notebook_link(number: str, page_src: str, docs_dir: Path) -> str:
    matches = [p for p in executed_notebooks(docs_dir) if posixpath.basename(p).startswith(f"{number}-")]
    if len(matches) != 1:
        raise ValueError(f"<!-- notebook: {number} -->: no executed notebook {number}-*.ipynb")
    link = posixpath.relpath(matches[0], posixpath.dirname(page_src) or ".")
    return f"[notebook `{posixpath.basename(matches[0])}`]({link})"


def included_by_pages(docs_dir: Path) -> dict[str, str]:
    """The results files some page of the site includes: file name -> that page's path in the docs."""
    shown: dict[str, str] = {}
    for page in sorted(Path(docs_dir).rglob("*.md")):
        for kind, arg in MARKER.findall(page.read_text(encoding="utf-8")):
            if kind == "results":
                for name in results_matching(arg):
                    shown.setdefault(name, page.relative_to(docs_dir).as_posix())
    return shown


def results_rest(docs_dir: Path) -> str:
    rest = [p.name for p in results_files() if p.name not in included_by_pages(docs_dir)]
    if not rest:
        return "Every results file is shown on one of the pages above.\n"
    return "\n".join(results_block(name) for name in rest)


def expand_markers(markdown: str, page_src: str, docs_dir: Path | None = None) -> str:
    """Replace every marker of a page by what it stands for (ValueError for an unknown file)."""
    def replace(match: re.Match) -> str:
        kind, arg = match.group(1), match.group(2)
        if kind == "results":
            return results_blocks(arg)
        if kind == "results-image":
            return results_image(arg, page_src)
        if kind == "notebook":
            return notebook_link(arg, page_src, docs_dir or ROOT / "docs")
        if kind == "results-rest":
            return results_rest(docs_dir or ROOT / "docs")
        return results_index(docs_dir or ROOT / "docs", page_src)
    return MARKER.sub(replace, markdown)


# --------------------------------------------------------------------------------------------------- notebooks

NOTEBOOKS = "notebooks"  # under docs/: the executed copies `make docs` writes (scripts/execute_notebooks.py)
NOTEBOOK_COUNT = 5       # the course's five tasks: 01-*.ipynb ... 05-*.ipynb


def executed_notebooks(docs_dir: Path) -> list[str]:
    """The executed notebooks' paths in the site (notebooks/01-....ipynb ...), one per course task, in order.

    ValueError when one is missing: the site shows all five or is not built."""
    folder = Path(docs_dir) / NOTEBOOKS
    found = sorted(folder.glob("0[1-9]-*.ipynb"))
    numbers = [p.name[:2] for p in found]
    wanted = [f"{i:02d}" for i in range(1, NOTEBOOK_COUNT + 1)]
    if numbers != wanted:
        raise ValueError(f"{folder} holds notebooks {numbers or 'none'}, not one each of {wanted}: run `make docs` "
                         f"(it executes notebooks/*.ipynb there with scripts/execute_notebooks.py)")
    return [f"{NOTEBOOKS}/{p.name}" for p in found]


# ------------------------------------------------------------------------------------------------ MkDocs hooks

def on_config(config):
    """The nav's "Notebooks" section lists the executed notebooks (all five, or the build fails)."""
    from mkdocs.exceptions import PluginError

    for item in config["nav"] or []:
        if isinstance(item, dict) and "Notebooks" in item:
            try:
                item["Notebooks"] = executed_notebooks(Path(config["docs_dir"]))
            except ValueError as exc:
                raise PluginError(str(exc)) from None
    return config


def on_files(files, config):
    """Add the generated CLI page and the results files' pictures to the site."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, CLI_PAGE, content=cli_reference(real_parser())))
    for path in sorted(RESULTS.iterdir()):
        if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".svg", ".gif"):
            files.append(File.generated(config, f"{SITE_RESULTS}/{path.name}", abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    try:
        return expand_markers(markdown, page.file.src_uri, Path(config["docs_dir"]))
    except ValueError as exc:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"{page.file.src_uri}: {exc}") from None
