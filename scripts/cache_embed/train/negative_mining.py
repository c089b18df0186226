"""Hard negatives mined from the cache's own neighbourhood, never the same question.

For each training triplet's anchor (a cached question), sentence-transformers' `mine_hard_negatives`
ranks the questions of the train split (the cache training sees) by the frozen base model, within
its rank range and margin options; only real questions of the split are taken (the library also
ranks the triplets' generated positives). Candidates that ask the same question as the anchor
(`cache_embed.data.equivalence`, the evaluation's definition) are dropped, counted, and the next
candidate is taken, so a paraphrase-like neighbour is never pushed away. Each triplet then carries
its structure negative plus `count` mined ones (columns negative_2 ... negative_{count+1}).

A candidate text can stand for several records (the same text asked in several documents, or a
generated paraphrase of an anchor): it is dropped when any of them is equivalent to the anchor.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

from cache_embed.common.cli import PipelineError
from cache_embed.common.text import comparison_key
from cache_embed.data.equivalence import EquivalenceIndex

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class MiningSettings:
    count: int  # mined negatives per triplet
    range_min: int  # skip the base model's range_min nearest candidates
    range_max: int  # consider candidates up to this rank
    absolute_margin: float | None  # a candidate must score this much below the anchor's positive (None: no check)
    batch_size: int = 64
    cache_folder: str | None = None  # mine_hard_negatives' embedding cache

    def check(self) -> None:
        if self.count < 1:
            raise ValueError("mined negatives: count must be >= 1")
        if self.range_min < 0 or self.range_max <= self.range_min:
            raise ValueError("mined negatives: need 0 <= range_min < range_max")
        if self.range_max - self.range_min < self.count:
            raise ValueError("mined negatives: range_max - range_min must be >= count")


def negative_columns(count: int) -> list[str]:
    """The triplet's own negative, then the mined ones."""
    return ["negative"] + [f"negative_{index}" for index in range(2, count + 2)]


def text_owners(records: list[dict], rows: list[dict]) -> dict[str, set[str]]:
    """Comparison key of every text that can be a candidate -> the query ids it stands for."""
    owners: dict[str, set[str]] = defaultdict(set)
    for record in records:
        owners[comparison_key(record["query"])].add(record["id"])
    for row in rows:
        query_id = row.get("query_id")
        if query_id:
            owners[comparison_key(row["anchor"])].add(query_id)
            owners[comparison_key(row["positive"])].add(query_id)
        if row.get("negative_query_id"):
            owners[comparison_key(row["negative"])].add(row["negative_query_id"])
    return owners


def ranked_candidates(rows: list[dict], corpus: list[str], model, settings: MiningSettings) -> dict[str, list[str]]:
    """Anchor text -> candidate texts in the base model's order (best first), within the range and
    margin options, the anchor's positives excluded (mine_hard_negatives' own rules)."""
    from datasets import Dataset

    dataset = Dataset.from_dict({"anchor": [r["anchor"] for r in rows], "positive": [r["positive"] for r in rows]})
    LOG.info(
        "mining: ranking %d cached questions for %d anchors by the base model (progress below)",
        len(corpus),
        len(set(dataset["anchor"])),
    )
    mined = _mine(dataset, model, corpus, settings)
    # labeled-pair: per anchor its positives, then its negatives; scores order them.
    scored: dict[str, list[tuple[float, str]]] = defaultdict(list)
    positives = {(r["anchor"], r["positive"]) for r in rows}
    for anchor, text, score in zip(mined["anchor"], mined["positive"], mined["score"], strict=True):
        if (anchor, text) not in positives:
            scored[anchor].append((score, text))
    return {anchor: [text for _, text in sorted(pairs, key=lambda p: -p[0])] for anchor, pairs in scored.items()}


def _mine(dataset, model, corpus: list[str], settings: MiningSettings):
    from sentence_transformers.util import mine_hard_negatives

    return mine_hard_negatives(
        dataset,
        model,
        anchor_column_name="anchor",
        positive_column_name="positive",
        corpus=corpus,
        range_min=settings.range_min,
        range_max=settings.range_max,
        absolute_margin=settings.absolute_margin,
        num_negatives=settings.range_max - settings.range_min,
        sampling_strategy="top",
        output_format="labeled-pair",
        output_scores=True,
        batch_size=settings.batch_size,
        cache_folder=settings.cache_folder,
        verbose=False,
    )


def add_mined_negatives(
    rows: list[dict],
    records: list[dict],
    model,
    settings: MiningSettings,
    mode: str,
    max_drop_fraction: float,
) -> tuple[list[dict], dict]:
    """The rows with `settings.count` mined negatives each (negative_2 ...), and the mining stats.

    Rows whose anchor gets fewer usable candidates are dropped and counted; more than
    max_drop_fraction of them fails the run."""
    settings.check()
    index = EquivalenceIndex(records, mode)
    missing = sorted({r.get("query_id") for r in rows if r.get("query_id") not in index})
    if missing:
        raise PipelineError(
            f"{len(missing)} training anchors are not among the train split's query records "
            f"(first: {missing[0]!r}); mine from the split the triplets were generated from"
        )
    owners = text_owners(records, rows)
    cached = {comparison_key(record["query"]) for record in records}
    corpus = list(dict.fromkeys(record["query"] for record in records))
    candidates = ranked_candidates(rows, corpus, model, settings)

    kept, dropped_rows = [], 0
    stats = {"candidates_seen": 0, "same_question_skipped": 0, "own_text_skipped": 0, "not_cached_skipped": 0}
    for row in rows:
        anchor_id = row["query_id"]
        same = index.equivalents(anchor_id)
        taken, seen_keys = [], {comparison_key(row[c]) for c in ("anchor", "positive", "negative")}
        for text in candidates.get(row["anchor"], []):
            stats["candidates_seen"] += 1
            key = comparison_key(text)
            if key in seen_keys:
                stats["own_text_skipped"] += 1
                continue
            if key not in cached:  # a generated paraphrase that mine_hard_negatives adds to the corpus
                stats["not_cached_skipped"] += 1
                continue
            if owners.get(key, set()) & same:
                stats["same_question_skipped"] += 1
                continue
            taken.append(text)
            seen_keys.add(key)
            if len(taken) == settings.count:
                break
        if len(taken) < settings.count:
            dropped_rows += 1
            continue
        kept.append({**row, **dict(zip(negative_columns(settings.count)[1:], taken, strict=True))})
    stats.update(rows=len(rows), rows_kept=len(kept), rows_without_enough_candidates=dropped_rows)
    if dropped_rows > max_drop_fraction * len(rows):
        raise PipelineError(
            f"mined negatives: {dropped_rows} of {len(rows)} triplets found fewer than {settings.count} usable "
            f"candidates in ranks {settings.range_min}-{settings.range_max}, more than the allowed fraction "
            f"{max_drop_fraction} ({stats}); widen the range, lower the margin or mine fewer negatives"
        )
    LOG.info("mined negatives: %s", stats)
    return kept, stats
