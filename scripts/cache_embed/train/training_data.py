"""What training reads: the usable triplets (a seeded subset), the rows with mined negatives, and
the labelled question pairs of the contrastive stage."""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from pathlib import Path

from cache_embed.common.cli import PipelineError
from cache_embed.common.files import read_json, write_json
from cache_embed.common.paths import shareable_path
from cache_embed.common.text import comparison_key
from cache_embed.data.triplets import TRIPLET_FIELDS, read_triplets
from cache_embed.train.negative_mining import MiningSettings, add_mined_negatives
from cache_embed.train.qtype_balance import balanced_sample

LOG = logging.getLogger("train_adapter")
MINED_NEGATIVES_FILE = "mined_train.jsonl"


def load_triplets(
    path: str, max_examples: int, seed: int, max_drop_fraction: float, qtype_balance: float = 1.0
) -> tuple[list[dict], dict]:
    """Read triplets; a record without the three texts is a user error (file and line named).
    Degenerate triplets (negative equal to anchor or positive, positive equal to nothing new)
    are dropped and counted; more than max_drop_fraction of them fails the run. A subset of
    max_examples is a seeded uniform sample, or with qtype_balance below 1 a sample whose qtype
    shares are flattened (cache_embed.train.qtype_balance)."""
    path = Path(path)
    kept, qtypes, dropped, total = [], [], {}, 0
    for _, record in read_triplets(path):
        total += 1
        keys = {field: comparison_key(record[field]) for field in TRIPLET_FIELDS}
        reason = None
        if keys["negative"] in (keys["anchor"], keys["positive"]):
            reason = "negative_equals_anchor_or_positive"
        if reason:
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        # The ids stay with the texts: the cache evaluator's equivalence needs them.
        kept.append({key: record[key] for key in (*TRIPLET_FIELDS, "query_id", "negative_query_id") if key in record})
        qtypes.append(str(record.get("qtype") or "unknown"))
    if total == 0:
        raise PipelineError(f"{path}: no triplets; check the generate step's stats")
    n_dropped = sum(dropped.values())
    if n_dropped > max_drop_fraction * total:
        raise PipelineError(
            f"{path}: {n_dropped} of {total} triplets unusable ({dropped}), more than the allowed "
            f"fraction {max_drop_fraction}; fix the generator or raise --max-drop-fraction"
        )
    if not kept:
        raise PipelineError(f"{path}: every triplet was unusable ({dropped})")
    available = len(kept)
    if max_examples and max_examples < len(kept):
        if qtype_balance < 1:
            chosen = balanced_sample(qtypes, max_examples, qtype_balance, seed)
        else:
            chosen = sorted(random.Random(seed).sample(range(len(kept)), max_examples))
        kept, qtypes = [kept[index] for index in chosen], [qtypes[index] for index in chosen]
    stats = {"file": shareable_path(path), "records": total, "usable": available, "used": len(kept), "dropped": dropped}
    if qtype_balance < 1:
        stats["qtype_balance"] = qtype_balance
        stats["qtypes_used"] = dict(Counter(qtypes).most_common())
    return kept, stats


def contrastive_pairs(rows: list[dict], negative_fields: list[str], count: int, seed: int) -> dict[str, list]:
    """`count` labelled question pairs from the triplets, shuffled: (anchor, paraphrase, 1) and
    (anchor, each of its negatives, 0), so that the stage sees what the cache decides by threshold."""
    pairs = []
    for row in rows:
        pairs.append((row["anchor"], row["positive"], 1))
        pairs += [(row["anchor"], row[field], 0) for field in negative_fields]
    random.Random(seed).shuffle(pairs)
    pairs = pairs[:count]
    return {"sentence1": [p[0] for p in pairs], "sentence2": [p[1] for p in pairs], "label": [p[2] for p in pairs]}


def mined_rows(args, rows: list[dict], base_model, checkpoint_dir: Path) -> tuple[list[dict], dict]:
    """The rows with --mined-negatives mined negatives each (by the frozen base model, before the
    adapter is added). Kept in the checkpoint folder, whose settings fingerprint covers the mining,
    so a resumed run trains on the same rows without mining again."""
    from cache_embed.evaluate.inputs import load_query_records

    saved = checkpoint_dir / MINED_NEGATIVES_FILE
    if saved.exists():
        payload = read_json(saved)
        LOG.info("mined negatives: reusing %s", saved)
        return payload["rows"], payload["stats"]
    settings = MiningSettings(
        count=args.mined_negatives,
        range_min=args.mine_range_min,
        range_max=args.mine_range_max,
        absolute_margin=args.mine_margin,
        batch_size=max(args.batch_size, 64),
    )
    started = time.monotonic()
    rows, stats = add_mined_negatives(
        rows, load_query_records(args.train_queries), base_model, settings, args.equivalence, args.max_drop_fraction
    )
    stats["seconds"] = round(time.monotonic() - started, 1)
    write_json(saved, {"rows": rows, "stats": stats})
    return rows, stats
