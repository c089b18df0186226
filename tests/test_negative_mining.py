"""Mined hard negatives (cache_embed.train.negative_mining) on real MedQuAD questions with the real L6
model: near neighbours among the cached questions by the base model, never the same question.
Training on them: tests/test_train.py."""

from __future__ import annotations

import numpy as np
import pytest

from cache_embed.common.cli import PipelineError
from cache_embed.common.text import comparison_key
from cache_embed.data.equivalence import records_equivalent
from cache_embed.train.negative_mining import MiningSettings, add_mined_negatives, negative_columns
from conftest import read_records, small_cache, structure_triplets

RANGE_MAX = 10


@pytest.fixture(scope="module")
def mining_case(medquad_splits) -> dict:
    """40 structure triplets, and a small cache: their anchors' focus neighbours, 600 other train
    questions, and for one anchor a reworded copy that asks the same question (same qtype and CUIs,
    another id and text), which the base model puts next to it."""
    records = read_records(medquad_splits / "train.jsonl")
    rows = structure_triplets(medquad_splits / "train.jsonl", 40, seed=5)
    chosen = small_cache(records, rows, 600, seed=3)
    twin_of = next(r for r in records if r["id"] == rows[0]["query_id"])
    twin = {**twin_of, "id": "twin-of-first-anchor", "query": twin_of["query"].rstrip(" ?") + ", please?"}
    assert comparison_key(twin["query"]) != comparison_key(twin_of["query"])
    assert records_equivalent(twin, twin_of, "medquad")
    return {"rows": rows, "records": chosen + [twin], "twin": twin}


@pytest.fixture(scope="module")
def base_model(l6_model_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(l6_model_path, device="cpu")


def test_mined_negatives_are_cached_neighbours_never_the_same_question(mining_case, base_model):
    rows, records, twin = mining_case["rows"], mining_case["records"], mining_case["twin"]
    settings = MiningSettings(count=3, range_min=0, range_max=RANGE_MAX, absolute_margin=None)
    mined, stats = add_mined_negatives(rows, records, base_model, settings, "medquad", 0.0)
    assert len(mined) == len(rows) == stats["rows_kept"]
    assert stats["same_question_skipped"] >= 1  # at least the twin

    # Independently: the base model's nearest cached questions of each anchor, by brute force.
    texts = list(dict.fromkeys(r["query"] for r in records))
    by_text = {}
    for record in records:
        by_text.setdefault(comparison_key(record["query"]), []).append(record)
    vectors = base_model.encode(texts, normalize_embeddings=True, show_progress_bar=False)
    anchor_vectors = base_model.encode([r["anchor"] for r in rows], normalize_embeddings=True, show_progress_bar=False)
    records_by_id = {r["id"]: r for r in records}
    for row, anchor_vector in zip(mined, anchor_vectors, strict=True):
        order = np.argsort(-(vectors @ anchor_vector))
        # The anchor itself and its positive rank among the candidates, so allow two more ranks.
        nearest = {comparison_key(texts[i]) for i in order[: RANGE_MAX + 2]}
        anchor_record = records_by_id[row["query_id"]]
        extra = [row[column] for column in negative_columns(3)[1:]]
        assert len({comparison_key(t) for t in extra}) == 3
        for text in extra:
            key = comparison_key(text)
            assert key in nearest, (row["anchor"], text)
            assert key not in {comparison_key(row[c]) for c in ("anchor", "positive", "negative")}
            assert not any(records_equivalent(anchor_record, other, "medquad") for other in by_text[key])
    first = next(row for row in mined if row["query_id"] == rows[0]["query_id"])
    assert twin["query"] not in {first[c] for c in negative_columns(3)}


def test_anchors_without_enough_candidates_are_counted_and_bounded(mining_case, base_model):
    """A margin of 0.3 below the positive leaves most anchors with too few candidates in range."""
    settings = MiningSettings(count=3, range_min=0, range_max=RANGE_MAX, absolute_margin=0.3)
    rows, records = mining_case["rows"], mining_case["records"]
    mined, stats = add_mined_negatives(rows, records, base_model, settings, "medquad", 1.0)
    assert stats["rows_without_enough_candidates"] > 0
    assert len(mined) == len(rows) - stats["rows_without_enough_candidates"]
    with pytest.raises(PipelineError, match="fewer than 3 usable candidates"):
        add_mined_negatives(rows, records, base_model, settings, "medquad", 0.0)
    stranger = {**rows[0], "query_id": "not-in-the-split"}
    with pytest.raises(PipelineError, match="not among the train split"):
        add_mined_negatives([stranger], records, base_model, settings, "medquad", 1.0)
