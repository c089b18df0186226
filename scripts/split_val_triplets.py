"""split_val_triplets: the validation triplets in two seeded, focus-disjoint halves.

`select` is what training evaluates checkpoints on (the best one is kept); `calibrate` is what
evaluation chooses the deploy threshold on. Choosing both on the same triplets would tune the
threshold on the data that already picked the model. Whole focus groups (cache_embed.data.focus_groups,
the grouping split_queries uses) go to one half, dealt by a seeded hash so that the calibrate
half holds about --calibrate-fraction of the triplets.
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
from cache_embed.common.text import comparison_key
from cache_embed.data.focus_groups import group_of_record

LOG = logging.getLogger("split_val_triplets")


def split_halves(triplets: list[dict], records: list[dict], calibrate_fraction: float, seed: int):
    """(select, calibrate, stats): whole focus groups to one half; file order kept within each."""
    group_of = group_of_record(records)
    missing = sorted({t.get("query_id") for t in triplets if t.get("query_id") not in group_of}, key=str)
    if missing:
        raise PipelineError(
            f"{len(missing)} val triplet(s) name a query_id not in the val split (first: {missing[0]!r});"
            " the triplets and the split come from different runs: regenerate the triplets"
        )
    sizes = Counter(group_of[t["query_id"]] for t in triplets)
    if len(sizes) < 2:
        raise PipelineError("the val triplets come from fewer than 2 focus groups: they cannot be split in two halves")
    order = sorted(sizes, key=lambda key: hashlib.sha256(f"{seed}\x1f{key}".encode()).hexdigest())
    total = sum(sizes.values())
    half: dict[str, str] = {}
    counts = Counter()
    for key in order:
        # The half furthest below its target takes the next group.
        targets = {"calibrate": calibrate_fraction * total, "select": (1 - calibrate_fraction) * total}
        name = min(("select", "calibrate"), key=lambda h: (counts[h] - targets[h]) / max(targets[h], 1e-9))
        half[key] = name
        counts[name] += sizes[key]
    out = defaultdict(list)
    for triplet in triplets:
        out[half[group_of[triplet["query_id"]]]].append(triplet)
    if not out["select"] or not out["calibrate"]:
        raise PipelineError("one validation half is empty; lower or raise --calibrate-fraction")
    entities = {name: {comparison_key(t.get("focus") or "") for t in rows} for name, rows in out.items()}
    stats = {
        "seed": seed,
        "calibrate_fraction": calibrate_fraction,
        "triplets": total,
        "groups": len(sizes),
        "select": {
            "triplets": len(out["select"]),
            "groups": sum(1 for v in half.values() if v == "select"),
            "anchors": len({t["query_id"] for t in out["select"]}),
        },
        "calibrate": {
            "triplets": len(out["calibrate"]),
            "groups": sum(1 for v in half.values() if v == "calibrate"),
            "anchors": len({t["query_id"] for t in out["calibrate"]}),
        },
        "shared_focus_texts": len((entities["select"] & entities["calibrate"]) - {""}),
    }
    return out["select"], out["calibrate"], stats


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triplets", required=True, type=Path, help="the val triplets")
    parser.add_argument("--queries", required=True, type=Path, help="the val split's query records")
    parser.add_argument("--select", required=True, type=Path)
    parser.add_argument("--calibrate", required=True, type=Path)
    parser.add_argument("--stats", required=True, type=Path)
    parser.add_argument("--calibrate-fraction", required=True, type=float)
    parser.add_argument("--seed", required=True, type=int)
    args = parser.parse_args(argv)
    if not 0 < args.calibrate_fraction < 1:
        parser.error("--calibrate-fraction must be in (0, 1)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    triplets = list(read_jsonl(args.triplets))
    if not triplets:
        raise PipelineError(f"{args.triplets}: no val triplets; check the generation step's stats")
    records = list(read_jsonl(args.queries))
    select, calibrate, stats = split_halves(triplets, records, args.calibrate_fraction, args.seed)
    if stats["shared_focus_texts"]:
        raise PipelineError(
            f"the halves share {stats['shared_focus_texts']} focus texts; this is a bug, please report it"
        )
    write_jsonl(args.select, select)
    write_jsonl(args.calibrate, calibrate)
    write_json(args.stats, stats)
    LOG.info("val triplets: %d select, %d calibrate (%d focus groups)", len(select), len(calibrate), stats["groups"])
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
