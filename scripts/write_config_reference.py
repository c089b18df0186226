"""Write config/README.md from the config schema (workflow/schemas/config.schema.yaml), or, with
--check, fail when the file differs from what the schema gives.

The schema is the one place for every setting's default, bounds and meaning; run this after editing
it. Paths are relative to the project root, which is the default working directory of this program.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
from pathlib import Path

from cache_embed.common.cli import PipelineError, run_main, setup_logging
from cache_embed.common.files import atomic_output
from cache_embed.settings.config_reference import REFERENCE_PATH, REGENERATE_COMMAND, SCHEMA_PATH, load_schema, render

LOG = logging.getLogger("write_config_reference")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schema", type=Path, default=PROJECT_ROOT / SCHEMA_PATH, help="the config schema (YAML)")
    parser.add_argument("--output", type=Path, default=PROJECT_ROOT / REFERENCE_PATH, help="the Markdown page")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when --output differs")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    setup_logging()
    args = parse_args(argv)
    if not args.schema.is_file():
        raise PipelineError(f"{args.schema}: config schema not found; pass --schema")
    expected = render(load_schema(args.schema))
    if args.check:
        actual = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if actual != expected:
            diff = difflib.unified_diff(
                actual.splitlines(),
                expected.splitlines(),
                str(args.output),
                "rendered from the schema",
                lineterm="",
                n=1,
            )
            raise PipelineError(
                f"{args.output} does not match {args.schema}; regenerate it with `{REGENERATE_COMMAND}` "
                "and commit it. First differences:\n" + "\n".join(list(diff)[:40])
            )
        LOG.info("%s matches %s", args.output, args.schema)
        return 0
    with atomic_output(args.output) as handle:
        handle.write(expected)
    LOG.info("wrote %s from %s", args.output, args.schema)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
