"""What every command's parser shares: the parser class, the where-it-runs flags, and flags made from the fields
of a settings dataclass (add_fields), so that a default and its help are written once, in the dataclass."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..errors import EXIT_USER_ERROR


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


DEVICE_HELP = "auto | cpu | cuda | cuda:N (default auto)"
DATA_ROOT_HELP = "data folder (default: $CNNLAB_DATA, else ~/.cache/cnnlab)"


def add_run_flags(p: argparse.ArgumentParser, data_root: bool = True, device: bool = True) -> None:
    """Where a command runs: the data folder, compute threads, the device."""
    if data_root:
        p.add_argument("--data-root", metavar="PATH", help=DATA_ROOT_HELP)
    p.add_argument("--threads", type=int, help="compute threads (default and maximum: available cores)")
    if device:
        p.add_argument("--device", help=DEVICE_HELP)


def add_overrides(p: argparse.ArgumentParser, help: str = "config overrides (dotted keys)") -> None:
    """KEY=VALUE words, anywhere among the flags (parse_args collects the ones after a flag)."""
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=help)


def help_text(text: str, default: Any = None) -> str:
    """A field's help for argparse: '%' escaped, the default appended when it says something."""
    text = text.rstrip(".").replace("%", "%%")
    if default is not None and default is not dataclasses.MISSING and default not in ("", [], ()) \
            and default is not False and not any(w in text for w in ("(default", "default:", "; default")):
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        if f"({shown}" not in text and f"{shown}:" not in text:  # "(0: all)" says it already
            text = f"{text} (default {shown})" if text else f"default {shown}"
    return text


def add_fields(p: argparse.ArgumentParser, cls: type, names: list[str], *, flags: dict[str, str] | None = None,
               metavars: dict[str, str] | None = None) -> None:
    """A flag for each named field of settings dataclass `cls`: --field-name (or flags[name]), the field's type,
    choices and help (its docstring), the default shown in the help. The flag's own default is None: a flag
    not given leaves the value of the --config file, of a KEY=VALUE override or of the dataclass.
    settings_from() turns the flags given back into the settings object."""
    from ..config import field_info

    table = dict(p.get_default("settings_flags") or {})
    for name in names:
        info = field_info(cls, name)
        flag = (flags or {}).get(name) or f"--{name.replace('_', '-')}"
        dest = f"field_{name}"
        kwargs: dict[str, Any] = {"dest": dest, "default": None, "help": help_text(info.help, info.default),
                                  "metavar": (metavars or {}).get(name) or flag[2:].replace("-", "_").upper()}
        if info.type is bool:
            kwargs["action"] = "store_true" if info.default is False else argparse.BooleanOptionalAction
        elif info.type in (int, float, str):
            kwargs["type"] = info.type
        elif info.type == list[str]:
            kwargs["nargs"] = "+"
        else:
            raise TypeError(f"add_fields: {cls.__name__}.{name} has a type no flag takes ({info.type})")
        if info.choices:
            kwargs.update(choices=info.choices, metavar=None)
        if "action" in kwargs:
            del kwargs["metavar"]
        p.add_argument(flag, **kwargs)
        table[name] = (dest, flag)
    p.set_defaults(settings_flags=table)


def given_fields(args: argparse.Namespace) -> dict[str, tuple[str, Any]]:
    """{field: (flag, value)} for the add_fields flags given on this command line."""
    table = getattr(args, "settings_flags", None) or {}
    return {name: (flag, getattr(args, dest)) for name, (dest, flag) in table.items()
            if getattr(args, dest, None) is not None}


def settings_from(args: argparse.Namespace, cls: type, extra: dict[str, Any] | None = None):
    """The settings object of this command line: the dataclass's defaults <- --config FILE <- KEY=VALUE
    overrides <- `extra` (what the handler computed) <- the flags given, loaded by config.load_settings (typed,
    choices, the class's own check), errors about a flag naming the flag."""
    from ..config import load_settings, parse_overrides

    given = given_fields(args)
    overrides = {**parse_overrides(getattr(args, "overrides", None) or []), **(extra or {}),
                 **{name: value for name, (_, value) in given.items()}}
    return load_settings(cls, getattr(args, "config", None), overrides,
                         labels={name: flag for name, (flag, _) in given.items()})


def refuse_with_resume(args: argparse.Namespace, why: str) -> None:
    """With --resume, settings the run saved may not be given: the first one given is named."""
    from ..errors import UserError

    given = [flag for flag, _ in given_fields(args).values()]
    given += ["--config"] if getattr(args, "config", None) else []
    given += list(getattr(args, "overrides", None) or [])
    if given:
        raise UserError(f"{given[0]} cannot be given with --resume: {why}; resume without it, or start a new run")
