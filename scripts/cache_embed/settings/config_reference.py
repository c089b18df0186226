"""config/README.md, rendered from the config schema (workflow/schemas/config.schema.yaml).

The schema is the one place for every setting's default, bounds and meaning; this module turns it
into the Markdown reference users read, so the two cannot drift. scripts/write_config_reference.py
writes (or, with --check, compares) the page; tests/test_config_reference.py checks that the
committed page is what render() makes of the committed schema.
"""

from __future__ import annotations

from pathlib import Path

import yaml

SCHEMA_PATH = Path("workflow/schemas/config.schema.yaml")
REFERENCE_PATH = Path("config/README.md")
REGENERATE_COMMAND = "python scripts/write_config_reference.py"

INTRO = f"""\
# Configuration

<!-- Generated from {SCHEMA_PATH} by `{REGENERATE_COMMAND}`:
     edit the schema, not this file. -->

Every setting's default, bounds and meaning are defined in
`{SCHEMA_PATH}`; this page is generated from it
(`{REGENERATE_COMMAND}`; the tests fail when the two differ).
The defaults are those of a full run on a GPU cluster. `config/config.yaml` names the domains to
build and sets nothing else; `config/local.yaml` (loaded by `profiles/local`) overrides a few keys
for a short CPU run.
Every config file is validated against the schema when the workflow is parsed: an unknown key or a
value out of range fails at once, naming its path, and missing keys get the schema's defaults (the
split fractions must also sum to 1, checked right after). Relative paths are relative to the
project root. Every setting reaches its step through the rule's `params:`, so changing one reruns
exactly the rules that use it and everything downstream.

Change settings by editing a config file or by adding one (`--configfile config/config.yaml mine.yaml`,
later files win, nested keys merge). `--config key=value` works for top-level values, but
Snakemake reads nested values given there as strings (`--config train="{{'learning_rate': 1e-4}}"`
fails validation), so use a file for those.
"""

TABLE_HEADER = "| key | default | bounds | meaning |\n|---|---|---|---|"


def load_schema(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _cell(text: str) -> str:
    """One table cell: a pipe would end the cell, a newline the row."""
    return " ".join(str(text).split()).replace("|", r"\|")


def format_value(value) -> str:
    """A default as a reader would write it in a config file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value and abs(value) < 1e-3:  # 2e-4, not 0.0002 or 2e-04
            mantissa, exponent = f"{value:e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{value:g}"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, list):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "`{}`" if not value else "`" + yaml.safe_dump(value, default_flow_style=True).strip() + "`"
    return f"`{value}`"


def _number_bounds(schema: dict) -> str:
    kind = schema.get("type", "number")
    low, low_inclusive = schema.get("minimum"), True
    if "exclusiveMinimum" in schema:
        low, low_inclusive = schema["exclusiveMinimum"], False
    high, high_inclusive = schema.get("maximum"), True
    if "exclusiveMaximum" in schema:
        high, high_inclusive = schema["exclusiveMaximum"], False
    if low is not None and high is not None:
        opening, closing = "[" if low_inclusive else "(", "]" if high_inclusive else ")"
        return f"{kind} in {opening}{format_value(low)}, {format_value(high)}{closing}"
    if low is not None:
        return f"{kind} {'≥' if low_inclusive else '>'} {format_value(low)}"
    if high is not None:
        return f"{kind} {'≤' if high_inclusive else '<'} {format_value(high)}"
    return kind


def describe_bounds(schema: dict) -> str:
    """The values a key accepts, in words."""
    if "anyOf" in schema:
        return " or ".join(describe_bounds(option) for option in schema["anyOf"])
    if "enum" in schema:
        return "one of " + ", ".join(format_value(item) for item in schema["enum"])
    kind = schema.get("type")
    if kind in ("integer", "number"):
        return _number_bounds(schema)
    if kind == "boolean":
        return "true or false"
    if kind == "string":
        if "pattern" in schema:
            return f"text matching `{schema['pattern']}`"
        return "non-empty text" if schema.get("minLength", 0) >= 1 else "text"
    if kind == "array":
        items = describe_bounds(schema.get("items", {})) or "anything"
        at_least = schema.get("minItems", 0)
        return f"list of {items}" + (f", at least {at_least}" if at_least else "")
    if kind == "object":
        names = schema.get("propertyNames", {}).get("pattern")
        values = schema.get("additionalProperties")
        values = describe_bounds(values) if isinstance(values, dict) else "anything"
        return "mapping of name" + (f" (matching `{names}`)" if names else "") + f" → {values}"
    return ""


def _children(schema: dict) -> tuple[str | None, dict]:
    """The named sub-keys of an object key: its `properties`, or, for a mapping of names to objects
    (like `domains`), the properties of each value under a placeholder name."""
    if "properties" in schema:
        return None, schema["properties"]
    values = schema.get("additionalProperties")
    if isinstance(values, dict) and "properties" in values:
        return "<name>", values["properties"]
    return None, {}


def is_group(schema: dict) -> bool:
    """True for an object whose keys are listed one by one (a leaf is anything else, a free mapping
    such as evaluate.external included)."""
    return bool(_children(schema)[1])


def iter_keys(schema: dict, prefix: str = ""):
    """(dotted path, key schema, required) for every key below `schema`, depth first, groups before
    their keys."""
    placeholder, children = _children(schema)
    if placeholder:
        prefix = f"{prefix}.{placeholder}" if prefix else placeholder
        required = set(schema["additionalProperties"].get("required", []))
    else:
        required = set(schema.get("required", []))
    for name, child in children.items():
        path = f"{prefix}.{name}" if prefix else name
        yield path, child, name in required
        if is_group(child):
            yield from iter_keys(child, path)


def _row(path: str, schema: dict, required: bool) -> str:
    if is_group(schema):
        default, bounds = "", ""
    elif required:
        default, bounds = "(required)", describe_bounds(schema)
    elif "default" in schema:
        default, bounds = format_value(schema["default"]), describe_bounds(schema)
    else:
        default, bounds = "(unset)", describe_bounds(schema)
    cells = [f"`{path}`", default, bounds, schema.get("description", "")]
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def render(schema: dict) -> str:
    """The Markdown reference of every key of `schema`: the intro, then one table per top-level
    section (key as a dotted path, default, bounds or allowed values, meaning)."""
    parts = [INTRO]
    for section, section_schema in schema.get("properties", {}).items():
        lines = [f"## {section}", ""]
        if section_schema.get("description"):
            lines += [" ".join(section_schema["description"].split()), ""]
        if section in schema.get("required", []):
            lines += ["This section is required; it has no default.", ""]
        rows = [_row(path, key, required) for path, key, required in iter_keys(section_schema, section)]
        if not is_group(section_schema):
            rows = [_row(section, section_schema, section in schema.get("required", []))]
        lines += [TABLE_HEADER, *rows]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)
