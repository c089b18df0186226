"""write_summary: results/{domain}/summary.md, the run's answer in one page, and the extract it is
rendered from (summary.json), from the evaluation's metrics.json and, where the run has it, the
replay's (cache_embed.report.summary).
"""

from __future__ import annotations

import argparse
import logging
import sys

from cache_embed.common.cli import run_main, setup_logging
from cache_embed.common.files import atomic_output, read_json, write_json
from cache_embed.report.summary import render_summary, run_facts, summary_figures

LOG = logging.getLogger("write_summary")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", required=True)
    parser.add_argument("--metrics", required=True, help="the evaluation's metrics.json")
    parser.add_argument("--effective-config", required=True, help="the report's effective_config.json (digested)")
    parser.add_argument("--replay-metrics", default=None, help="the replay's metrics.json, where the run has one")
    parser.add_argument("--output-md", required=True)
    parser.add_argument("--output-json", required=True)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    figures = summary_figures(
        args.domain,
        read_json(args.metrics),
        run_facts(read_json(args.effective_config)),
        read_json(args.replay_metrics) if args.replay_metrics else None,
    )
    write_json(args.output_json, figures)
    with atomic_output(args.output_md) as handle:
        handle.write(render_summary(figures))
    LOG.info("wrote %s and %s", args.output_md, args.output_json)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
