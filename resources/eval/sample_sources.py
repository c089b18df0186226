"""Sample the source questions of the natural-phrasing pair sets (resources/eval/README.md).

One question per focus group of a split, in a seeded hash order, so that no two source questions
share a condition; run once when the sets were written, kept so that the sample can be checked:

    python resources/eval/sample_sources.py --split results/medical/splits/val.jsonl --count 180 --seed val
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from cache_embed.data.focus_groups import group_of_record  # noqa: E402
from cache_embed.common.text import stable_id  # noqa: E402

FIELDS = ("id", "query", "focus", "qtype", "synonyms", "category")


def sample_sources(records: list[dict], count: int, seed: str) -> list[dict]:
    """`count` records, one per focus group, in the order of a seeded hash of their ids."""
    group_of = group_of_record(records)
    chosen, groups = [], set()
    for record in sorted(records, key=lambda r: stable_id("natural", seed, r["id"])):
        group = group_of[record["id"]]
        if group in groups:
            continue
        groups.add(group)
        chosen.append({key: record.get(key) for key in FIELDS})
        if len(chosen) == count:
            break
    return chosen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", required=True, help="a split's query records (JSONL)")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seed", required=True)
    args = parser.parse_args(argv)
    records = [json.loads(line) for line in Path(args.split).read_text(encoding="utf-8").splitlines() if line]
    for record in sample_sources(records, args.count, args.seed):
        print(json.dumps(record, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
