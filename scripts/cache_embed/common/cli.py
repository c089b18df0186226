"""What every step script shares: the user-facing error, logging to the rule's log, the main() wrapper,
and the library versions a step records."""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import sys


class PipelineError(Exception):
    """An error with a message meant for the user: what went wrong, where, and what to do."""


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr, which rules redirect to their `log:` file. Each step calls it first in main(), never
    at import, so that importing a step (tests, other steps) does not configure logging; modules log through
    `logging.getLogger(<their name>)`."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_main(main_function, argv=None) -> int:
    """Run a step's main(); a PipelineError becomes one clear line on stderr and exit status 1."""
    try:
        return main_function(argv) or 0
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def library_versions(distributions: tuple[str, ...]) -> dict[str, str | None]:
    """Installed versions of the named distributions (None when absent), plus Python's."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in distributions:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions
