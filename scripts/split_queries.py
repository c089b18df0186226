"""split_queries: deterministic train/val/test split grouped by focus entity.

A record's entities are its focus CUIs (from every occurrence) where present, else its
normalised focus text. Records that share an entity are one group (union-find), and a
group goes to one split as a whole, so no focus entity is in two splits. Groups are
ordered by a seeded hash and dealt greedily to the split furthest below its target size.
"""

from __future__ import annotations

import argparse
import logging
import hashlib
import sys
from collections import Counter, defaultdict
from pathlib import Path

from cache_embed.names import SPLITS
from cache_embed.cli import PipelineError, run_main, setup_logging
from cache_embed.files import read_jsonl, write_json, write_jsonl
from cache_embed.text import comparison_key

LOG = logging.getLogger("split_queries")



def focus_entities(record: dict) -> set[str]:
    """The entities that must not cross splits: the focus CUIs, and the normalised focus text of
    every occurrence (a merged record can come from documents with different foci)."""
    cuis = {f"cui:{cui}" for cui in record.get("cuis") or []}
    foci = {occ.get("focus") or "" for occ in record.get("occurrences") or []} | {record.get("focus") or ""}
    entities = cuis | {f"focus:{comparison_key(focus)}" for focus in foci if comparison_key(focus)}
    return entities or {f"record:{record['id']}"}


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        self.parent.setdefault(item, item)
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, first: str, second: str) -> None:
        a, b = self.find(first), self.find(second)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def group_records(records: list[dict]) -> dict[str, list[int]]:
    union_find = _UnionFind()
    entities_of = []
    for record in records:
        entities = sorted(focus_entities(record))
        entities_of.append(entities)
        for other in entities[1:]:
            union_find.union(entities[0], other)
    groups: dict[str, list[int]] = defaultdict(list)
    for index, entities in enumerate(entities_of):
        groups[union_find.find(entities[0])].append(index)
    return groups


def assign_splits(groups: dict[str, list[int]], fractions: dict[str, float], seed: int) -> dict[str, str]:
    total = sum(len(members) for members in groups.values())
    order = sorted(groups, key=lambda key: hashlib.sha256(f"{seed}\x1f{key}".encode()).hexdigest())
    sizes = Counter()
    assignment = {}
    for key in order:
        # The split furthest below its target share takes the next group.
        split = min(SPLITS, key=lambda s: (sizes[s] - fractions[s] * total) / max(fractions[s], 1e-9) if fractions[s] > 0 else float("inf"))
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
    entities = {split: set().union(*(focus_entities(r) for r in records)) if records else set()
                for split, records in by_split.items()}
    return {f"{a}&{b}": len(entities[a] & entities[b]) for i, a in enumerate(SPLITS) for b in SPLITS[i + 1:]}


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
        "seed": args.seed, "fractions": fractions, "records": len(records), "groups": len(groups),
        "largest_group": largest, "sizes": {split: len(rows) for split, rows in by_split.items()},
        "focus_overlap": overlap, "focus_overlap_total": sum(overlap.values()),
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
