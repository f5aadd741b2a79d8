"""The web UI's TypeScript types, generated from the contract (``ui/src/contract.ts``).

The interfaces come from the same JSON Schema the OpenAPI document carries
(:func:`schemas.api.components`), so the UI, the document and the API's answers share one
source. ``runstream schema --ts`` rewrites the file; a test fails when the checked-in copy
differs from a fresh generation.
"""

from __future__ import annotations

import json
from typing import Any, get_args

import msgspec

from runstream.schemas import api
from runstream.schemas.events import NOTE_TAG, TERMINAL_STATUSES, Status

__all__ = ["typescript"]

HEADER = """\
// GENERATED from the contract (schemas/api.py, schemas/events.py) by `runstream schema --ts`.
// Do not edit: change the contract and regenerate; tests/test_contract.py checks this file.
"""


def typescript() -> str:
    """The text of ``ui/src/contract.ts``."""
    aliases = {
        name: api.response_schema(tp) for name, tp in api.ALIASES.items()
    }
    out = [HEADER]
    for name, schema in aliases.items():
        others = {k: v for k, v in aliases.items() if k != name}
        out.extend(_doc(schema.get("description"), ""))
        out.append(f"export type {name} = {_type(_undocumented(schema), others)};")
        out.append("")
    out.append("/** Every run status, and those after which a run records nothing more. */")
    statuses = list(get_args(Status))  # in the order the contract lists them (the UI shows them so)
    out.append(f"export const STATUSES: readonly Status[] = {_literal(statuses)};")
    terminal = [s for s in statuses if s in TERMINAL_STATUSES]
    out.append(f"export const TERMINAL_STATUSES: readonly TerminalStatus[] = {_literal(terminal)};")
    out.append("/** The tag a run's free-text note is kept in (MLflow's). */")
    out.append(f"export const NOTE_TAG = {json.dumps(NOTE_TAG)};")
    out.append("")
    components = api.components()
    for name in sorted(components):
        out.extend(_interface(name, components[name], aliases))
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _literal(values: list[Any]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _doc(text: str | None, indent: str) -> list[str]:
    if not text:
        return []
    return [f"{indent}/** {' '.join(text.split())} */"]


def _undocumented(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k not in ("description", "title")}


def _interface(name: str, schema: dict[str, Any], aliases: dict[str, dict[str, Any]]) -> list[str]:
    lines = _doc(schema.get("description"), "")
    if schema.get("type") != "object" or "properties" not in schema:
        return [*lines, f"export type {name} = {_type(schema, aliases)};"]
    lines.append(f"export interface {name} {{")
    required = set(schema.get("required", ()))
    for prop, sub in schema["properties"].items():
        lines.extend(_doc(sub.get("description"), "  "))
        optional = "" if prop in required else "?"
        lines.append(f"  {prop}{optional}: {_type(sub, aliases)};")
    lines.append("}")
    return lines


def _type(schema: dict[str, Any], aliases: dict[str, dict[str, Any]]) -> str:
    """A schema as a TypeScript type; a schema equal to a named alias's is that name."""
    bare = _undocumented(schema)
    for name, alias in aliases.items():
        if bare == _undocumented(alias):
            return name
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(dict.fromkeys(_type(s, aliases) for s in schema["anyOf"]))
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        item = _type(schema.get("items", {}), aliases)
        return f"({item})[]" if " " in item else f"{item}[]"
    if kind == "object":
        extra = schema.get("additionalProperties")
        return f"Record<string, {_type(extra, aliases) if isinstance(extra, dict) else 'unknown'}>"
    scalar = {"string": "string", "integer": "number", "number": "number", "boolean": "boolean", "null": "null"}
    if kind in scalar:
        return scalar[kind]
    if not bare:
        return "unknown"
    raise ValueError(f"no TypeScript for the JSON Schema {msgspec.json.encode(schema).decode()}")
