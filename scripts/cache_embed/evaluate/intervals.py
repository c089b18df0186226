"""Confidence intervals: exact (Clopper-Pearson) bounds on a proportion, their weighted form, and
bootstrap resampling over focus groups.

- clopper_pearson(k, n): the exact binomial interval from beta quantiles; one-sided bounds with
  side="upper" / "lower". k and n may be non-integer (effective counts, below).
- weighted_clopper_pearson(wrong, weights): a weighted share (for example the wrong share of a
  cache under a stated traffic mix, where a repeat and a novel question carry different weights)
  with the Korn-Graubard interval: Clopper-Pearson on the effective sample size
  n_eff = (sum w)^2 / sum w^2 and k_eff = share * n_eff (Korn and Graubard, Survey Methodology
  24(2), 1998). With equal weights it is exactly Clopper-Pearson on the counts.
- group_weights(groups, rng): one bootstrap resample over groups (each drawn group brings all of
  its items) as per-item multiplicities, so that a resample costs no copying.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import beta

__all__ = ["clopper_pearson", "group_index", "group_weights", "percentile_interval", "weighted_clopper_pearson"]


def clopper_pearson(k, n, level: float = 0.95, side: str = "two-sided") -> tuple[float, float]:
    """Exact interval for a binomial proportion k/n at confidence `level`.

    side: "two-sided" (alpha/2 in each tail), "upper" (one-sided upper bound; low is 0) or
    "lower" (one-sided lower bound; high is 1). n = 0 gives (0, 1)."""
    if side not in ("two-sided", "upper", "lower"):
        raise ValueError(f"side must be two-sided, upper or lower, not {side!r}")
    k, n = float(k), float(n)
    if n < 0 or k < 0 or k > n + 1e-9:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    k = min(k, n)
    alpha = 1.0 - level
    tail = alpha / 2 if side == "two-sided" else alpha
    low = 0.0 if side == "upper" or k <= 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if side == "lower" or k >= n else float(beta.ppf(1 - tail, k + 1, n - k))
    return low, high


def weighted_clopper_pearson(wrong, weights, level: float = 0.95, side: str = "two-sided") -> dict:
    """A weighted share of 0/1 outcomes with its Korn-Graubard (effective-size Clopper-Pearson) interval."""
    wrong = np.asarray(wrong, dtype=bool).ravel()
    weights = np.asarray(weights, dtype=np.float64).ravel()
    if wrong.shape != weights.shape:
        raise ValueError("outcomes and weights differ in length")
    keep = weights > 0
    wrong, weights = wrong[keep], weights[keep]
    total = float(weights.sum())
    if total <= 0:
        return {"share": None, "n_effective": 0.0, "k_effective": 0.0, "low": 0.0, "high": 1.0}
    share = float(weights[wrong].sum() / total)
    n_effective = total**2 / float(np.sum(weights**2))
    k_effective = share * n_effective
    low, high = clopper_pearson(k_effective, n_effective, level, side)
    return {"share": share, "n_effective": n_effective, "k_effective": k_effective, "low": low, "high": high}


def group_index(keys) -> tuple[np.ndarray, int]:
    """Consecutive integer ids (in first-seen order) for a sequence of group keys, and their count."""
    ids: dict = {}
    index = np.array([ids.setdefault(key, len(ids)) for key in keys], dtype=np.int64)
    return index, len(ids)


def group_weights(groups: np.ndarray, n_groups: int, rng: np.random.Generator) -> np.ndarray:
    """One bootstrap resample over groups: draw n_groups groups with replacement; each item gets
    the number of times its group was drawn."""
    counts = np.bincount(rng.integers(0, n_groups, size=n_groups), minlength=n_groups).astype(np.float64)
    return counts[groups]


def percentile_interval(samples, level: float = 0.95) -> tuple[float | None, float | None]:
    values = np.asarray([v for v in samples if v is not None and np.isfinite(v)], dtype=np.float64)
    if not values.size:
        return None, None
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha))
