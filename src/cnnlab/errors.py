"""The one user-facing error type.

A ``UserError`` is a mistake the user can fix (a missing file, a bad config value). The CLI prints its
message as one line on stderr and exits with code 2; internal bugs raise ordinary exceptions so that tests
and tracebacks still show them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's input, reported as one clear sentence (exit code 2)."""

    exit_code = EXIT_USER_ERROR

    def __str__(self) -> str:
        # One line whatever the input quoted in it holds: control characters (a newline in a YAML key, a
        # NUL in a file name) are shown escaped, as \n or \x00.
        text = super().__str__()
        return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> UserError:
    """Error for an unknown model/optimizer/schedule/...: names the valid ones and the closest."""
    valid = sorted(valid)
    return UserError(f"unknown {kind} '{name}'{did_you_mean(name, valid)}; valid {kind}s: {', '.join(valid)}")
