"""replay_cache: replay held-out traffic through a real vector database (Milvus) at growing cache sizes.

The measurement is cache_embed.deploy.replay (what is cached, what is looked up, how it is judged),
the outputs cache_embed.deploy.replay_report. Each cache size is read at the threshold the
evaluation chose for it (metrics.json recommended_threshold.sizes) and at the smallest size's.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cache_embed.common.cli import PipelineError, library_versions, run_main, setup_logging
from cache_embed.common.files import atomic_output, read_jsonl, write_json
from cache_embed.data.equivalence import EquivalenceIndex
from cache_embed.data.focus_groups import group_of_record
from cache_embed.deploy.replay import (
    MODELS,
    SIZE_TIERS,
    build_entries,
    build_lookups,
    embed_latencies,
    evaluated_sizes,
    novel_exclusions,
    read_records,
    read_triplets,
    replay_model,
)
from cache_embed.deploy.replay_report import make_plot, render_markdown, trend_sentence
from cache_embed.deploy.vector_cache import MILVUS_LIBRARIES, open_client

LOG = logging.getLogger("replay_cache")
SETTINGS = (
    "sizes",
    "index_types",
    "hnsw_m",
    "hnsw_ef_construction",
    "hnsw_ef",
    "max_lookups",
    "latency_samples",
    "search_limit",
    "seed",
    "batch_size",
    "equivalence",
    "models",
    "threads",
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test-triplets", required=True)
    parser.add_argument("--train-triplets", required=True, help="their paraphrases are the largest size tier")
    parser.add_argument("--queries", nargs="+", required=True, help="split files (query records: train val test)")
    parser.add_argument("--test-queries", required=True, help="the test split (its ids are the test focus groups)")
    parser.add_argument("--base-model", required=True, help="sentence-transformers folder of the base model")
    parser.add_argument("--adapter-model", required=True, help="the merged (exported) model folder")
    parser.add_argument("--eval-metrics", required=True, help="metrics.json with recommended_threshold")
    parser.add_argument("--output-json", required=True)
    parser.add_argument("--output-md", required=True)
    parser.add_argument("--plot", required=True)
    parser.add_argument("--sizes", nargs="+", required=True, choices=SIZE_TIERS)
    parser.add_argument(
        "--padding-seed",
        type=int,
        default=None,
        help="seed of the evaluation's padding order (default: the one metrics.json records)",
    )
    parser.add_argument("--index-types", nargs="+", required=True, choices=["FLAT", "HNSW"])
    parser.add_argument("--hnsw-m", type=int, required=True)
    parser.add_argument("--hnsw-ef-construction", type=int, required=True)
    parser.add_argument("--hnsw-ef", type=int, required=True)
    parser.add_argument("--max-lookups", type=int, required=True, help="per kind (repeats, novel); 0 = all")
    parser.add_argument("--latency-samples", type=int, required=True)
    parser.add_argument("--search-limit", type=int, required=True, help="top-k fetched per novel lookup")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--max-wrong-share", type=float, required=True, help="the budget the readings use")
    parser.add_argument("--repeat-share", type=float, required=True)
    parser.add_argument("--equivalence", required=True, choices=["medquad", "text"])
    parser.add_argument("--domain", default="medical")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="folder for the Milvus Lite file (default: a temp dir)")
    args = parser.parse_args(argv)
    if "FLAT" not in args.index_types:
        parser.error("--index-types must include FLAT (exact search is the reference)")
    if not 0 < args.repeat_share < 1:
        parser.error("--repeat-share must be between 0 and 1")
    args.sizes = [tier for tier in SIZE_TIERS if tier in args.sizes]
    return args


def main(argv=None) -> int:
    setup_logging()
    args = parse_args(argv)
    started = time.perf_counter()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    evaluated = evaluated_sizes(args.eval_metrics)
    padding_seed = evaluated["padding_seed"] if args.padding_seed is None else args.padding_seed
    if padding_seed is None:
        raise PipelineError(f"{args.eval_metrics}: no settings.seed for the padding order; pass --padding-seed")
    test_triplets = read_triplets(args.test_triplets)
    train_triplets = read_triplets(args.train_triplets) if "train_paraphrases" in args.sizes else []
    records = read_records(args.queries)
    test_records = list(read_jsonl(args.test_queries))
    test_ids = {record["id"] for record in test_records}
    equivalence = EquivalenceIndex(records, mode=args.equivalence)
    entries, sizes = build_entries(
        test_triplets,
        records,
        test_ids,
        train_triplets,
        args.sizes,
        [size["cache_size"] for size in evaluated["sizes"]],
        padding_seed,
    )
    if not entries:
        raise PipelineError(f"{args.test_triplets}: no cached questions to replay against")
    lookups = build_lookups(test_triplets, args.max_lookups, args.seed, group_of_record(test_records))
    exclusions = novel_exclusions(lookups["novel"], entries, equivalence)
    LOG.info(
        "cache sizes %s; %d repeats, %d novel lookups",
        [s["entries"] for s in sizes],
        len(lookups["repeats"]),
        len(lookups["novel"]),
    )

    workdir = Path(tempfile.mkdtemp(prefix="replay-milvus-", dir=args.workdir))
    timings: dict[str, float] = {}
    results = {}
    try:
        client = open_client(str(workdir / "cache.db"))
        paths = {model: {"base": args.base_model, "adapter": args.adapter_model}[model] for model in args.models}
        embed_seconds = embed_latencies(paths, lookups, args)
        for model in args.models:
            results[model] = replay_model(
                model,
                paths[model],
                entries,
                sizes,
                lookups,
                exclusions,
                equivalence,
                evaluated,
                args,
                client,
                timings,
                embed_seconds[model],
            )
        client.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    timings["total"] = time.perf_counter() - started
    metrics = {
        "domain": args.domain,
        "settings": {**{key: getattr(args, key) for key in SETTINGS}, "padding_seed": padding_seed},
        "milvus": {**library_versions(MILVUS_LIBRARIES), "uri": "Milvus Lite (local file)", "metric_type": "COSINE"},
        "evaluated_sizes": evaluated["sizes"],
        "max_wrong_share": args.max_wrong_share,
        "repeat_share": args.repeat_share,
        "lookups": {
            "repeats": len(lookups["repeats"]),
            "novel": len(lookups["novel"]),
            "novel_excluded_entries_mean": float(np.mean([len(e) for e in exclusions])) if exclusions else 0.0,
        },
        "sizes": sizes,
        "results": results,
        "runtime_seconds": timings,
    }
    metrics["summary"] = {model: trend_sentence(metrics, model) for model in results}
    write_json(args.output_json, metrics)
    with atomic_output(args.output_md) as handle:
        handle.write(render_markdown(metrics))
    make_plot(metrics, args.plot)
    for model in results:
        LOG.info("%s", metrics["summary"][model])
    LOG.info("replay done in %.0f s", timings["total"])
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
