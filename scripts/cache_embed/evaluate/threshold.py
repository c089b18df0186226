"""The one threshold rule, and how a test reading is worded.

Every place that picks a threshold under a wrong-share budget calls `deploy_index` (through
`choose_threshold` for a Sweep): the evaluation's deploy threshold, the training-time checkpoint
evaluator, the replay's descriptive threshold and the benchmarks.

The rule. Scan the thresholds from the highest down, each with the served answers above it.
- The scan starts where the bound can first be decided: the effective number of served answers
  reaches the count at which none wrong would keep the bound (log(1 - level) / log(1 - budget):
  59 for 5% at 95%). Above that, a 95% upper bound exceeds the budget whatever is served.
- It stops at the first threshold whose measured wrong share is over the budget: a passing
  threshold below a measured excess is never taken, as where the curve wanders across the budget
  a lower crossing is luck of the sample.
- The deploy threshold is the lowest threshold before the stop whose one-sided 95% upper bound is
  within the budget. When there is none, the answer is "none", never the top of a grid.
A threshold whose upper bound is over the budget but whose measured share is not does not stop
the scan: near the top, one wrong answer among the first hundred served keeps the bound over 5%
(docs/decisions.md, D17, measured a scan stopped that way at 0.989, serving 1% of repeats, on a
curve that kept the bound again from 161 served answers down to 0.887).

The bound is pointwise: at the chosen threshold, the one-sided 95% upper confidence bound on the
wrong share is within the budget. It is not a simultaneous bound over every threshold scanned, so
about one calibration in twenty chooses a threshold whose true wrong share is over the budget; a
simultaneous (Bonferroni or sup-t) bound over the scanned thresholds would be wider and cost
repeats served.

A test reading of the wrong share is worded from its 95% interval, never from the point alone:
"held" when the interval's upper end is within the budget, "consistent" when the interval contains
the budget, "missed" when its lower end is above it. A point estimate over the budget with the
budget inside the interval is expected in a share of valid calibrations and is not a miss.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

READINGS = ("held", "consistent", "missed")
RULE = (
    "scanning down from the highest threshold, from where the effective number of served answers can decide the"
    " bound, up to the first threshold whose measured wrong share of served answers exceeds max_wrong_share: the"
    " lowest threshold whose one-sided 95% upper confidence bound (Clopper-Pearson on the effective sample size,"
    " focus groups as the independent units) on that share is at most max_wrong_share; none when there is none."
    " The bound is pointwise, not simultaneous over the thresholds scanned"
)


def decidable_size(budget: float, level: float = 0.95) -> float:
    """The effective number of served answers from which a 95% upper bound can be within the budget
    (none of them wrong): 1 - (1 - level)^(1/n) <= budget."""
    return float(np.log(1.0 - level) / np.log(1.0 - budget))


def deploy_index(
    wrong_share: Sequence[float],
    upper: Sequence[float],
    n_effective: Sequence[float],
    budget: float,
    level: float = 0.95,
) -> int | None:
    """The rule (module doc) on per-threshold arrays, thresholds in descending order: the index of
    the deploy threshold, None when there is none."""
    wrong_share, upper = np.asarray(wrong_share, float), np.asarray(upper, float)
    decidable = np.flatnonzero(np.asarray(n_effective, float) >= decidable_size(budget, level) - 1e-9)
    if not decidable.size:
        return None
    start = int(decidable[0])
    over = np.flatnonzero(wrong_share[start:] > budget + 1e-12)
    stop = start + int(over[0]) if over.size else wrong_share.size
    passing = start + np.flatnonzero(upper[start:stop] <= budget + 1e-12)
    return int(passing[-1]) if passing.size else None


def choose_threshold(sweep, max_wrong_share: float) -> dict:
    """The deploy threshold of a Sweep under the budget (module doc). Returns {threshold (None when
    no threshold keeps the bound), bound_met, evaluated_at (the threshold or, when none keeps the
    bound, the one whose bound comes closest), and the sweep's figures at evaluated_at}."""
    if not sweep.thresholds.size:
        return {"threshold": None, "bound_met": False, "evaluated_at": None, "wrong_share_upper": None}
    k = deploy_index(sweep.wrong_share, sweep.wrong_share_upper, sweep.n_effective, max_wrong_share, sweep.level)
    met = k is not None
    if not met:
        best = sweep.wrong_share_upper.min()
        k = int(np.flatnonzero(sweep.wrong_share_upper <= best + 1e-12)[-1])
    at = float(sweep.thresholds[k])
    return {
        "threshold": at if met else None,
        "bound_met": met,
        "evaluated_at": at,
        **{key: value for key, value in sweep.at(at).items() if key != "threshold"},
    }


def reading(low: float | None, high: float | None, budget: float) -> str | None:
    """'held', 'consistent' or 'missed' from a 95% interval of a wrong share (module doc)."""
    if low is None or high is None:
        return None
    if high <= budget + 1e-12:
        return "held"
    if low > budget + 1e-12:
        return "missed"
    return "consistent"
