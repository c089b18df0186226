"""Evaluate a LoRA adapter against its base model as a semantic cache (the step script).

Every distinct text (test triplets, calibration triplets and external pairs) is encoded once per
model, base first, then with the adapter loaded, as L2-normalised embeddings; similarity is cosine.
The library does the rest: cache_embed.evaluate.inputs (inputs), cache_embed.data.equivalence (the same
question), cache_embed.evaluate.simulation (the cache as operated), cache_embed.evaluate.metrics (metrics.json),
cache_embed.evaluate.plots and cache_embed.evaluate.markdown.

The deploy threshold is CHOSEN on the validation cache simulation (--calibration-triplets: the
calibration half of the val split) by the one threshold rule (cache_embed.evaluate.threshold) under
--max-wrong-share, at each cache size of --cache-sizes (cache_embed.evaluate.cache_sizes: the
calibration cache padded with --calibration-padding, the test cache with --test-padding), and
MEASURED on test at the same size.

metrics.json's shape is documented in cache_embed.evaluate.metrics.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from cache_embed.common.cli import PipelineError, run_main, setup_logging
from cache_embed.common.files import atomic_output, write_json
from cache_embed.common.numbers import fmt, pct
from cache_embed.common.paths import shareable_path
from cache_embed.data.equivalence import MODES
from cache_embed.evaluate.cache_sizes import padding_for_sizes, parse_size_items
from cache_embed.evaluate.encoding import encode_all
from cache_embed.evaluate.inputs import (
    calibration_subset,
    check_triplets_match_records,
    load_external_set,
    load_query_records,
    load_triplets,
    parse_external,
)
from cache_embed.evaluate.markdown import render_markdown
from cache_embed.evaluate.metrics import compute_metrics, versions
from cache_embed.evaluate.plots import make_plots

LOG = logging.getLogger("evaluate_adapter")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triplets", required=True, help="test triplets JSONL")
    parser.add_argument("--queries", default=None, help="the test split's query records (equivalence, focus groups)")
    parser.add_argument("--base-model", required=True, help="sentence-transformers model folder")
    parser.add_argument("--adapter", required=True, help="PEFT LoRA adapter folder")
    parser.add_argument("--output-json", required=True)
    parser.add_argument("--output-md", required=True)
    parser.add_argument("--plots-dir", default="", help="where the plots go (empty: no plots)")
    parser.add_argument("--thresholds", type=float, nargs="+", required=True)
    parser.add_argument("--target-precisions", type=float, nargs="+", required=True)
    parser.add_argument("--deploy-precision", type=float, required=True, help="for the secondary pair-based threshold")
    parser.add_argument(
        "--max-wrong-share",
        type=float,
        required=True,
        help="error budget: the deploy threshold's 95%% upper bound on the wrong share",
    )
    parser.add_argument("--repeat-share", type=float, required=True, help="share of repeats in the traffic mix")
    parser.add_argument("--equivalence", choices=MODES, required=True, help="definition of the same question")
    parser.add_argument("--bootstrap", type=int, required=True, help="paired resamples over focus groups; 0 skips")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument(
        "--external",
        nargs="*",
        required=True,
        metavar="NAME=PATH",
        help="labelled pair files (CSV or JSONL: question_1, question_2, label)",
    )
    parser.add_argument(
        "--phrasing-guard",
        default=None,
        metavar="NAME",
        help="the external set (validation data) whose pair precision at each deploy threshold the verdict checks",
    )
    parser.add_argument(
        "--calibration-triplets",
        default=None,
        metavar="PATH",
        help="triplets JSONL (the val calibration half) on which each model's deploy threshold is"
        " chosen; without it the threshold is chosen on the test triplets (optimistic)",
    )
    parser.add_argument(
        "--cache-sizes",
        nargs="+",
        default=["test_cache"],
        metavar="SIZE",
        help="cache sizes the threshold is chosen for: numbers of questions, test_cache or largest",
    )
    parser.add_argument(
        "--calibration-padding",
        metavar="PATH",
        help="query records outside the validation and test focus groups (the train split) that pad the"
        " calibration cache to each size",
    )
    parser.add_argument(
        "--test-padding",
        nargs="*",
        default=[],
        metavar="PATH",
        help="query records outside the test focus groups (the train and val splits) that pad the test cache",
    )
    parser.add_argument(
        "--calibration-queries",
        default=None,
        metavar="PATH",
        help="the val split's query records (equivalence and groups of the calibration triplets)",
    )
    parser.add_argument(
        "--max-calibration-triplets",
        type=int,
        default=3000,
        metavar="N",
        help="seeded subset of the calibration triplets, whole focus groups (0: all)",
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    for value in args.target_precisions + [args.deploy_precision]:
        if not 0 < value <= 1:
            parser.error(f"precision {value} is outside (0, 1]")
    if not 0 < args.max_wrong_share < 1 or not 0 < args.repeat_share < 1:
        parser.error("--max-wrong-share and --repeat-share must be in (0, 1)")
    if args.bootstrap < 0 or args.batch_size < 1 or args.max_calibration_triplets < 0:
        parser.error("--bootstrap and --max-calibration-triplets must be >= 0 and --batch-size >= 1")
    try:
        args.cache_sizes = parse_size_items(args.cache_sizes)
    except PipelineError as error:
        parser.error(str(error))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    from tqdm import tqdm

    triplets = load_triplets(args.triplets)
    test_records = load_query_records(args.queries)
    if test_records is not None:
        check_triplets_match_records(triplets, test_records, args.triplets)
    else:
        LOG.warning("no --queries: cache hits are judged by identity only, intervals resample anchors")
    external = {
        name: {"file": shareable_path(path), **load_external_set(path)}
        for name, path in parse_external(args.external).items()
    }
    if args.phrasing_guard is not None and args.phrasing_guard not in external:
        raise PipelineError(f"--phrasing-guard {args.phrasing_guard!r} names none of the --external sets")
    calibration, available, calibration_records = None, None, None
    if args.calibration_triplets:
        every = load_triplets(args.calibration_triplets)
        available = len(every)
        calibration_records = load_query_records(args.calibration_queries)
        calibration = calibration_subset(every, args.max_calibration_triplets, args.seed, calibration_records)
        if calibration_records is not None:
            check_triplets_match_records(calibration, calibration_records, args.calibration_triplets)
        LOG.info(
            "choosing thresholds on %d of %d calibration triplets from %s",
            len(calibration),
            available,
            args.calibration_triplets,
        )
    else:
        LOG.warning("no --calibration-triplets: the threshold is chosen on the test triplets (optimistic)")
    # Padding for every size: the largest size takes the most, and a smaller one the first of them.
    sizes, test_padding, calibration_padding = padding_for_sizes(
        args.cache_sizes,
        triplets,
        calibration,
        [record for path in args.test_padding for record in load_query_records(path)],
        load_query_records(args.calibration_padding) if calibration is not None and args.calibration_padding else [],
        args.seed,
    )
    LOG.info(
        "cache sizes %s; padding: %d test, %d calibration questions",
        [s.label for s in sizes],
        len(test_padding),
        len(calibration_padding),
    )
    texts = sorted(
        set(test_padding)
        | set(calibration_padding)
        | {text for t in triplets + (calibration or []) for text in (t["anchor"], t["positive"], t["negative"])}
        | {text for spec in external.values() for a, b, _ in spec["pairs"] for text in (a, b)}
    )
    base, tuned = encode_all(texts, args.base_model, args.adapter, args.batch_size)
    if not np.any(np.abs(base - tuned) > 1e-6):
        LOG.warning("the adapter does not change any embedding: is it untrained or not applied?")
    thresholds = sorted(set(args.thresholds))
    targets = sorted(set(args.target_precisions))
    metrics, curves = compute_metrics(
        triplets,
        texts,
        {"base": base, "adapter": tuned},
        external,
        thresholds,
        targets,
        args.deploy_precision,
        args.bootstrap,
        args.seed,
        progress=lambda it: tqdm(it, desc="bootstrap", file=sys.stderr, mininterval=2),
        calibration=calibration,
        calibration_available=available,
        test_records=test_records,
        calibration_records=calibration_records,
        cache_sizes=args.cache_sizes,
        calibration_padding=calibration_padding,
        test_padding=test_padding,
        equivalence_mode=args.equivalence,
        repeat_share=args.repeat_share,
        max_wrong_share=args.max_wrong_share,
        phrasing_guard=args.phrasing_guard,
    )
    adapter_config = Path(args.adapter) / "adapter_config.json"
    metrics["models"].update(
        {
            "base": shareable_path(args.base_model),
            "adapter": shareable_path(args.adapter),
            "adapter_base_model": shareable_path(
                json.loads(adapter_config.read_text(encoding="utf-8")).get("base_model_name_or_path")
            ),
        }
    )
    metrics["settings"] = {
        "thresholds": thresholds,
        "target_precisions": targets,
        "deploy_precision": args.deploy_precision,
        "max_wrong_share": args.max_wrong_share,
        "repeat_share": args.repeat_share,
        "equivalence": args.equivalence,
        "bootstrap": args.bootstrap,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "calibration_triplets": shareable_path(args.calibration_triplets),
        "cache_sizes": args.cache_sizes,
        "phrasing_guard": args.phrasing_guard,
        "calibration_padding": shareable_path(args.calibration_padding),
        "test_padding": [shareable_path(path) for path in args.test_padding],
        "max_calibration_triplets": args.max_calibration_triplets,
    }
    metrics["versions"] = versions()
    if args.plots_dir:
        make_plots(curves, args.deploy_precision, args.plots_dir)
    write_json(args.output_json, metrics)
    with atomic_output(args.output_md) as handle:
        handle.write(render_markdown(metrics))
    rec = metrics["recommended_threshold"]
    for size in rec["sizes"]:
        for name in ("adapter", "base"):
            entry = size[name]
            if entry:
                LOG.info(
                    "%s at %s: threshold %s (bound met on val: %s); test wrong share %s (%s), repeat hit rate %s",
                    name,
                    size["label"],
                    fmt(entry["threshold"], 4),
                    entry["bound_met_on_val"],
                    pct(entry["test"]["wrong_share"]),
                    entry["test"]["reading"],
                    pct(entry["test"]["repeat_hit_rate"]),
                )
    LOG.info("verdict: %s", rec["verdict"])
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
