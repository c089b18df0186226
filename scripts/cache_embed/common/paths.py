"""Paths as they may appear in outputs meant to be shared (metrics, report, model card, training info)."""

from __future__ import annotations

import os
from pathlib import Path


def shareable_path(path) -> str | None:
    """A path relative to the working directory when it lies under it; otherwise only its last two
    parts, so that no absolute local path (home folders, user names, cluster mounts) is published."""
    if path is None or path == "":
        return None
    text = str(path)
    if "://" in text or text.startswith("package:"):
        return text
    candidate = Path(text)
    if not candidate.is_absolute():
        return candidate.as_posix()
    try:
        return (
            Path(os.path.relpath(candidate.resolve(), Path.cwd().resolve())).as_posix()
            if candidate.resolve().is_relative_to(Path.cwd().resolve())
            else "/".join(candidate.parts[-2:])
        )
    except (OSError, ValueError):
        return "/".join(candidate.parts[-2:])
