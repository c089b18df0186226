"""write_model_card: the adapter's model card with the run's measured figures and deploy threshold.

Runs after evaluation; reads training_info.json, metrics.json and the domain spec's `card:` block,
and writes results/{domain}/model_card.md (publish it as the adapter's README.md).
"""

from __future__ import annotations

import argparse
import logging
import sys

from cache_embed.common.cli import PipelineError, run_main, setup_logging
from cache_embed.common.files import atomic_output, read_json
from cache_embed.report.model_card import load_card_spec, render_card

LOG = logging.getLogger("write_model_card")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", required=True)
    parser.add_argument("--metrics", required=True)
    parser.add_argument("--training-info", required=True)
    parser.add_argument("--spec", required=True, help="the domain's spec YAML (its card: block)")
    parser.add_argument("--output", required=True)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    try:
        metrics, info = read_json(args.metrics), read_json(args.training_info)
    except FileNotFoundError as error:
        raise PipelineError(f"{error.filename}: not found; run evaluation first") from None
    card = render_card(args.domain, info, load_card_spec(args.spec), metrics)
    with atomic_output(args.output) as handle:
        handle.write(card)
    LOG.info("wrote %s", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
