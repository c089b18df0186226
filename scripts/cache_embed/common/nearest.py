"""Exact nearest-neighbour search by cosine with numpy: the reference the cache simulation and the
vector-database replay both use (rows L2-normalised, so the dot product is the cosine)."""

from __future__ import annotations

import numpy as np


def exact_nearest(
    queries: np.ndarray, entries: np.ndarray, limit: int = 1, excluded=None, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """The top-`limit` entries of each query: (entry rows, similarities), best first.

    `excluded`: per query, an array of entry rows it may not be matched to. A query with fewer
    allowed entries than `limit` gets row -1 and similarity -inf in the remaining columns. With
    limit 1 the lowest row wins a tie (argmax)."""
    queries = np.asarray(queries, dtype=np.float32)
    entries = np.asarray(entries, dtype=np.float32)
    limit = max(1, min(limit, len(entries)))
    ids = np.full((len(queries), limit), -1, dtype=np.int64)
    scores = np.full((len(queries), limit), -np.inf, dtype=np.float64)
    if not len(entries):
        return ids, scores
    for begin in range(0, len(queries), chunk):
        sims = (queries[begin : begin + chunk] @ entries.T).astype(np.float64)
        if excluded is not None:
            for offset, columns in enumerate(excluded[begin : begin + chunk]):
                if len(columns):
                    sims[offset, columns] = -np.inf
        if limit == 1:
            top = sims.argmax(axis=1)[:, None]
        else:
            top = np.argpartition(-sims, limit - 1, axis=1)[:, :limit]
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable"), 1)
        top_scores = np.take_along_axis(sims, top, axis=1)
        ids[begin : begin + chunk] = np.where(np.isfinite(top_scores), top, -1)
        scores[begin : begin + chunk] = top_scores
    return ids, scores
