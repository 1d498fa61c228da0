"""The one typed settings loader: any settings dataclass from YAML, dotted KEY=VALUE overrides and defaults.

A run's :class:`~cnnlab.config.Config`, a style network's training settings, an optimized stylization's,
an activation maximization's and the course's all load here, so they share one behaviour: a YAML file
(``--config FILE``), overrides field by field (``content_weight=5``, ``train.epochs=3``), values coerced to
the field's declared type, an unknown key named with the closest valid one, a field's ``choices`` checked,
and the class's own ``check()`` run last. The command line derives its flags from the same fields
(cli/_common.py: add_fields), so each default and each help text is written once, in the dataclass.

A settings class may define two hooks: ``prepare_data(data) -> data`` (a classmethod reshaping the raw
mapping before it is typed; Config moves model arguments beside ``model.name`` there) and ``check(self)``
(range checks that types cannot express, raising UserError).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import math
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ..errors import UserError, did_you_mean

S = TypeVar("S")
PRESETS_DIR = Path(__file__).resolve().parent.parent / "configs"


def one_of(default: str, *others: str, help: str | None = None) -> Any:
    """A text field that takes one of a few values, the first the default: ``one_of("auto", "fp32", "bf16")``.
    The loader refuses others naming the closest; the command line offers them as the flag's choices."""
    metadata: dict[str, Any] = {"choices": (default, *others)}
    if help:
        metadata["help"] = help
    return dataclasses.field(default=default, metadata=metadata)


# ----------------------------------------------------------------------------------------------- types


def is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def strip_optional(tp: Any) -> tuple[Any, bool]:
    """(T, True) for ``T | None``; (A | B, True) for ``A | B | None``; (tp, False) otherwise."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], optional
        return tp, optional
    return tp, False


def _type_name(tp: Any) -> str:
    return "a finite number" if tp is float else getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, key: str, label: str | None = None) -> Any:
    """Convert a YAML/CLI value to the field's declared type, or raise a UserError naming the key (or `label`,
    how the user gave it: a flag)."""
    label = label or f"config field '{key}'"
    tp, optional = strip_optional(tp)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and tp is not str):
        if optional:
            return None
        raise UserError(f"{label} may not be empty; give a value")
    origin = typing.get_origin(tp)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
                return value.lower() in ("true", "yes", "on", "1")
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if tp is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            result = float(value)
            if not math.isfinite(result):
                raise ValueError
            return result
        if tp is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        if origin in (list, tuple):
            if isinstance(value, str):
                try:
                    value = yaml.safe_load(value)
                except yaml.YAMLError:  # not a YAML list (control characters, bad syntax): a wrong value
                    raise ValueError from None
            if not isinstance(value, (list, tuple)):
                raise ValueError
            if origin is list:
                (item_tp,) = typing.get_args(tp)
                return [coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
            item_tps = typing.get_args(tp)
            if len(item_tps) == 2 and item_tps[1] is Ellipsis:
                item_tps = (item_tps[0],) * len(value)
            if len(item_tps) != len(value):
                raise ValueError
            return tuple(coerce(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, item_tps)))
        if origin is dict or tp is dict:
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{label} must be {_type_name(tp)}, got {value!r}") from None
    return value


def keys_of(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a settings dataclass (nested dataclass fields are sections)."""
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if is_dataclass_type(tp):
            keys += keys_of(tp, f"{prefix}{f.name}.")
        elif not f.metadata.get("hidden_key"):
            keys.append(f"{prefix}{f.name}")
    return keys


def build(cls: type[S], data: Any, prefix: str = "", known: list[str] | None = None,
          labels: dict[str, str] | None = None) -> S:
    """Dataclass ``cls`` from a nested dict, each value coerced to its field's type; an unknown key is refused
    with the closest of `known` (default: every key of `cls`)."""
    if not isinstance(data, dict):
        raise UserError(f"config section '{prefix.rstrip('.') or 'top level'}' must be a mapping, got {data!r}")
    known = known if known is not None else keys_of(cls)
    labels = labels or {}
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise UserError(f"unknown config key '{dotted}'{did_you_mean(str(dotted), known)}")
        tp = hints[key]
        if is_dataclass_type(tp):
            kwargs[key] = build(tp, value if value is not None else {}, f"{dotted}.", known, labels)
        else:
            kwargs[key] = coerce(value, tp, dotted, labels.get(dotted))
    return cls(**kwargs)


def check_choices(obj: Any, prefix: str = "", labels: dict[str, str] | None = None) -> None:
    """Every field declared with choices (one_of) holds one of them."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        dotted = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_choices(value, f"{dotted}.", labels)
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            label = (labels or {}).get(dotted) or f"config field '{dotted}'"
            raise UserError(f"{label} must be one of {', '.join(choices)}, got '{value}'"
                            f"{did_you_mean(str(value), choices)}")


# ----------------------------------------------------------------------------------------------- field docs


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Each field's help, one line: its ``metadata={"help": ...}``, else the docstring written under it, else
    the comment at the end of its line."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
            tree = ast.parse(source)
            comments = {tok.start[0]: tok.string.lstrip("#").strip() for tok in
                        tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
        except (OSError, TypeError, SyntaxError, tokenize.TokenError):  # no source (a frozen build): metadata only
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, [*body[1:], None]):
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and \
                    isinstance(after.value.value, str):
                docs[node.target.id] = " ".join(after.value.value.split())
            elif node.end_lineno in comments:
                docs[node.target.id] = comments[node.end_lineno]
    for f in dataclasses.fields(cls):
        if f.metadata.get("help"):
            docs[f.name] = f.metadata["help"]
    return docs


@dataclasses.dataclass
class FieldInfo:
    """What the command line needs to know of one field to make a flag of it."""

    name: str
    type: Any          # Optional stripped
    optional: bool
    default: Any       # dataclasses.MISSING when the field has none
    help: str
    choices: tuple[str, ...] | None


def field_info(cls: type, dotted: str) -> FieldInfo:
    """The field behind a dotted key of a settings dataclass (sections followed)."""
    *sections, name = dotted.split(".")
    for section in sections:
        cls = typing.get_type_hints(cls)[section]
    f = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    if f is None:
        raise KeyError(f"{cls.__name__} has no field {name!r}")
    tp, optional = strip_optional(typing.get_type_hints(cls)[name])
    default = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
    return FieldInfo(name, tp, optional, default, field_docs(cls).get(name, ""), f.metadata.get("choices"))


# ----------------------------------------------------------------------------------------------- files


def presets() -> list[str]:
    """Names of the configs shipped inside the package (src/cnnlab/configs, linked as configs/ in a checkout)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def find_config(path: str | Path) -> Path:
    """A config file by path, or a shipped preset by name ('fast89' or 'fast89.yaml'): presets live in the
    package, so they are found the same way from a checkout, an editable install or a wheel."""
    path = Path(path)
    if path.is_file() or len(path.parts) > 1:
        return path
    preset = PRESETS_DIR / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    return preset if preset.is_file() else path


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors for a missing or malformed file."""
    path = find_config(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        hint = "check the path" if len(path.parts) > 1 else f"check the path, or name a preset: {', '.join(presets())}"
        raise UserError(f"config file {path} does not exist; {hint}") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"config file {path} is not valid YAML{where}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of settings (for a run: data, model, optim, ...)")
    return data


# ----------------------------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, Any]:
    """'train.epochs=5' -> ('train.epochs', 5). Values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise UserError(f"override '{text}' must look like section.key=value, e.g. train.epochs=5")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string; a number is meant
        try:
            value = float(value)
        except ValueError:
            pass
    return key, value


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Command-line KEY=VALUE words -> {dotted key: value} (a later word wins)."""
    return dict(parse_override(p) for p in pairs)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a YAML-shaped dict (before validation, so errors name the key)."""
    data = deep_copy(data)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if parts[0] == "model" and len(parts) == 2 and isinstance(data.get("model"), str):
            data["model"] = {"name": data["model"]}
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [deep_copy(v) for v in data]
    return data


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; values of ``top`` win."""
    out = deep_copy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = deep_copy(value)
    return out


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ----------------------------------------------------------------------------------------------- loading


def load_settings(cls: type[S], file: str | Path | None = None, overrides: dict[str, Any] | None = None, *,
                  base: dict[str, Any] | None = None, labels: dict[str, str] | None = None) -> S:
    """Settings dataclass `cls` from (its defaults) <- `base` <- YAML `file` <- dotted `overrides`, typed,
    its choices and its own ``check()`` verified: the one way every settings object is loaded.

    `labels` name keys the way the user gave them (``{"content_weight": "--content-weight"}``), so that an
    error about a flag's value names the flag."""
    data = deep_copy(base or {})
    if file is not None:
        data = merge(data, load_yaml(file))
    data = apply_overrides(data, overrides or {})
    prepare = getattr(cls, "prepare_data", None)
    if prepare is not None:
        data = prepare(data)
    obj = build(cls, data, "", keys_of(cls), labels)
    check_choices(obj, "", labels)
    check = getattr(obj, "check", None)
    if check is not None:
        check()
    return obj
