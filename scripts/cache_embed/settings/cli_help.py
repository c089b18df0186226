"""A step's flag help from the config schema (workflow/schemas/config.schema.yaml): a flag that
carries a setting says what the setting's description says, so that the two cannot drift."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

# Found from this file, not the working directory: a step may be started from anywhere.
SCHEMA_FILE = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"


@cache
def _schema() -> dict:
    return yaml.safe_load(SCHEMA_FILE.read_text(encoding="utf-8"))


def setting_help(key: str) -> str:
    """The description of the setting `key` (dotted: 'train.lora.r') on one line, naming the key, as
    argparse help (a literal % doubled). An unknown key is a KeyError: a flag names a setting that
    the schema does not have."""
    node = _schema()
    for part in key.split("."):
        node = node["properties"][part]
    text = " ".join(node["description"].split())
    return f"{text} (config: {key})".replace("%", "%%")
