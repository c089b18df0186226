"""Which files of the cache_embed library a script imports, directly or through each other.

The workflow makes them inputs of the script's rule (workflow/rules/common.smk: step_library), so
that editing a module reruns exactly the steps that use it; the environment test reads the same
graph to check each rule's conda environment.
"""

from __future__ import annotations

import ast
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1]
PACKAGE = LIBRARY.name


def module_file(dotted: str) -> Path | None:
    """The file of a module of the library ('cache_embed.evaluate.simulation'), None if there is none."""
    parts = dotted.split(".")
    if parts[0] != PACKAGE:
        return None
    base = LIBRARY.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def direct_library_imports(path: Path) -> set[Path]:
    """Library files one file imports: each named module and the __init__.py of every package on its path."""
    dotted = set()
    for node in ast.walk(ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            dotted.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            dotted.add(node.module)
            # `from package import module` names a module; `from module import name` an attribute.
            dotted.update(f"{node.module}.{alias.name}" for alias in node.names)
    found = set()
    for name in dotted:
        parts = name.split(".")
        for end in range(1, len(parts) + 1):
            file = module_file(".".join(parts[:end]))
            if file is not None:
                found.add(file)
    return found


def library_files(script: Path) -> list[Path]:
    """Every library file `script` imports, directly or through other library files, sorted."""
    found: set[Path] = set()
    pending = [Path(script)]
    while pending:
        for file in direct_library_imports(pending.pop()):
            if file not in found:
                found.add(file)
                pending.append(file)
    return sorted(found)
