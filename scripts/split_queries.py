"""split_queries: deterministic train/val/test split grouped by focus entity.

A record's entities (cache_embed.data.focus_groups) are its focus CUIs, the normalised focus text of
the record and of every occurrence, and its synonyms (bare abbreviations and strings under 5
characters left out). Records that share an entity are one group (union-find), and a group goes
to one split as a whole, so no focus entity, occurrence focus or synonym is in two splits. Groups
are ordered by a seeded hash and dealt greedily to the split furthest below its target size.
stats.json records the overlap check: entities shared between splits and the share of each
split's records that share one with another split (both must be 0).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from collections import Counter, defaultdict
from pathlib import Path

from cache_embed.common.cli import PipelineError, run_main, setup_logging
from cache_embed.common.files import read_jsonl, write_json, write_jsonl
from cache_embed.common.names import SPLITS
from cache_embed.data.focus_groups import focus_entities, group_records

LOG = logging.getLogger("split_queries")


def assign_splits(groups: dict[str, list[int]], fractions: dict[str, float], seed: int) -> dict[str, str]:
    total = sum(len(members) for members in groups.values())
    order = sorted(groups, key=lambda key: hashlib.sha256(f"{seed}\x1f{key}".encode()).hexdigest())
    sizes = Counter()
    assignment = {}
    for key in order:
        # The split furthest below its target share takes the next group.
        split = min(
            SPLITS,
            key=lambda s: (
                (sizes[s] - fractions[s] * total) / max(fractions[s], 1e-9) if fractions[s] > 0 else float("inf")
            ),
        )
        assignment[key] = split
        sizes[split] += len(groups[key])
    return assignment


def split_records(records: list[dict], fractions: dict[str, float], seed: int):
    groups = group_records(records)
    assignment = assign_splits(groups, fractions, seed)
    by_split = {split: [] for split in SPLITS}
    for key, members in groups.items():
        for index in members:
            by_split[assignment[key]].append(records[index])
    for split in SPLITS:
        by_split[split].sort(key=lambda record: record["id"])
    return by_split, groups


def overlap_report(by_split: dict[str, list[dict]]) -> dict[str, int]:
    entities = {
        split: set().union(*(focus_entities(r) for r in records)) if records else set()
        for split, records in by_split.items()
    }
    return {f"{a}&{b}": len(entities[a] & entities[b]) for i, a in enumerate(SPLITS) for b in SPLITS[i + 1 :]}


def residual_overlap_share(by_split: dict[str, list[dict]]) -> dict[str, float]:
    """Per split, the share of its records that share an entity with a record of another split."""
    owners: dict[str, set[str]] = defaultdict(set)
    for split, records in by_split.items():
        for record in records:
            for entity in focus_entities(record):
                owners[entity].add(split)
    shares = {}
    for split, records in by_split.items():
        leaking = sum(1 for record in records if any(len(owners[e]) > 1 for e in focus_entities(record)))
        shares[split] = leaking / len(records) if records else 0.0
    return shares


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", required=True, type=Path)
    parser.add_argument("--train", required=True, type=Path)
    parser.add_argument("--val", required=True, type=Path)
    parser.add_argument("--test", required=True, type=Path)
    parser.add_argument("--stats", required=True, type=Path)
    parser.add_argument("--train-fraction", type=float, required=True)
    parser.add_argument("--val-fraction", type=float, required=True)
    parser.add_argument("--test-fraction", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    setup_logging()
    fractions = {"train": args.train_fraction, "val": args.val_fraction, "test": args.test_fraction}
    if any(value < 0 for value in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-6:
        raise PipelineError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    records = list(read_jsonl(args.queries))
    if not records:
        raise PipelineError(f"{args.queries}: no queries to split")
    by_split, groups = split_records(records, fractions, args.seed)
    overlap = overlap_report(by_split)
    largest = max(len(members) for members in groups.values())
    stats = {
        "seed": args.seed,
        "fractions": fractions,
        "records": len(records),
        "groups": len(groups),
        "largest_group": largest,
        "sizes": {split: len(rows) for split, rows in by_split.items()},
        "focus_overlap": overlap,
        "focus_overlap_total": sum(overlap.values()),
        "residual_overlap_share": residual_overlap_share(by_split),
        "entity_definition": "cuis, focus and occurrence foci, synonyms (no bare abbreviations, >= 5 characters)",
    }
    if stats["focus_overlap_total"]:
        raise PipelineError(f"focus entities shared between splits: {overlap}; this is a bug, please report it")
    for split in SPLITS:
        write_jsonl(getattr(args, split), by_split[split])
    write_json(args.stats, stats)
    LOG.info("split %d records in %d focus groups (largest %d): %s", len(records), len(groups), largest, stats["sizes"])
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
