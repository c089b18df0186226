"""Merge the N shard files of one split's triplets (and their stats) into
results/{domain}/triplets/{split}.jsonl and {split}.stats.json.

The shards must be exactly shards 0..N-1 of the same run: every shard's stats names its shard K
of N, the split, the digest of the current split file and the same run settings. A missing,
partial or stale shard is an error, never silently merged. Triplets are deduplicated by id and
sorted by id (deterministic; ids are hashes, so the order is mixed across queries).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path

from cache_embed.common.cli import PipelineError, run_main, setup_logging
from cache_embed.common.files import read_json, read_jsonl, sha256_file, write_json, write_jsonl
from cache_embed.common.names import SPLITS

LOG = logging.getLogger("gather_triplets")

TRIPLET_FIELDS = (
    "id",
    "anchor",
    "positive",
    "negative",
    "query_id",
    "split",
    "domain",
    "backend",
    "model",
    "positive_kind",
    "negative_kind",
    "qtype",
    "negative_qtype",
    "focus",
)
SUMMED = ("dropped", "failures", "synonyms_filtered", "skipped_queries", "qtypes_without_forms")
COUNTED = ("queries", "queries_with_triplets", "queries_without_negatives", "llm_attempts")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--triplets", nargs="+", required=True, help="the shards' triplet JSONL files")
    parser.add_argument("--shard-stats", nargs="+", required=True, help="the shards' stats JSON files, same order")
    parser.add_argument("--input", required=True, help="the split JSONL the shards were generated from")
    parser.add_argument("--split", required=True, choices=SPLITS)
    parser.add_argument("--shards", type=int, required=True, help="number of shards N expected")
    parser.add_argument("--output", required=True)
    parser.add_argument("--stats", required=True)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if len(args.triplets) != len(args.shard_stats):
        parser.error("--triplets and --shard-stats need the same number of files")
    return args


def check_shards(stats: list[tuple[Path, dict]], split: str, shards: int, input_sha256: str) -> None:
    """Raise unless `stats` are exactly shards 0..N-1 of one run over the current split file."""
    if len(stats) != shards:
        raise PipelineError(f"expected {shards} shards of split {split}, got {len(stats)}; run every shard")
    first_path, first = stats[0]
    seen: dict[int, Path] = {}
    for path, shard in stats:
        where = f"{path}"
        if shard.get("split") != split:
            raise PipelineError(f"{where}: shard of split {shard.get('split')!r}, expected {split!r}")
        if shard.get("shards") != shards:
            raise PipelineError(
                f"{where}: shard of a {shard.get('shards')}-shard run, expected {shards}; it is stale: delete it and rerun"
            )
        number = shard.get("shard")
        if not isinstance(number, int) or not 0 <= number < shards:
            raise PipelineError(f"{where}: shard number {number!r} is not in 0..{shards - 1}")
        if number in seen:
            raise PipelineError(f"{where}: shard {number} given twice (also {seen[number]})")
        seen[number] = path
        if shard.get("input_sha256") != input_sha256:
            raise PipelineError(
                f"{where}: made from another version of the split file (input digest differs); "
                "it is stale: delete the shard and rerun generate_triplets"
            )
        if shard.get("settings_sha256") != first.get("settings_sha256"):
            raise PipelineError(
                f"{where}: made with other settings than {first_path} ({shard.get('settings')} vs "
                f"{first.get('settings')}); it is stale: delete the shards and rerun"
            )


def gather(
    triplet_paths: list[str], stats_paths: list[str], input_path: str, split: str, shards: int
) -> tuple[list[dict], dict]:
    input_sha256 = sha256_file(input_path)
    stats = []
    for path in map(Path, stats_paths):
        if not path.exists():
            raise PipelineError(f"{path}: shard stats missing; run generate_triplets for that shard")
        stats.append((path, read_json(path)))
    check_shards(stats, split, shards, input_sha256)
    by_id: dict[str, dict] = {}
    duplicates = 0
    per_backend: Counter = Counter()
    for path, (stats_path, shard) in zip(map(Path, triplet_paths), stats, strict=False):
        if not path.exists():
            raise PipelineError(f"{path}: shard triplets missing; rerun generate_triplets for that shard")
        count = 0
        for line, record in enumerate(read_jsonl(path), start=1):
            count += 1
            missing = [f for f in TRIPLET_FIELDS if f not in record]
            if missing:
                raise PipelineError(f"{path}:{line}: triplet lacks {missing}; regenerate the shard")
            if record["split"] != split:
                raise PipelineError(f"{path}:{line}: triplet of split {record['split']!r} in split {split!r}")
            if record["id"] in by_id:
                duplicates += 1
                continue
            by_id[record["id"]] = record
            per_backend[record["backend"]] += 1
        if count != shard.get("triplets"):
            raise PipelineError(
                f"{path}: holds {count} triplets but {stats_path} says {shard.get('triplets')}; "
                "the shard is partial or stale: delete both and rerun"
            )
    triplets = [by_id[key] for key in sorted(by_id)]
    shard_stats = [s for _, s in sorted(stats, key=lambda item: item[1]["shard"])]
    first = shard_stats[0]
    totals = {name: sum(s.get(name) or 0 for s in shard_stats) for name in COUNTED}
    summary = {
        "split": split,
        "shards": shards,
        "domain": first.get("domain"),
        "backend": first.get("backend"),
        "model": first.get("model"),
        "input_sha256": input_sha256,
        "settings": first.get("settings"),
        "settings_sha256": first.get("settings_sha256"),
        **totals,
        "yield": round(totals["queries_with_triplets"] / totals["queries"], 6) if totals["queries"] else None,
        "triplets": len(triplets),
        "duplicate_triplets_removed": duplicates,
        "per_backend": dict(sorted(per_backend.items())),
        "positive_kinds": dict(sorted(Counter(t["positive_kind"] for t in triplets).items())),
        "negative_kinds": dict(sorted(Counter(t["negative_kind"] for t in triplets).items())),
        "per_shard": [
            {k: s.get(k) for k in ("shard", "queries", "queries_with_triplets", "triplets", "yield")}
            for s in shard_stats
        ],
    }
    for name in SUMMED:
        total: Counter = Counter()
        for s in shard_stats:
            total.update(s.get(name) or {})
        summary[name] = dict(sorted(total.items()))
    return triplets, summary


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    triplets, summary = gather(args.triplets, args.shard_stats, args.input, args.split, args.shards)
    write_jsonl(args.output, triplets)
    write_json(args.stats, summary)
    LOG.info(
        "%s: %d triplets (%d duplicates removed), yield %s",
        args.output,
        len(triplets),
        summary["duplicate_triplets_removed"],
        summary["yield"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
