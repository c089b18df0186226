"""One shard of one split: which queries it holds, and the candidates a backend proposes for them.

A query belongs to shard K of N when int(sha256(id), 16) % N == K, so shards are stable whatever
the split's order; a seeded, order-independent subset caps the queries per split.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

from cache_embed.common.cli import PipelineError
from cache_embed.common.files import read_jsonl
from cache_embed.generate.triplet_quality import Candidate


def shard_of(query_id: str, shards: int) -> int:
    return int(hashlib.sha256(query_id.encode("utf-8")).hexdigest(), 16) % shards


def subset(records: list[dict], max_queries: int, seed: int) -> list[dict]:
    """A seeded, order-independent subset of `max_queries` records (all when 0), in input order."""
    if not max_queries or max_queries >= len(records):
        return records
    ranked = sorted(records, key=lambda r: hashlib.sha256(f"{seed}:{r['id']}".encode()).hexdigest())
    keep = {r["id"] for r in ranked[:max_queries]}
    return [r for r in records if r["id"] in keep]


def read_split(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: split file not found; run the split_queries step first")
    records, seen = [], set()
    for line, record in enumerate(read_jsonl(path), start=1):
        if not isinstance(record.get("id"), str) or not isinstance(record.get("query"), str):
            raise PipelineError(f"{path}: record {line} lacks a string `id` or `query`; regenerate the split")
        if record["id"] in seen:
            raise PipelineError(f"{path}: record {line} repeats id {record['id']!r}; regenerate the split")
        seen.add(record["id"])
        records.append(record)
    return records


def candidates_per_batch(
    backend, name: str, batch: list[dict], paraphrases: int, negatives: int, failures: Counter, attempts: Counter
):
    """(positives, negatives) candidate lists for each query of the batch, in order."""
    if name == "structure":
        return [backend.candidates(record, paraphrases, negatives) for record in batch]
    results = backend.generate(batch, paraphrases, negatives)
    if len(results) != len(batch):
        raise PipelineError(f"backend {name} answered {len(results)} results for {len(batch)} queries")
    out = []
    for record, result in zip(batch, results, strict=False):
        if result.query_id != record["id"]:
            raise PipelineError(f"backend {name} answered query {result.query_id!r} in place of {record['id']!r}")
        attempts["attempts"] += int(result.attempts or 0)
        if result.failure:
            failures[result.failure] += 1
        out.append(
            (
                [Candidate(text, "llm_paraphrase") for text in result.paraphrases or []],
                [Candidate(text, "llm_hard_negative") for text in result.negatives or []],
            )
        )
    return out
