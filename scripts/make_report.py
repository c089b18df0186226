"""Write one self-contained HTML report of a domain's run: data, training, evaluation, config.

Images are embedded as base64 data URIs, CSS is inline, and a Content-Security-Policy forbids
any network fetch, so the page opens offline and can be mailed as one file. Every value from
the inputs is HTML-escaped. Stats files are read tolerantly: a missing key shows as "n/a".
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from cache_embed.common.cli import PipelineError, run_main, setup_logging
from cache_embed.common.files import atomic_output, write_json
from cache_embed.report.html_report import get, read_optional, render_report, triplet_split_name

LOG = logging.getLogger("make_report")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", required=True)
    parser.add_argument("--metrics", required=True, help="metrics.json from evaluate_adapter")
    parser.add_argument("--plots", nargs="*", default=[], help="PNG plots to embed")
    parser.add_argument("--queries-stats")
    parser.add_argument("--split-stats")
    parser.add_argument("--val-halves", help="val_halves.stats.json (select/calibrate halves)")
    parser.add_argument("--triplet-stats", nargs="*", default=[], help="{split}.stats.json files")
    parser.add_argument("--history", help="training history.json")
    parser.add_argument("--training-info", help="the adapter's training_info.json")
    parser.add_argument(
        "--seed-metrics",
        nargs="*",
        default=[],
        help="metrics.json of the adapters trained with the other seeds (results/<domain>/seeds/<seed>/metrics.json)",
    )
    parser.add_argument("--effective-config-json", help="the run's effective config as a JSON string")
    parser.add_argument("--write-effective-config", help="also write that config, pretty, to this file")
    parser.add_argument("--output", required=True)
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    effective_config = None
    if args.effective_config_json is not None:
        try:
            effective_config = json.loads(args.effective_config_json)
        except json.JSONDecodeError as error:
            raise PipelineError(f"--effective-config-json is not valid JSON ({error.msg})") from None
        if args.write_effective_config:
            write_json(args.write_effective_config, effective_config)
    plots = [Path(p) for p in args.plots]
    for plot in plots:
        if not plot.is_file():
            raise PipelineError(f"{plot}: plot not found")
    triplet_stats = {}
    for path in args.triplet_stats:
        name = triplet_split_name(path)
        if name in triplet_stats:
            raise PipelineError(f"--triplet-stats: two files for the split '{name}'")
        triplet_stats[name] = read_optional(path) or {}
    training_info = read_optional(args.training_info)
    seed_runs = None
    if args.seed_metrics:
        first_seed = get(training_info, "hyperparameters", "seed")
        if first_seed is None:
            raise PipelineError("--seed-metrics needs --training-info with the deployed adapter's seed")
        seed_runs = {int(first_seed): read_optional(args.metrics)}
        for path in args.seed_metrics:
            seed = Path(path).parent.name
            if not seed.isdigit() or int(seed) in seed_runs:
                raise PipelineError(f"{path}: expected results/<domain>/seeds/<seed>/metrics.json of another seed")
            seed_runs[int(seed)] = read_optional(path)
    page = render_report(
        args.domain,
        read_optional(args.metrics),
        plots,
        queries_stats=read_optional(args.queries_stats),
        split_stats=read_optional(args.split_stats),
        triplet_stats=triplet_stats,
        history=read_optional(args.history),
        training_info=training_info,
        effective_config=effective_config,
        val_halves=read_optional(args.val_halves),
        seed_runs=seed_runs,
    )
    with atomic_output(args.output) as handle:
        handle.write(page)
    LOG.info("wrote %s (%d kB)", args.output, len(page) // 1024)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
