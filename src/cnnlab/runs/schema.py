"""The JSON Schema of summary.json, generated from the summary dataclasses (runs/summary.py).

The generated file ships as cnnlab/schemas/summary.schema.json, so tools outside cnnlab can validate and read
run folders; a test checks that the shipped file equals what this module generates, so it cannot drift.
Regenerate it after changing a summary field:  python -m cnnlab.runs.schema
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from .summary import SCHEMA_VERSION, SUMMARY_TYPES, Summary

SHIPPED = Path(__file__).resolve().parents[1] / "schemas" / "summary.schema.json"


def _type_schema(tp: Any) -> dict[str, Any]:
    """JSON Schema of one Python annotation (the subset the summary dataclasses use)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [_type_schema(a) for a in typing.get_args(tp)]
        merged: list[str] = []
        for option in options:
            kinds = option.get("type")
            if kinds is None or len(option) > 1:
                return {"anyOf": options}
            merged += kinds if isinstance(kinds, list) else [kinds]
        return {"type": merged}
    if origin is list or origin is tuple:
        args = typing.get_args(tp)
        return {"type": "array", **({"items": _type_schema(args[0])} if args and args[0] is not Any else {})}
    if origin is dict:
        args = typing.get_args(tp)
        value = args[1] if len(args) == 2 else Any
        return {"type": "object", **({"additionalProperties": _type_schema(value)} if value is not Any else {})}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
    if tp in simple:
        return {"type": simple[tp]}
    if tp is Any:
        return {}
    raise TypeError(f"no JSON Schema for {tp!r}")


def _field_doc(cls: type, name: str) -> str | None:
    """The docstring written under a field (the convention of this package), for the schema's descriptions."""
    import ast
    import inspect
    import textwrap

    for klass in cls.__mro__:
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, after in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == name and \
                    isinstance(after, ast.Expr) and isinstance(getattr(after, "value", None), ast.Constant):
                return " ".join(str(after.value.value).split())
    return None


def kind_schema(cls: type[Summary]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        prop = _type_schema(hints[f.name])
        doc = _field_doc(cls, f.name)
        if doc:
            prop["description"] = doc
        properties[f.name] = prop
    properties["kind"] = {"enum": list(cls.KINDS)}
    properties["schema_version"] = {"const": SCHEMA_VERSION}
    return {"title": cls.__name__, "description": " ".join((cls.__doc__ or "").split()), "type": "object",
            "properties": properties, "required": ["kind", "schema_version"], "additionalProperties": False}


def summary_schema() -> dict[str, Any]:
    """The whole schema: one object schema per summary type, chosen by `kind`."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://cnnlab.invalid/schemas/summary.schema.json",
            "title": "cnnlab summary.json",
            "description": "What a cnnlab run reports when it ends. `kind` says which of the object schemas "
                           "applies; `schema_version` how to read it.",
            "oneOf": [kind_schema(cls) for cls in SUMMARY_TYPES]}


def schema_text() -> str:
    return json.dumps(summary_schema(), indent=2) + "\n"


def load_shipped() -> dict[str, Any]:
    """The schema as shipped inside the package (what other tools should use)."""
    return json.loads(SHIPPED.read_text())


if __name__ == "__main__":
    SHIPPED.parent.mkdir(parents=True, exist_ok=True)
    SHIPPED.write_text(schema_text())
    print(f"wrote {SHIPPED}")
