"""Write docs/api-reference.md from the OpenAPI document the API serves (one source: the pydantic
models and api/openapi.py). ``tests/service/test_api_reference.py`` fails when the two drift apart.

    .venv/bin/python scripts/api_reference.py            # rewrite docs/api-reference.md
    .venv/bin/python scripts/api_reference.py --check    # exit 1 when it is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET = ROOT / "docs" / "api-reference.md"
METHODS = ("get", "post", "put", "patch", "delete")


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " / ".join(f"`{v}`" for v in schema["enum"])  # "|" would split the table cell
    if schema.get("type") == "array":
        return f"list of {_type(schema.get('items', {}))}"
    return str(schema.get("type", "object"))


def _bounds(schema: dict[str, Any]) -> str:
    parts = []
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in schema:
            parts.append(f"{sign} {schema[key]}")
    for key, word in (("minLength", "min length"), ("maxLength", "max length")):
        if key in schema:
            parts.append(f"{word} {schema[key]}")
    for option in schema.get("anyOf", []):
        inner = _bounds(option)
        if inner:
            parts.append(inner)
    return ", ".join(parts)


def _model(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### `{name}`", ""]
    if schema.get("description"):
        lines += [" ".join(str(schema["description"]).split()), ""]
    properties = schema.get("properties", {})
    if not properties:
        return lines
    required = set(schema.get("required", []))
    lines += ["| field | type | required | bounds | default | description |", "|---|---|---|---|---|---|"]
    for field, spec in properties.items():
        default = f"`{spec['default']}`" if "default" in spec and spec["default"] is not None else ""
        description = " ".join(str(spec.get("description", "")).split()).replace("|", "\\|")
        lines.append(
            f"| `{field}` | {_type(spec)} | {'yes' if field in required else ''} | {_bounds(spec)} | "
            f"{default} | {description} |"
        )
    return [*lines, ""]


def render(document: dict[str, Any]) -> str:
    lines = [
        "# API reference (generated)",
        "",
        "Generated from `/v1/openapi.json` by `scripts/api_reference.py`; do not edit by hand (a test fails",
        "when this file and the document drift apart). The prose guide is [api.md](api.md).",
        "",
        "## Routes",
        "",
        "| method | path | summary | answers |",
        "|---|---|---|---|",
    ]
    for path, operations in document["paths"].items():
        for method in METHODS:
            if method in operations:
                op = operations[method]
                answers = ", ".join(sorted(op.get("responses", {})))
                lines.append(f"| {method.upper()} | `{path}` | {op.get('summary', '')} | {answers} |")
    lines += ["", "## Schemas", ""]
    for name, schema in sorted(document["components"]["schemas"].items()):
        lines += _model(name, schema)
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/api-reference.md is out of date")
    args = parser.parse_args()
    from api.openapi import openapi_document

    text = render(openapi_document())
    if args.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET.relative_to(ROOT)} is out of date: run scripts/api_reference.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
