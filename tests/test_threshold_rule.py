"""The one threshold rule on hand-built curves, the reading of a test interval, and the cache sizes
the threshold is chosen for (padding order and size resolution)."""

from __future__ import annotations

import numpy as np
import pytest

from cache_embed.common.cli import PipelineError
from cache_embed.common.text import comparison_key
from cache_embed.evaluate import simulation
from cache_embed.evaluate.cache_sizes import find_size, padding_order, resolve_sizes
from cache_embed.evaluate.threshold import choose_threshold, decidable_size, deploy_index, reading

N = [10, 70, 80, 90, 100, 110, 120, 130]  # effective served answers above each threshold: 59 decide a 5% bound


@pytest.mark.parametrize(
    ("wrong", "upper", "expected"),
    [
        # Thresholds from the highest down. Undecidable at the top (10 served), then passing, then a
        # measured excess at index 5: the lowest passing threshold above it, never the passing one below.
        ([0.0, 0.0, 0.01, 0.02, 0.03, 0.06, 0.04, 0.03], [0.3, 0.04, 0.045, 0.048, 0.049, 0.09, 0.049, 0.045], 4),
        # Over the budget in the bound only (one wrong answer early): the scan goes on.
        ([0.0, 0.014, 0.012, 0.011, 0.01, 0.009, 0.008, 0.008], [0.3, 0.07, 0.06, 0.055, 0.049, 0.045, 0.04, 0.04], 7),
        # A measured excess right where the bound becomes decidable: none, not the top of the grid.
        ([0.0, 0.07, 0.02, 0.01, 0.0, 0.0, 0.0, 0.0], [0.3, 0.15, 0.04, 0.03, 0.02, 0.02, 0.02, 0.02], None),
        # No threshold keeps the bound: none.
        ([0.04] * 8, [0.3, 0.09, 0.08, 0.07, 0.07, 0.06, 0.06, 0.06], None),
        # Every decidable threshold passes: the lowest.
        ([0.0] * 8, [0.3, 0.04, 0.03, 0.03, 0.02, 0.02, 0.02, 0.02], 7),
    ],
)
def test_deploy_index_on_hand_built_curves(wrong, upper, expected):
    assert deploy_index(wrong, upper, N, 0.05) == expected


def test_decidable_size_is_where_zero_wrong_meets_the_bound():
    from cache_embed.evaluate.intervals import clopper_pearson

    size = decidable_size(0.05)
    assert 58 < size < 59
    assert clopper_pearson(0, 59, 0.95, "upper")[1] <= 0.05 < clopper_pearson(0, 58, 0.95, "upper")[1]
    assert deploy_index([0.0] * 3, [0.049] * 3, [10, 20, 58], 0.05) is None  # nothing decidable


def _lookups(repeat_scores, repeat_correct, novel_scores):
    repeat_correct = np.asarray(repeat_correct, bool)
    return simulation.Lookups(
        np.asarray(repeat_scores, float), repeat_correct, repeat_correct.copy(), np.asarray(novel_scores, float)
    )


def test_choose_threshold_stops_at_a_measured_excess_of_a_non_monotone_curve():
    """2,000 correct repeats from 0.999 down to 0.30; 40 novel questions at 0.80 (a burst whose
    measured wrong share is over the budget), the rest far below. Further down, more correct repeats
    dilute the burst until the bound passes again: a rule taking the lowest passing threshold would
    go there; the one rule stops above the burst."""
    repeat_scores = np.linspace(0.999, 0.30, 2000)
    novel_scores = np.concatenate((np.full(40, 0.80), np.full(1960, 0.1)))
    sweep = simulation.Sweep(_lookups(repeat_scores, np.ones(2000, bool), novel_scores), repeat_share=0.5)
    budget = 0.06
    burst = int(np.flatnonzero(sweep.thresholds <= 0.80)[0])
    assert sweep.wrong_share[burst] > budget  # measured over the budget at the burst
    later_pass = burst + int(np.flatnonzero(sweep.wrong_share_upper[burst:] <= budget)[0])
    assert sweep.thresholds[later_pass] < 0.8  # the curve keeps the bound again lower down
    choice = choose_threshold(sweep, budget)
    assert choice["bound_met"] and choice["threshold"] == sweep.thresholds[burst - 1] > 0.80


def test_one_early_wrong_answer_does_not_end_the_scan():
    """The first 100 answers served hold one wrong one (its upper bound over 5% for a while); the
    measured share stays far under the budget, so the scan goes on to where the bound holds lowest."""
    repeat_scores = np.linspace(0.999, 0.5, 2000)
    correct = np.ones(2000, bool)
    correct[60] = False
    sweep = simulation.Sweep(_lookups(repeat_scores, correct, np.full(2000, -0.5)), repeat_share=0.5)
    after_it = (sweep.thresholds < repeat_scores[60]) & (sweep.thresholds > 0.9)
    assert np.any(sweep.wrong_share_upper[after_it] > 0.05)  # the bound fails for a while after it
    choice = choose_threshold(sweep, 0.05)
    assert choice["bound_met"] and choice["threshold"] == pytest.approx(0.5)


def test_choose_threshold_none_passing_and_all_passing():
    # Every served answer wrong: no threshold keeps any budget under 1.
    never = simulation.Sweep(_lookups([0.9, 0.8], [False, False], [0.95, 0.85]), repeat_share=0.5)
    choice = choose_threshold(never, 0.05)
    assert choice["threshold"] is None and not choice["bound_met"] and choice["evaluated_at"] is not None
    # 2,000 correct repeats and no novel question ever served: from the first passing threshold down,
    # every one passes, and the lowest is taken.
    always = simulation.Sweep(
        _lookups(np.linspace(0.99, 0.5, 2000), np.ones(2000, bool), np.full(2000, -0.5)), repeat_share=0.5
    )
    choice = choose_threshold(always, 0.05)
    assert choice["bound_met"] and choice["threshold"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(0.030, 0.049, "held"), (0.040, 0.068, "consistent"), (0.051, 0.083, "missed"), (0.01, 0.05, "held")],
)
def test_reading_of_a_test_interval(low, high, expected):
    assert reading(low, high, 0.05) == expected


def test_padding_order_is_seeded_distinct_nested_and_skips_excluded_texts():
    records = [{"id": f"r{i}", "query": f"Question {i // 2}?"} for i in range(40)]  # two records per text
    order = padding_order(records, seed=7, exclude_keys={comparison_key("Question 3?")})
    keys = [comparison_key(r["query"]) for r in order]
    assert len(keys) == len(set(keys)) == 19 and comparison_key("Question 3?") not in keys
    assert order == padding_order(list(reversed(records)), seed=7, exclude_keys={comparison_key("Question 3?")})
    assert order != padding_order(records, seed=8, exclude_keys={comparison_key("Question 3?")})


def test_sizes_resolve_words_and_numbers_and_name_the_bounds():
    sizes = resolve_sizes(
        ["test_cache", "largest", "5000", "4341"],
        test_entries=4341,
        test_padding=39_000,
        calibration_entries=2100,
        calibration_padding=34_700,
    )
    assert [(s.entries, s.names) for s in sizes] == [
        (4341, ("test_cache", "4341")),
        (5000, ("5000",)),
        (36_800, ("largest",)),
    ]
    assert sizes[0].label == "4,341 (test cache)" and sizes[-1].label == "36,800 (largest)"
    with pytest.raises(PipelineError, match=r"at most 36,800 .* calibration cache to 36,800"):
        resolve_sizes(
            ["40000"], test_entries=4341, test_padding=39_000, calibration_entries=2100, calibration_padding=34_700
        )
    with pytest.raises(PipelineError, match=r"at least 4,341"):
        resolve_sizes(
            ["1000"], test_entries=4341, test_padding=39_000, calibration_entries=2100, calibration_padding=34_700
        )
    with pytest.raises(PipelineError, match=r"given twice"):
        resolve_sizes(
            ["largest", "largest"], test_entries=1, test_padding=1, calibration_entries=1, calibration_padding=1
        )
    blocks = [{"cache_size": s.entries, "names": list(s.names), "label": s.label} for s in sizes]
    assert find_size(blocks, "largest")["cache_size"] == 36_800 and find_size(blocks, 4341)["cache_size"] == 4341
    with pytest.raises(PipelineError, match=r"cache size 9999 was not evaluated"):
        find_size(blocks, 9999)
