"""Rebalancing question types in the training subset (cache_embed.train.qtype_balance, train_adapter
--qtype-balance), on hand-made counts and on triplets from the real MedQuAD train split."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import train_adapter

from cache_embed.common.files import write_jsonl
from cache_embed.train.qtype_balance import balanced_sample, qtype_quotas
from conftest import structure_triplets


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [
        # Equal counts, capped: c has 1 and b 10, so a takes the other 19.
        (0.0, {"a": 19, "b": 10, "c": 1}),
        # Shares 10 : 3.16 : 1 of 30 give c 2.1, more than it has: c 1, then 29 as 10 : 3.16 ->
        # 22.03 and 6.97, and the one left goes to the larger remainder (b).
        (0.5, {"a": 22, "b": 7, "c": 1}),
        # As in the file: 27.03, 2.70, 0.27 -> 27, 2, 0 and the one left to b.
        (1.0, {"a": 27, "b": 3, "c": 0}),
    ],
)
def test_quotas_by_hand(alpha, expected):
    assert qtype_quotas({"a": 100, "b": 10, "c": 1}, 30, alpha) == expected


def test_quotas_take_everything_when_the_size_allows_and_reject_bad_alpha():
    assert qtype_quotas({"a": 5, "b": 2}, 50, 0.0) == {"a": 5, "b": 2}
    with pytest.raises(ValueError):
        qtype_quotas({"a": 5}, 3, 1.5)


def test_balanced_sample_of_real_triplets_meets_its_quotas(medquad_splits):
    triplets = structure_triplets(medquad_splits / "train.jsonl", 3000, seed=11)
    qtypes = [t["qtype"] for t in triplets]
    counts = Counter(qtypes)
    rows = balanced_sample(qtypes, 600, 0.0, seed=3)
    assert rows == sorted(set(rows)) and len(rows) == 600
    taken = Counter(qtypes[row] for row in rows)
    # Independently: every qtype gets the same count unless it has fewer triplets (then all of them).
    full = {q for q, n in counts.items() if taken[q] == n}
    level = {taken[q] for q in counts if q not in full}
    assert max(level) - min(level) <= 1 and all(counts[q] <= min(level) + 1 for q in full)
    assert rows == balanced_sample(qtypes, 600, 0.0, seed=3)
    assert rows != balanced_sample(qtypes, 600, 0.0, seed=4)
    # The commonest qtype's share falls from its share of the file.
    top, top_count = counts.most_common(1)[0]
    assert taken[top] / 600 < top_count / len(qtypes) / 2


def test_training_subset_follows_qtype_balance(medquad_splits, tmp_path):
    triplets = structure_triplets(medquad_splits / "train.jsonl", 2000, seed=12)
    path = tmp_path / "train.jsonl"
    write_jsonl(path, triplets)
    uniform, stats = train_adapter.load_triplets(str(path), 400, 5, 0.0)
    # At 1 the subset is the uniform seeded sample it always was.
    expected = sorted(random.Random(5).sample(range(len(triplets)), 400))
    assert [row["anchor"] for row in uniform] == [triplets[i]["anchor"] for i in expected]
    assert "qtypes_used" not in stats
    flat, stats = train_adapter.load_triplets(str(path), 400, 5, 0.0, qtype_balance=0.0)
    anchors = {row["anchor"]: row for row in triplets}
    used = Counter(anchors[row["anchor"]]["qtype"] for row in flat)
    assert stats["qtypes_used"] == dict(used) and stats["qtype_balance"] == 0.0
    assert used == Counter(
        {q: n for q, n in qtype_quotas(Counter(t["qtype"] for t in triplets), 400, 0.0).items() if n}
    )
    assert max(used.values()) < max(Counter(anchors[row["anchor"]]["qtype"] for row in uniform).values())
