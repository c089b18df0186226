"""The natural-phrasing pair sets (resources/eval/): structure, label balance, and that every source
question comes from the split the set is named for, checked against the real MedQuAD splits."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from cache_embed.common.files import read_jsonl
from cache_embed.evaluate.inputs import load_external_set
from conftest import PROJECT_ROOT

SETS = {"val": PROJECT_ROOT / "resources" / "eval" / "natural_val.jsonl"}
SETS["test"] = PROJECT_ROOT / "resources" / "eval" / "natural_test.jsonl"
SAME = {"lay_terms", "first_person", "typos", "two_sentences"}
DIFFERENT = {"other_need", "similar_condition", "population_or_negation"}
KEYS = {"id", "source_id", "qtype", "focus", "kind", "label", "question_1", "question_2", "made"}


@pytest.mark.parametrize("split", sorted(SETS))
def test_natural_set_structure_and_balance(split):
    rows = list(read_jsonl(SETS[split]))
    assert len(rows) >= 600
    assert all(set(row) == KEYS for row in rows)
    assert len({row["id"] for row in rows}) == len(rows)
    assert sum(row["label"] for row in rows) * 2 == len(rows)  # half same, half different
    for row in rows:
        assert row["kind"] in (SAME if row["label"] == 1 else DIFFERENT), row["id"]
        assert row["question_2"].strip() and row["question_2"] != row["question_1"], row["id"]
    by_source = defaultdict(list)
    for row in rows:
        by_source[row["source_id"]].append(row)
    for source, pairs in by_source.items():
        # Two pairs of each label per source question, of two different kinds each.
        assert sorted(p["label"] for p in pairs) == [0, 0, 1, 1], source
        for label in (0, 1):
            assert len({p["kind"] for p in pairs if p["label"] == label}) == 2, source
    kinds = Counter(row["kind"] for row in rows)
    assert set(kinds) == SAME | DIFFERENT and min(kinds.values()) >= 0.1 * len(rows) / len(kinds)
    # The evaluation's loader reads the annotations: per-kind figures and source-record intervals.
    loaded = load_external_set(SETS[split])
    assert loaded["kinds"] == [row["kind"] for row in rows] and loaded["sources"] == [row["source_id"] for row in rows]


def test_natural_sources_are_val_and_test_questions_only(medquad_splits):
    """Every source question is a record of the named split, verbatim; none is in train (whose focus
    groups are disjoint from val and test), so no pair was written from a training question."""
    splits = {
        name: {r["id"]: r for r in read_jsonl(medquad_splits / f"{name}.jsonl")} for name in ("train", "val", "test")
    }
    for split, path in SETS.items():
        for row in read_jsonl(path):
            record = splits[split].get(row["source_id"])
            assert record is not None, f"{row['id']}: {row['source_id']} is not in the {split} split"
            assert row["question_1"] == record["query"] and row["focus"] == record["focus"], row["id"]
            assert row["source_id"] not in splits["train"]
    train_texts = {r["query"].casefold() for r in splits["train"].values()}
    for path in SETS.values():
        assert not any(row["question_2"].casefold() in train_texts for row in read_jsonl(path))
