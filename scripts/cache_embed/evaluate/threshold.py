"""The one threshold rule, and how a test reading is worded.

Every place that picks a threshold under a wrong-share budget calls `first_passing_run` (through
`choose_threshold` for a Sweep): the deploy threshold of the evaluation, the training-time
checkpoint evaluator, the replay's descriptive threshold and the benchmarks.

The rule. Scan the thresholds from the highest down. Near the top, few answers are served and the
bound fails for want of evidence (with n served answers and none wrong, the 95% upper bound is
1 - 0.05^(1/n): 59 are needed before it reaches 5%). The first threshold whose bound is within the
budget starts the run; the scan goes on down while every threshold keeps the bound, and the deploy
threshold is the last one before the first that does not. A passing threshold below a failing one
is never taken: where the curve wanders across the budget, a lower crossing is luck of the sample.
When no threshold keeps the bound, the answer is "none", never the top of a grid.

The bound is pointwise: at the chosen threshold, the one-sided 95% upper confidence bound on the
wrong share is within the budget. It is not a simultaneous bound over every threshold scanned, so
about one calibration in twenty chooses a threshold whose true wrong share is over the budget; a
simultaneous (Bonferroni or sup-t) bound over the scanned thresholds would be wider and cost
repeats served. What the rule buys instead is that the threshold is not picked below a failure.

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
    "the lowest threshold of the first run of thresholds, scanning down from the highest, whose one-sided"
    " 95% upper confidence bound (Clopper-Pearson on the effective sample size, focus groups as the"
    " independent units) on the wrong share of served answers is at most max_wrong_share; none when no"
    " threshold keeps the bound. The bound is pointwise, not simultaneous over the thresholds scanned"
)


def first_passing_run(passes: Sequence[bool]) -> int | None:
    """Given whether each threshold keeps the bound, thresholds in descending order, the index of the
    lowest threshold of the first run of passing thresholds; None when none passes."""
    passes = np.asarray(passes, dtype=bool)
    passing = np.flatnonzero(passes)
    if not passing.size:
        return None
    start = int(passing[0])
    failing_after = np.flatnonzero(~passes[start:])
    return start + int(failing_after[0]) - 1 if failing_after.size else int(passes.size - 1)


def choose_threshold(sweep, max_wrong_share: float) -> dict:
    """The deploy threshold of a Sweep under the budget (module doc). Returns {threshold (None when
    no threshold keeps the bound), bound_met, evaluated_at (the threshold or, when none keeps the
    bound, the one whose bound comes closest), and the sweep's figures at evaluated_at}."""
    if not sweep.thresholds.size:
        return {"threshold": None, "bound_met": False, "evaluated_at": None, "wrong_share_upper": None}
    k = first_passing_run(sweep.wrong_share_upper <= max_wrong_share + 1e-12)
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
