"""The one threshold rule on hand-built curves, the reading of a test interval, and the cache sizes
the threshold is chosen for (padding order and size resolution)."""

from __future__ import annotations

import numpy as np
import pytest

from cache_embed.common.cli import PipelineError
from cache_embed.common.text import comparison_key
from cache_embed.evaluate import simulation
from cache_embed.evaluate.cache_sizes import find_size, padding_order, resolve_sizes
from cache_embed.evaluate.threshold import choose_threshold, first_passing_run, reading

P, F = True, False


@pytest.mark.parametrize(
    ("passes", "expected"),
    [
        # Thresholds from the highest down: failing for want of evidence, then a run, then a failure:
        # the run's lowest threshold, never the passing one below the failure.
        ([F, F, P, P, P, F, P, P], 4),
        ([P, F, P, P], 0),
        ([F, F, F, F], None),  # none passes: none, not the top of the grid
        ([], None),
        ([P, P, P, P], 3),  # all pass: the lowest
        ([F, F, P], 2),
    ],
)
def test_first_passing_run_on_hand_built_curves(passes, expected):
    assert first_passing_run(passes) == expected


def _lookups(repeat_scores, repeat_correct, novel_scores):
    repeat_correct = np.asarray(repeat_correct, bool)
    return simulation.Lookups(
        np.asarray(repeat_scores, float), repeat_correct, repeat_correct.copy(), np.asarray(novel_scores, float)
    )


def test_choose_threshold_stops_at_the_first_failure_of_a_non_monotone_curve():
    """2,000 correct repeats from 0.999 down to 0.30; 40 novel questions at 0.80 (a burst of wrong
    answers that breaks the bound), the rest far below. Further down, more correct repeats dilute
    the burst until the bound passes again: a rule taking the lowest passing threshold would go
    there; the one rule stops above the burst."""
    repeat_scores = np.linspace(0.999, 0.30, 2000)
    novel_scores = np.concatenate((np.full(40, 0.80), np.full(1960, 0.1)))
    sweep = simulation.Sweep(_lookups(repeat_scores, np.ones(2000, bool), novel_scores), repeat_share=0.5)
    budget = 0.06
    passes = sweep.wrong_share_upper <= budget
    first = int(np.flatnonzero(passes)[0])
    failure = first + int(np.flatnonzero(~passes[first:])[0])
    later_pass = failure + int(np.flatnonzero(passes[failure:])[0])  # the curve passes again lower down
    assert sweep.thresholds[later_pass] < 0.8 < sweep.thresholds[failure - 1]
    choice = choose_threshold(sweep, budget)
    assert choice["bound_met"] and choice["threshold"] == sweep.thresholds[failure - 1]
    assert choice["threshold"] > 0.80
    assert all(sweep.at(t)["wrong_share_upper"] <= budget for t in sweep.thresholds[first:failure])


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
