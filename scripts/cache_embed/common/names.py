"""Names the workflow (workflow/rules/common.smk) and the step scripts must agree on."""

from __future__ import annotations

import re

SPLITS = ("train", "val", "test")


def model_slug(name: str) -> str:
    """The folder name of a hub model: sentence-transformers/all-MiniLM-L6-v2 ->
    sentence-transformers--all-MiniLM-L6-v2 (anything outside [A-Za-z0-9._-] becomes `--`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", name).strip("-")
