"""A training sample whose question types are rebalanced: each qtype's share of the sample is
proportional to (its number of triplets) ** alpha, capped at the triplets it has.

alpha 1 keeps the file's shares (17% of MedQuAD's train triplets ask for `information`); alpha 0
gives every qtype the same count, where it has that many; values between flatten the distribution
as temperature sampling does. The quotas are exact (largest remainder), and the rows within each
qtype a seeded uniform choice, so a sample is reproducible from (rows, size, alpha, seed).
"""

from __future__ import annotations

import math
import random
from collections import Counter


def qtype_quotas(counts: dict[str, int], size: int, alpha: float) -> dict[str, int]:
    """{qtype: rows to take}, summing to min(size, total): shares proportional to count ** alpha;
    a qtype with fewer rows than its share gives all of them, and the rest is shared again."""
    if not 0 <= alpha <= 1:
        raise ValueError("alpha must be in [0, 1]")
    remaining = min(size, sum(counts.values()))
    quotas: dict[str, int] = {}
    active = {qtype for qtype, count in counts.items() if count > 0}
    while active:
        weights = {qtype: counts[qtype] ** alpha for qtype in active}
        total = sum(weights.values())
        full = {qtype for qtype in active if counts[qtype] <= remaining * weights[qtype] / total}
        if not full:
            break
        for qtype in full:
            quotas[qtype] = counts[qtype]
            remaining -= counts[qtype]
        active -= full
    if active:
        shares = {qtype: remaining * weights[qtype] / total for qtype in active}
        floors = {qtype: math.floor(share) for qtype, share in shares.items()}
        left = remaining - sum(floors.values())
        # Largest remainder first; ties by qtype name so the quotas do not depend on dict order.
        for qtype in sorted(active, key=lambda q: (floors[q] - shares[q], q))[:left]:
            floors[qtype] += 1
        quotas.update(floors)
    return {qtype: quotas.get(qtype, 0) for qtype in sorted(counts)}


def balanced_sample(qtypes: list[str], size: int, alpha: float, seed: int) -> list[int]:
    """Sorted row indices of a sample of `size` rows (all when there are fewer), `qtypes[i]` being
    row i's question type, drawn to qtype_quotas."""
    rows_of: dict[str, list[int]] = {}
    for row, qtype in enumerate(qtypes):
        rows_of.setdefault(qtype, []).append(row)
    quotas = qtype_quotas(Counter(qtypes), size, alpha)
    rng = random.Random(seed)
    chosen: list[int] = []
    for qtype in sorted(rows_of):
        chosen += rng.sample(rows_of[qtype], quotas[qtype])
    return sorted(chosen)
