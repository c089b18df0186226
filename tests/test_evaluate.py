"""Cache metrics against hand-computed values and scikit-learn; evaluate_adapter end to end on
real MedQuAD test questions with the real L6 model and a small LoRA adapter; external pair files."""

from __future__ import annotations

import json

import evaluate_adapter
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from cache_embed.common.cli import PipelineError
from cache_embed.common.files import read_jsonl
from cache_embed.evaluate import pair_metrics as cm
from cache_embed.evaluate.inputs import load_external_pairs
from cache_embed.evaluate.threshold import choose_threshold
from conftest import DATA, build_triplets, step_argv

# Four pairs: hits score 0.9 and 0.7, misses 0.8 and 0.6.
SCORES = [0.9, 0.8, 0.7, 0.6]
LABELS = [1, 0, 1, 0]


# ------------------------------------------------------------------ cache_metrics, by hand


def test_roc_auc_by_hand_and_with_ties():
    # 0.9 beats both misses, 0.7 beats only 0.6: 3 of 4 comparisons.
    assert cm.roc_auc(SCORES, LABELS) == pytest.approx(0.75)
    assert cm.roc_auc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)
    assert cm.roc_auc([0.5, 0.5, 0.9], [1, 0, 1]) == pytest.approx(0.75)
    assert cm.roc_auc([0.1, 0.2], [1, 1]) is None


def test_average_precision_by_hand():
    # 0.9: P=1, R=1/2; 0.8: miss; 0.7: P=2/3, R=1 -> 1/2 * 1 + 1/2 * 2/3.
    assert cm.average_precision(SCORES, LABELS) == pytest.approx(0.5 + 1 / 3)
    assert cm.average_precision([0.3, 0.2], [0, 0]) is None


def test_roc_and_pr_match_sklearn_with_ties():
    rng = np.random.default_rng(3)
    for _ in range(20):
        scores = np.round(rng.random(200), 1)  # many ties
        labels = rng.integers(0, 2, 200)
        assert cm.roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        assert cm.average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


def test_at_threshold_counts_and_f1():
    figures = cm.at_threshold(SCORES, LABELS, 0.7)
    assert (figures["tp"], figures["fp"], figures["fn"]) == (2, 1, 0)
    assert figures["precision"] == pytest.approx(2 / 3)
    assert figures["recall"] == 1.0
    assert figures["f1"] == pytest.approx(0.8)
    nothing = cm.at_threshold(SCORES, LABELS, 0.95)
    assert (nothing["precision"], nothing["recall"], nothing["f1"]) == (1.0, 0.0, 0.0)


def test_threshold_for_precision_is_the_lowest_reaching_threshold():
    assert cm.threshold_for_precision(SCORES, LABELS, 1.0) == {"threshold": 0.9, "recall": 0.5, "precision": 1.0}
    found = cm.threshold_for_precision(SCORES, LABELS, 0.6)
    assert found["threshold"] == 0.7 and found["recall"] == 1.0
    # Precision is not monotonic: at 0.6 it is 1/2, at 0.7 it is 2/3; 0.6 is the lowest for p=0.5.
    assert cm.threshold_for_precision(SCORES, LABELS, 0.5)["threshold"] == 0.6
    # The top pair is a miss and the next a hit: precision 1/2 at best, so 0.99 is unreachable.
    assert cm.threshold_for_precision([0.9, 0.8], [0, 1], 0.99) is None


def test_best_f1_by_hand():
    # F1 at 0.9: 2/3; 0.8: 1/2; 0.7: 0.8; 0.6: 2/3.
    best = cm.best_f1(SCORES, LABELS)
    assert best["threshold"] == 0.7 and best["f1"] == pytest.approx(0.8)


def test_margin_figures_and_triplet_accuracy():
    figures = cm.margin_figures([0.9, 0.5, 0.7], [0.8, 0.6, 0.7])
    assert figures["mean_pos"] == pytest.approx(0.7)
    assert figures["mean_neg"] == pytest.approx(0.7)
    assert figures["margin"] == pytest.approx(0.0)
    assert figures["triplet_accuracy"] == pytest.approx(1 / 3)  # a tie is not "closer"


def test_threshold_keys():
    assert [cm.threshold_key(v) for v in (0.8, 0.85, 0.9, 0.95, 0.995, 1.0)] == [
        "0.80",
        "0.85",
        "0.90",
        "0.95",
        "0.995",
        "1.00",
    ]


def test_pair_figures_shape():
    figures = cm.pair_figures(SCORES, LABELS, [0.8, 0.85], [0.95, 0.5])
    assert set(figures["at_threshold"]) == {"0.80", "0.85"}
    assert figures["at_precision"]["0.95"]["threshold"] == 0.9
    assert figures["at_precision"]["0.50"]["threshold"] == 0.6
    assert figures["margin"] == pytest.approx(0.1)


def test_bootstrap_is_seeded_and_weighted_resamples_equal_physical_ones():
    rng = np.random.default_rng(0)
    base_pos, base_neg = rng.normal(0.7, 0.1, 300), rng.normal(0.55, 0.1, 300)
    better_pos = base_pos + 0.08
    first = cm.bootstrap_deltas(base_pos, base_neg, better_pos, base_neg, [0.9], resamples=200, seed=5)
    again = cm.bootstrap_deltas(base_pos, base_neg, better_pos, base_neg, [0.9], resamples=200, seed=5)
    assert first == again
    assert first["roc_auc"]["low"] > 0 and first["margin"]["delta"] == pytest.approx(0.08)
    assert first["roc_auc"]["low"] <= first["roc_auc"]["delta"] <= first["roc_auc"]["high"]
    same = cm.bootstrap_deltas(base_pos, base_neg, base_pos, base_neg, [0.9], resamples=50, seed=5)
    assert all(entry["low"] == entry["high"] == 0 for entry in same.values())
    assert cm.bootstrap_deltas(base_pos, base_neg, base_pos, base_neg, [0.9], resamples=0) == {}

    # One resample by weights equals the same resample done physically.
    indices = rng.integers(0, 300, 300)
    weights = np.bincount(indices, minlength=300).astype(float)
    scores = np.concatenate((base_pos, base_neg))
    labels = np.concatenate((np.ones(300, bool), np.zeros(300, bool)))
    weighted = cm._resample_figures(
        scores,
        labels,
        np.concatenate((weights, weights)),
        np.argsort(-scores, kind="mergesort"),
        weights,
        base_pos,
        base_neg,
        [0.9],
    )
    pos, neg = base_pos[indices], base_neg[indices]
    physical_scores = np.concatenate((pos, neg))
    physical_labels = np.concatenate((np.ones(300), np.zeros(300)))
    assert weighted["roc_auc"] == pytest.approx(cm.roc_auc(physical_scores, physical_labels), abs=1e-12)
    assert weighted["pr_auc"] == pytest.approx(cm.average_precision(physical_scores, physical_labels), abs=1e-12)
    assert weighted["triplet_accuracy"] == pytest.approx(np.mean(pos > neg))
    physical = cm.threshold_for_precision(physical_scores, physical_labels, 0.9)
    assert weighted["recall_at_precision_0.90"] == pytest.approx(physical["recall"] if physical else 0.0)


def _unit(*vector):
    vector = np.asarray(vector, dtype=np.float32)
    return vector / np.linalg.norm(vector)


# ------------------------------------------------------------------ equivalence


def _record(rid, qtype, focus, cuis=(), synonyms=(), query=None, occurrences=None):
    return {
        "id": rid,
        "qtype": qtype,
        "focus": focus,
        "cuis": list(cuis),
        "synonyms": list(synonyms),
        "query": query or f"{qtype} of {focus} ({rid})?",
        "occurrences": occurrences if occurrences is not None else [{"qtype": qtype, "focus": focus}],
    }


PLANTED_RECORDS = [
    _record("a", "symptoms", "Gouty arthritis", cuis=["C1"]),
    _record("b", "symptoms", "gouty  arthritis", cuis=[]),  # same focus text
    _record("c", "symptoms", "Podagra", cuis=["C1"]),  # shared CUI
    _record("d", "symptoms", "Lucey syndrome", synonyms=["Gouty arthritis"]),  # a's focus among d's synonyms
    _record("e", "treatment", "Gouty arthritis", cuis=["C1"]),  # other qtype: not the same question
    _record("f", "symptoms", "Asthma", cuis=["C2"]),  # other focus
    _record(
        "g",
        "causes",
        "Merged",
        occurrences=[{"qtype": "causes", "focus": "Merged"}, {"qtype": "symptoms", "focus": "Asthma"}],
    ),  # occurrence qtype + focus
]


def test_equivalence_medquad_links_are_direct_and_need_the_same_qtype():
    from cache_embed.data.equivalence import EquivalenceIndex, records_equivalent

    index = EquivalenceIndex(PLANTED_RECORDS, mode="medquad")
    assert index.equivalents("a") == {"a", "b", "c", "d"} and index.equivalents("b") == {"a", "b", "d"}
    assert index.equivalents("f") == {"f", "g"}
    assert index.equivalents("e") == {"e"}
    assert not index.equivalent("a", "e") and index.equivalent("d", "a") and index.equivalent("a", "a")
    # c and d are both linked to a, not to each other: equivalence does not chain like focus groups.
    assert not index.equivalent("c", "d")
    by_id = {r["id"]: r for r in PLANTED_RECORDS}
    for a in by_id:
        for b in by_id:
            assert index.equivalent(a, b) == records_equivalent(by_id[a], by_id[b], "medquad") == index.equivalent(b, a)
    with pytest.raises(KeyError):
        index.equivalents("nope")
    # Short or abbreviation synonyms do not link.
    short = [_record("x", "symptoms", "MS"), _record("y", "symptoms", "Mitral stenosis", synonyms=["MS"])]
    assert not EquivalenceIndex(short).equivalent("x", "y")


def test_equivalence_text_mode_uses_text_and_group():
    from cache_embed.data.equivalence import EquivalenceIndex

    records = [
        {"id": "1", "query": "How do I reset my password?", "meta": {"group": "pw"}},
        {"id": "2", "query": "how do I reset my password", "meta": {}},
        {"id": "3", "query": "Forgot my password", "group": "pw"},
        {"id": "4", "query": "How do I change my e-mail?"},
    ]
    index = EquivalenceIndex(records, mode="text")
    assert index.equivalents("1") == {"1", "2", "3"}
    assert index.equivalents("2") == {"1", "2"} and index.equivalents("4") == {"4"}
    with pytest.raises(ValueError, match="unknown equivalence mode"):
        EquivalenceIndex(records, mode="nope")


def test_cache_simulation_counts_equivalent_hits_as_correct_on_planted_duplicates():
    """Anchors a and b ask the same question (same qtype, same focus by text); e is about the same
    focus with another qtype. A paraphrase of a that lands on b is a correct hit (through
    equivalence); a novel question drawn from b is not looked up against a (b's equivalent)."""
    from cache_embed.data.equivalence import EquivalenceIndex
    from cache_embed.evaluate import simulation

    records = [
        _record("a", "symptoms", "Gout"),
        _record("b", "symptoms", "gout"),
        _record("e", "treatment", "Gout"),
        _record("f", "symptoms", "Asthma"),
    ]
    index = EquivalenceIndex(records)
    triplets = [
        {"anchor": "A", "positive": "pa", "negative": "nb", "query_id": "a", "negative_query_id": "b"},
        {"anchor": "B", "positive": "pb", "negative": "ne", "query_id": "b", "negative_query_id": "e"},
        {"anchor": "E", "positive": "pe", "negative": "nf", "query_id": "e", "negative_query_id": "f"},
        {"anchor": "F", "positive": "pf", "negative": "nx", "query_id": "f", "negative_query_id": None},
    ]
    for triplet, kind in zip(triplets, ("synonym", "surface_form", "synonym", None), strict=True):
        if kind:
            triplet["positive_kind"] = kind
    vectors = {
        "A": _unit(1, 0, 0, 0),
        "B": _unit(0.9, 0.1, 0, 0),
        "E": _unit(0, 1, 0, 0),
        "F": _unit(0, 0, 1, 0),
        "pa": _unit(0.8, 0.12, 0, 0.01),  # nearest is B (cos ~1.0): correct through equivalence
        "pb": _unit(0.9, 0.1, 0, 0.1),  # nearest B itself: correct by identity
        "pe": _unit(0.9, 0.1, 0, 0),  # own anchor E, but nearest B: wrong (other qtype)
        "pf": _unit(0, 0, 1, 0.05),  # own F: correct
        "nb": _unit(0.9, 0.1, 0, 0),  # from b: a and b left out; nearest left is E (cos ~0.11)
        "ne": _unit(0.1, 1, 0, 0),  # from e: e left out; nearest is B (cos ~0.2)
        "nf": _unit(0, 0, 1, 0),  # from f: f left out; nearest others at 0
        "nx": _unit(1, 0, 0, 0),
    }  # no source: hits A at 1.0: a false hit
    plan = simulation.build_plan(triplets, index)
    assert plan.counts["cached_entries"] == 4 and plan.counts["novel_lookups_with_equivalents_left_out"] == 1
    lookups = simulation.simulate(plan, lambda texts: np.stack([vectors[t] for t in texts]))
    assert lookups.repeat_correct.tolist() == [True, True, False, True]
    assert lookups.repeat_identity.tolist() == [False, True, False, True]
    block = simulation.cache_block(plan, lookups, [0.9], repeat_share=0.5)
    at = block["at_threshold"]["0.90"]
    assert (at["correct_hits"], at["correct_by_equivalence"], at["wrong_hits"], at["false_hits"]) == (3, 1, 1, 1)
    assert at["repeat_hit_rate"] == pytest.approx(3 / 4) and at["novel_false_hit_rate"] == pytest.approx(1 / 4)
    # Wrong share for a 50/50 mix: (0.5 * 1/4 + 0.5 * 1/4) / (0.5 * 4/4 + 0.5 * 1/4).
    assert at["wrong_share"] == pytest.approx(0.25 / 0.625)
    # Rank-1 per kind of repeat: pa (synonym) right, pe (synonym) wrong; pb right; pf (no kind) right.
    assert block["rank1_by_positive_kind"] == {
        "surface_form": {"repeats": 1, "rank1_correct": 1.0},
        "synonym": {"repeats": 2, "rank1_correct": 0.5},
        "unknown": {"repeats": 1, "rank1_correct": 1.0},
    }
    # Judged by identity alone, the equivalent hit would count as wrong.
    blind = simulation.simulate(
        simulation.build_plan(triplets, None), lambda texts: np.stack([vectors[t] for t in texts])
    )
    assert blind.repeat_correct.tolist() == [False, True, False, True]


def test_distractor_entries_pad_the_cache_and_are_never_a_correct_answer():
    """Questions of other focus groups cached beside the anchors: a repeat that lands on one is served a
    wrong answer, a novel question may hit one, and a distractor equal to an anchor is not cached twice."""
    from cache_embed.evaluate import simulation

    triplets = [
        {"anchor": "A", "positive": "pa", "negative": "na", "query_id": "a", "negative_query_id": None},
        {"anchor": "B", "positive": "pb", "negative": "nb", "query_id": "b", "negative_query_id": None},
    ]
    assert simulation.cached_entry_count(triplets) == 2
    vectors = {
        "A": _unit(1, 0, 0, 0),
        "B": _unit(0, 1, 0, 0),
        "D": _unit(0, 0, 1, 0),
        "pa": _unit(0.1, 0, 1, 0),  # nearest is the distractor D: a wrong answer
        "pb": _unit(0, 1, 0.1, 0),  # own anchor B
        "na": _unit(0, 0, 0.9, 0.1),  # hits D: a false hit
        "nb": _unit(0, 0, 0, 1),
    }  # hits nothing above 0
    plan = simulation.build_plan(triplets, None, distractors=["D", "a"])  # "a" is A's text: not cached again
    assert plan.counts["cached_entries"] == 3 and plan.counts["distractor_entries"] == 1
    lookups = simulation.simulate(plan, lambda texts: np.stack([vectors[t] for t in texts]))
    assert lookups.repeat_correct.tolist() == [False, True]
    at = simulation.cache_block(plan, lookups, [0.5], repeat_share=0.5)["at_threshold"]["0.50"]
    assert (at["correct_hits"], at["wrong_hits"], at["false_hits"]) == (1, 1, 1)


def test_deploy_threshold_is_the_lowest_meeting_the_bound_above_a_measured_excess():
    from cache_embed.evaluate import simulation
    from cache_embed.evaluate.intervals import clopper_pearson

    # 500 repeats, all correct, scores 0.50..0.999; 500 novel questions, 20 of them at 0.55..0.75.
    repeat_score = np.linspace(0.50, 0.999, 500)
    novel_score = np.concatenate((np.full(480, 0.2), np.linspace(0.55, 0.75, 20)))
    lookups = simulation.Lookups(repeat_score, np.ones(500, bool), np.ones(500, bool), novel_score)
    sweep = simulation.Sweep(lookups, repeat_share=0.5)
    choice = choose_threshold(sweep, 0.05)
    assert choice["bound_met"] and choice["wrong_share_upper"] <= 0.05
    # Equal weights (as many repeats as novels at a 50/50 mix): the bound is exact Clopper-Pearson on counts.
    served_rep = int(np.sum(repeat_score >= choice["threshold"]))
    served_nov = int(np.sum(novel_score >= choice["threshold"]))
    assert choice["wrong_share_upper"] == pytest.approx(
        clopper_pearson(served_nov, served_rep + served_nov, 0.95, "upper")[1], rel=1e-6
    )
    assert 0.55 < choice["threshold"] < 0.75
    # The lowest threshold keeping the bound above the first measured excess of the budget, computed
    # here from the sweep's own arrays.
    over = np.flatnonzero(sweep.wrong_share > 0.05)
    stop = int(over[0]) if over.size else sweep.thresholds.size
    passing = np.flatnonzero(sweep.wrong_share_upper[:stop] <= 0.05)
    assert choice["threshold"] == sweep.thresholds[passing[-1]]
    impossible = choose_threshold(sweep, 0.001)
    assert not impossible["bound_met"] and impossible["threshold"] is None
    # The figures of the threshold whose bound comes closest are kept for the messages.
    assert impossible["evaluated_at"] in sweep.thresholds
    assert impossible["wrong_share_upper"] == pytest.approx(sweep.wrong_share_upper.min())


def test_bound_with_focus_groups_uses_the_groups_variance():
    """With focus groups, the upper bound is Clopper-Pearson at the design-based effective size
    p (1 - p) / Var(p), Var from the group totals (computed here directly per threshold), with the
    Korn-Graubard t correction; lookups wrong together in a group make it wider than the bound
    that takes every lookup as independent, and the chosen threshold higher."""
    from scipy.stats import beta, norm
    from scipy.stats import t as student_t

    from cache_embed.evaluate import simulation

    rng = np.random.default_rng(3)
    n_groups, per_group = 60, 8
    groups = np.repeat(np.arange(n_groups), per_group)
    # Planted clustering: a sixth of the groups hold near-duplicates that are wrong together.
    confusable = np.isin(groups, rng.choice(n_groups, n_groups // 6, replace=False))
    repeat_score = np.clip(rng.normal(0.80, 0.08, groups.size) + 0.08 * confusable, 0, 1)
    repeat_correct = ~(confusable & (rng.random(groups.size) < 0.4))
    novel_score = np.clip(rng.normal(0.40, 0.10, groups.size) + 0.35 * confusable, 0, 1)
    lookups = simulation.Lookups(repeat_score, repeat_correct, repeat_correct.copy(), novel_score)
    grouped = simulation.Sweep(lookups, 0.5, groups=(groups.tolist(), groups.tolist()))
    independent = simulation.Sweep(lookups, 0.5)
    for threshold in (0.95, 0.85, 0.75, 0.6):
        served_rep, served_nov = repeat_score >= threshold, novel_score >= threshold
        weight_rep, weight_nov = 0.5 / groups.size, 0.5 / groups.size
        served = np.bincount(groups[served_rep], minlength=n_groups) * weight_rep
        served += np.bincount(groups[served_nov], minlength=n_groups) * weight_nov
        wrong = np.bincount(groups[served_rep & ~repeat_correct], minlength=n_groups) * weight_rep
        wrong += np.bincount(groups[served_nov], minlength=n_groups) * weight_nov
        p = wrong.sum() / served.sum()
        variance = n_groups / (n_groups - 1) * np.sum((wrong - p * served) ** 2) / served.sum() ** 2
        size = min(
            p * (1 - p) / variance * (norm.ppf(0.95) / student_t.ppf(0.95, n_groups - 1)) ** 2,
            int(served_rep.sum() + served_nov.sum()),  # equal weights: the weights' effective size
        )
        expected = beta.ppf(0.95, p * size + 1, size - p * size)
        point = grouped.at(threshold)
        assert point["wrong_share"] == pytest.approx(p, rel=1e-9)
        assert point["wrong_share_upper"] == pytest.approx(expected, rel=1e-6)
        assert point["wrong_share_upper"] >= independent.at(threshold)["wrong_share_upper"] - 1e-12
    assert grouped.at(0.75)["wrong_share_upper"] > independent.at(0.75)["wrong_share_upper"] + 0.03
    # The wider bound keeps the budget only higher up: its lowest passing threshold is far above the
    # independent bound's. (The one rule takes neither: the confusable groups' wrong answers put the
    # measured share over 25% near the top, before either bound passes.)
    assert choose_threshold(grouped, 0.25)["threshold"] is None
    assert choose_threshold(independent, 0.25)["threshold"] is None

    def lowest_passing(sweep):
        return sweep.thresholds[np.flatnonzero(sweep.wrong_share_upper <= 0.25)[-1]]

    assert lowest_passing(grouped) > lowest_passing(independent) + 0.1
    with pytest.raises(ValueError, match="one group per"):
        simulation.Sweep(lookups, 0.5, groups=(groups.tolist(), []))


# ------------------------------------------------------------------ intervals


def test_clopper_pearson_against_known_values():
    from cache_embed.evaluate.intervals import clopper_pearson, weighted_clopper_pearson

    # Published exact intervals: 3/10 -> (0.0667, 0.6525); 5/10 -> (0.1871, 0.8129); 0/10 upper 1 - 0.05^(1/10).
    assert clopper_pearson(3, 10) == pytest.approx((0.066739, 0.652453), abs=1e-5)
    assert clopper_pearson(5, 10) == pytest.approx((0.187086, 0.812914), abs=1e-5)
    assert clopper_pearson(0, 10, side="upper") == pytest.approx((0.0, 1 - 0.05**0.1), abs=1e-9)
    assert clopper_pearson(10, 10, side="lower") == pytest.approx((0.05**0.1, 1.0), abs=1e-9)
    assert clopper_pearson(0, 0) == (0.0, 1.0)
    # One-sided 95% upper bound for 1 of 20 (beta(2, 19) 95th percentile).
    assert clopper_pearson(1, 20, side="upper")[1] == pytest.approx(0.21611, abs=1e-4)
    equal = weighted_clopper_pearson([1, 0, 0, 0, 0, 0, 0, 0, 0, 0], np.full(10, 0.3))
    assert (equal["share"], equal["n_effective"]) == (pytest.approx(0.1), pytest.approx(10))
    assert (equal["low"], equal["high"]) == pytest.approx(clopper_pearson(1, 10), abs=1e-9)


def test_group_bootstrap_is_wider_than_triplet_bootstrap_on_planted_clusters():
    """60 groups of 20 triplets whose adapter gain is shared within a group: resampling triplets
    treats 1,200 correlated values as independent and is far too narrow; resampling groups gives
    an interval near the true sampling spread of the mean gain (sd of group gains / sqrt(60))."""
    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(60), 20)
    group_gain = rng.normal(0.1, 0.1, 60)
    base_pos = rng.normal(0.7, 0.01, 1200)
    base_neg = rng.normal(0.5, 0.01, 1200)
    adapter_pos = base_pos + group_gain[groups] + rng.normal(0, 0.005, 1200)
    adapter_neg = base_neg.copy()
    flat = cm.bootstrap_deltas(base_pos, base_neg, adapter_pos, adapter_neg, [], resamples=400, seed=1)
    grouped = cm.bootstrap_deltas(
        base_pos, base_neg, adapter_pos, adapter_neg, [], resamples=400, seed=1, groups=groups
    )
    width_flat = flat["margin"]["high"] - flat["margin"]["low"]
    width_group = grouped["margin"]["high"] - grouped["margin"]["low"]
    assert grouped["margin"]["unit"] == "group" and flat["margin"]["unit"] == "triplet"
    assert width_group > 3 * width_flat
    expected = 2 * 1.96 * group_gain.std(ddof=1) / np.sqrt(60)
    assert 0.75 * expected < width_group < 1.3 * expected
    assert width_flat < 0.5 * expected


def test_numbers_are_formatted_for_their_scale():
    from cache_embed.common.numbers import fmt, pct

    assert [fmt(v) for v in (0.0002, 0.95, 0.0, 0.0049, 12142)] == ["2e-4", "0.950", "0", "0.0049", "12,142"]
    assert [pct(v) for v in (0.0213, 0.0002, 0.0)] == ["2.1%", "0.02%", "0%"]


# ------------------------------------------------------------------ external pair files


def test_external_fixture_files_load():
    csv_pairs = load_external_pairs(DATA / "external_pairs.csv")
    jsonl_pairs = load_external_pairs(DATA / "external_pairs.jsonl")
    assert len(csv_pairs) == 20 and len(jsonl_pairs) == 20
    assert sum(label for *_, label in csv_pairs) == 10
    assert csv_pairs[10] == (
        "What should I do if I forget a dose of warfarin?",
        "I missed my warfarin pill, what now?",
        1,
    )
    assert jsonl_pairs[12][2] == 1 and jsonl_pairs[13][2] == 0  # JSON true/false


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "missing_column.csv",
            "question_1,question_2\na,b\n",
            r"missing_column\.csv:1: header lacks column\(s\) label",
        ),
        (
            "bad_label.csv",
            "question_1,question_2,label\nWhat is gout?,What is gout exactly?,1\nWhat is gout?,How is gout treated?,maybe\n",
            r"bad_label\.csv:3: label 'maybe' is not 1",
        ),
        (
            "empty_question.csv",
            "question_1,question_2,label\nWhat is gout?,,1\n",
            r"empty_question\.csv:2: 'question_2' is empty",
        ),
        (
            "bad_json.jsonl",
            '{"question_1": "a", "question_2": "b", "label": 1}\n{"question_1": "a",\n',
            r"bad_json\.jsonl:2: not valid JSON",
        ),
        (
            "missing_key.jsonl",
            '{"question_1": "a", "question_2": "b", "label": 1}\n\n{"question_1": "a", "question_2": "c"}\n',
            r"missing_key\.jsonl:3: missing label",
        ),
        (
            "label_two.jsonl",
            '{"question_1": "a", "question_2": "b", "label": 2}\n',
            r"label_two\.jsonl:1: label 2 is not 1",
        ),
        (
            "one_class.jsonl",
            '{"question_1": "a", "question_2": "b", "label": 1}\n',
            r"one_class\.jsonl: needs at least one pair labelled 1 and one labelled 0",
        ),
        ("pairs.txt", "a\tb\t1\n", r"pairs\.txt: unknown external pair format"),
    ],
)
def test_bad_external_files_name_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PipelineError, match=message):
        load_external_pairs(path)


def test_cli_reports_bad_external_file_before_loading_models(tmp_path, capsys):
    triplets = tmp_path / "t.jsonl"
    triplets.write_text(json.dumps({"anchor": "a", "positive": "b", "negative": "c"}) + "\n", encoding="utf-8")
    bad = tmp_path / "bad.csv"
    bad.write_text("question_1,question_2,label\nx,y,yes please\n", encoding="utf-8")
    rc = evaluate_adapter.run_main(
        evaluate_adapter.main,
        [
            "--triplets",
            str(triplets),
            "--base-model",
            str(tmp_path / "none"),
            "--adapter",
            str(tmp_path / "none"),
            "--output-json",
            str(tmp_path / "m.json"),
            "--output-md",
            str(tmp_path / "m.md"),
            "--plots-dir",
            str(tmp_path / "p"),
            *step_argv("evaluate", "medical", {}),
            "--external",
            f"mine={bad}",
        ],
    )
    assert rc == 1
    assert f"{bad}:2: label 'yes please'" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


# ------------------------------------------------------------------ end to end


def test_evaluate_adapter_end_to_end_shape(evaluated, real_test_triplets, real_val_triplets):
    metrics = json.loads((evaluated / "metrics.json").read_text(encoding="utf-8"))
    triplets = list(read_jsonl(real_test_triplets))
    assert metrics["counts"]["triplets"] == len(triplets) == 48
    assert metrics["counts"]["external_pairs"] == {"csv_set": 20, "jsonl_set": 20}
    assert metrics["models"]["adapter_changes_embeddings"] is True
    assert metrics["models"]["embedding_dim"] == 384
    test = metrics["test"]
    for model in ("base", "adapter"):
        block = test[model]
        for key in ("roc_auc", "pr_auc", "mean_pos", "mean_neg", "margin", "triplet_accuracy"):
            assert isinstance(block[key], float), key
        assert 0.5 < block["roc_auc"] <= 1.0
        assert set(block["at_threshold"]) == {"0.80", "0.85", "0.90"}
        assert set(block["at_threshold"]["0.80"]) >= {"precision", "recall", "f1"}
        assert set(block["at_precision"]) == {"0.95", "0.99"}
        assert set(block["best_f1"]) >= {"threshold", "f1"}
        assert block["cache"]["cached_entries"] == len({t["query_id"] for t in triplets})
        assert set(block["cache"]["at_threshold"]) == {"0.80", "0.85", "0.90"}
        point = block["cache"]["at_threshold"]["0.80"]
        assert point["correct_hits"] + point["wrong_hits"] <= block["cache"]["repeat_lookups"]
        assert 0 <= point["correct_by_equivalence"] <= point["correct_hits"]
        assert 0 <= block["cache"]["p_chr"]["auc"] <= 1 and len(block["cache"]["p_chr"]["points"]) == 51
    assert test["delta"]["roc_auc"] == pytest.approx(test["adapter"]["roc_auc"] - test["base"]["roc_auc"])
    assert set(test["ci"]) == {"roc_auc", "pr_auc", "triplet_accuracy", "margin"}
    assert test["ci"]["roc_auc"]["resamples"] == 100 and test["ci"]["roc_auc"]["unit"] == "group"
    assert metrics["counts"]["focus_groups"] <= len({t["query_id"] for t in triplets})
    # At each size the threshold is chosen on a cache as large as the test cache: val anchors padded with
    # train questions, test anchors with train and val questions.
    rec = metrics["recommended_threshold"]
    anchors = len({t["query_id"] for t in triplets})
    assert [size["cache_size"] for size in rec["sizes"]] == [anchors, 300]
    assert [size["names"] for size in rec["sizes"]] == [["test_cache"], ["300"]]
    for size in rec["sizes"]:
        assert size["calibration_cache"]["cached_entries"] == size["test_cache"]["cached_entries"] == size["cache_size"]
        assert size["calibration_cache"]["distractor_entries"] > 0
    assert [size["test_cache"]["distractor_entries"] for size in rec["sizes"]] == [0, 300 - anchors]
    assert rec["headline_size"] == 300 and "stress figure" in rec["novel_traffic"]
    assert set(test["by_negative_kind"]) == {"same_focus_other_qtype", "same_qtype_other_focus"}
    # Every test triplet is a keyword paraphrase: that kind's cache rank-1 is the overall rank-1.
    keyword = test["by_positive_kind"]["keyword"]
    assert set(test["by_positive_kind"]) == {"keyword"} and keyword["triplets"] == 48
    for name in ("base", "adapter"):
        assert keyword[name]["cache_rank1_correct"] == pytest.approx(test[name]["cache"]["rank1_correct"])
    assert keyword["repeat_lookups"] == test["adapter"]["cache"]["repeat_lookups"]
    assert sum(g["triplets"] for g in test["by_qtype"].values()) == 48
    assert set(test["by_qtype"][next(iter(test["by_qtype"]))]) == {"triplets", "base", "adapter"}
    for name in ("csv_set", "jsonl_set"):
        entry = metrics["external"][name]
        assert entry["pairs"] == 20 and entry["positives"] == 10
        assert {"base", "adapter", "delta"} <= set(entry)
        assert 0 <= entry["adapter"]["roc_auc"] <= 1
        assert "at_recommended_threshold" in entry["base"]
        assert not entry["file"].startswith("/")
    rec = metrics["recommended_threshold"]
    assert (
        rec["max_wrong_share"] == 0.2
        and rec["equivalence"] == "medquad"
        and "moves the similarity scale" in rec["note"]
    )
    assert (rec["chosen_on"], rec["calibration_triplets"], rec["calibration_triplets_available"]) == ("val", 40, 60)
    assert metrics["settings"]["max_calibration_triplets"] == 40
    assert metrics["counts"]["triplets"] == 48  # calibration triplets are not counted as test triplets
    for size in rec["sizes"]:
        for key in ("base", "adapter"):
            entry = size[key]
            assert entry["evaluated_at"] is not None
            assert entry["bound_met_on_val"] == (entry["threshold"] is not None)
            if entry["bound_met_on_val"]:
                assert entry["val"]["wrong_share_upper"] <= 0.2 and entry["threshold"] == entry["evaluated_at"]
            test_point = entry["test"]
            low, high = test_point["wrong_share_cp"]["low"], test_point["wrong_share_cp"]["high"]
            assert low <= (test_point["wrong_share"] or 0) <= high
            expected = "held" if high <= 0.2 else "missed" if low > 0.2 else "consistent"
            assert test_point["reading"] == expected
            assert (
                test_point["repeat_hit_rate_ci"]["low"]
                <= test_point["repeat_hit_rate"]
                <= test_point["repeat_hit_rate_ci"]["high"]
            )
        assert size["verdict"] in rec["verdict"] and size["bootstrap"]["skipped_resamples"] >= 0
        if size["adapter"]["threshold"] is not None and size["base"]["threshold"] is not None:
            assert set(size["delta"]) >= {"repeat_hit_rate", "wrong_share", "p_chr_auc"}
        else:
            assert size["delta"] == {}  # a closest threshold is no deploy threshold to compare
    assert rec["pair_threshold"]["deploy_precision"] == 0.9
    # The larger cache reads the smallest size's adapter threshold too (when it has one).
    small = rec["sizes"][0]["adapter"]["threshold"]
    if small is not None:
        assert rec["sizes"][1]["adapter_at_smallest_threshold"]["threshold"] == small
    assert metrics["settings"]["bootstrap"] == 100
    assert metrics["versions"]["peft"] and metrics["versions"]["sentence-transformers"] and metrics["versions"]["scipy"]
    text = (evaluated / "metrics.json").read_text(encoding="utf-8")
    assert '"/' not in text.replace('"//', "")  # no absolute local path in a shared output
    markdown = (evaluated / "metrics.md").read_text(encoding="utf-8")
    assert markdown.splitlines()[2] == "## The answer" and all(size["verdict"] in markdown for size in rec["sizes"])
    assert "## External labelled pairs" in markdown and "Pair-based threshold (secondary)" in markdown
    assert "calibration half of the validation split" in markdown
    for plot in ("similarity_histograms", "precision_recall", "threshold_sweep", "cache_operations"):
        assert (evaluated / "plots" / f"{plot}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compute_metrics_matches_direct_cosines():
    """compute_metrics on hand-made embeddings agrees with cosine figures computed directly."""
    rng = np.random.default_rng(1)
    triplets = [
        {"anchor": f"q{i}", "positive": f"p{i}", "negative": f"n{i}", "qtype": "x", "negative_kind": "k"}
        for i in range(30)
    ]
    texts = sorted({t[f] for t in triplets for f in ("anchor", "positive", "negative")})
    embeddings = {}
    for name in ("base", "adapter"):
        vectors = rng.normal(size=(len(texts), 8)).astype(np.float32)
        embeddings[name] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    metrics, curves = evaluate_adapter.compute_metrics(triplets, texts, embeddings, {}, [0.5], [0.6], 0.6, 20, 1)
    row = {text: i for i, text in enumerate(texts)}
    emb = embeddings["adapter"]
    pos = np.array([emb[row[t["anchor"]]] @ emb[row[t["positive"]]] for t in triplets])
    neg = np.array([emb[row[t["anchor"]]] @ emb[row[t["negative"]]] for t in triplets])
    labels = np.r_[np.ones(30), np.zeros(30)]
    assert metrics["test"]["adapter"]["roc_auc"] == pytest.approx(roc_auc_score(labels, np.r_[pos, neg]))
    assert metrics["test"]["adapter"]["triplet_accuracy"] == pytest.approx(np.mean(pos > neg))
    assert metrics["test"]["by_qtype"]["x"]["adapter"]["roc_auc"] == pytest.approx(
        metrics["test"]["adapter"]["roc_auc"]
    )
    json.dumps(metrics, allow_nan=False)  # strict JSON: no NaN anywhere


# ------------------------------------------------------------------ threshold chosen on calibration triplets


def planted(groups: dict[str, tuple[list[float], list[float]]]) -> tuple[dict, list[str], dict]:
    """Triplets whose cosines are exactly the given (positive, negative) values: each triplet gets
    its own two dimensions, so triplets do not interfere. Returns (triplets by group, texts, embeddings)."""
    triplets = {name: [] for name in groups}
    vectors = {}
    dims = 2 * sum(len(pos) for pos, _ in groups.values())
    plane = 0
    for name, (pos, neg) in groups.items():
        for i, (p, n) in enumerate(zip(pos, neg, strict=False)):
            texts = {field: f"{name}-{field}-{i}" for field in ("anchor", "positive", "negative")}
            for field, cosine in (("anchor", 1.0), ("positive", p), ("negative", n)):
                vector = np.zeros(dims, dtype=np.float32)
                vector[2 * plane], vector[2 * plane + 1] = cosine, np.sqrt(max(0.0, 1 - cosine**2))
                vectors[texts[field]] = vector
            triplets[name].append({**texts, "qtype": "x", "negative_kind": "k"})
            plane += 1
    texts = sorted(vectors)
    matrix = np.stack([vectors[text] for text in texts])
    return triplets, texts, {"base": matrix, "adapter": matrix.copy()}


TEST_POS, TEST_NEG = [0.80 + 0.01 * i for i in range(20)], [0.60 + 0.01 * i for i in range(20)]


def test_threshold_is_chosen_on_calibration_and_reported_on_test():
    # On test, 0.80 separates all hits from all misses; on val the misses reach 0.94, so the
    # lowest threshold with precision 0.99 there is 0.95, which keeps only 5 of 20 test hits.
    triplets, texts, embeddings = planted(
        {
            "test": (TEST_POS, TEST_NEG),
            "val": ([0.80 + 0.01 * i for i in range(20)], [0.75 + 0.01 * i for i in range(20)]),
        }
    )
    external = {
        "ext": {
            "file": "x",
            "pairs": [("test-anchor-0", "test-positive-0", 1), ("test-anchor-0", "test-negative-0", 0)],
        }
    }
    metrics, curves = evaluate_adapter.compute_metrics(
        triplets["test"], texts, embeddings, external, [0.9], [0.99], 0.99, 0, 1, calibration=triplets["val"]
    )
    fallback, _ = evaluate_adapter.compute_metrics(
        triplets["test"], texts, embeddings, external, [0.9], [0.99], 0.99, 0, 1
    )
    rec, old = metrics["recommended_threshold"]["pair_threshold"], fallback["recommended_threshold"]["pair_threshold"]
    assert (rec["chosen_on"], metrics["recommended_threshold"]["calibration_triplets"]) == ("val", 20)
    assert (old["chosen_on"], fallback["recommended_threshold"]["calibration_triplets"]) == ("test", 20)
    for name in ("base", "adapter"):
        assert rec[name]["threshold"] == pytest.approx(0.95, abs=1e-6)
        assert old[name]["threshold"] == pytest.approx(0.80, abs=1e-6)
        assert rec[name]["calibration"]["precision"] == 1.0 and rec[name]["calibration"]["recall"] == pytest.approx(
            5 / 20
        )
        assert (rec[name]["precision"], rec[name]["recall"]) == (1.0, pytest.approx(5 / 20))  # on test
        assert (old[name]["precision"], old[name]["recall"]) == (1.0, 1.0)  # optimistic: chosen where reported
        assert old[name]["calibration"] == {key: old[name][key] for key in ("precision", "recall", "f1")}
        assert rec[name]["meets_deploy_precision_on_test"] is True
        assert rec[name]["cache"]["threshold"] == rec[name]["threshold"]
        # 20 repeats and 20 novel lookups cannot bound a 5% wrong share (59 served answers are needed):
        # no deploy threshold, and no figures "at" it, rather than figures at the top of a grid.
        deploy = metrics["recommended_threshold"]["sizes"][-1][name]
        assert deploy["threshold"] is None and not deploy["bound_met_on_val"]
        assert metrics["test"]["by_qtype"]["x"][name]["at_recommended_threshold"] is None
        assert metrics["external"]["ext"][name]["at_recommended_threshold"] is None
    assert curves["pair_threshold"]["adapter"] == rec["adapter"]["threshold"] and curves["chosen_on"] == "val"
    # Everything else is the same with or without calibration.
    assert metrics["test"]["adapter"] == fallback["test"]["adapter"]
    assert set(metrics) == set(fallback) and set(rec) == set(old)
    markdown = evaluate_adapter.render_markdown(metrics)
    assert "calibration half of the validation split" in markdown
    assert "the test triplets themselves" in evaluate_adapter.render_markdown(fallback)


def test_bound_not_held_on_test_is_said_plainly():
    """Val novel questions stay under 0.60, so the validation cache serves nothing wrong from 0.60 up;
    on test the novel questions reach 0.79: the bound chosen on val does not hold, and the verdict says so.
    (Both caches hold 80 questions: the calibration cache is never smaller than the test cache.)"""
    triplets, texts, embeddings = planted(
        {
            "test": (TEST_POS * 4, TEST_NEG * 4),
            "val": ([0.60 + 0.02 * i for i in range(20)] * 4, [0.40 + 0.01 * i for i in range(20)] * 4),
        }
    )
    metrics, _ = evaluate_adapter.compute_metrics(
        triplets["test"],
        texts,
        embeddings,
        {},
        [0.9],
        [0.99],
        0.99,
        0,
        1,
        calibration=triplets["val"],
        max_wrong_share=0.05,
    )
    rec = metrics["recommended_threshold"]
    entry = rec["sizes"][-1]["adapter"]
    assert entry["bound_met_on_val"] is True and entry["test"]["wrong_share"] > 0.05
    # The test interval lies wholly above the budget here: a clear miss, said so.
    assert entry["test"]["wrong_share_cp"]["low"] > 0.05 and entry["test"]["reading"] == "missed"
    assert "missed: the 95% interval lies above the 5.0% budget" in rec["verdict"]
    markdown = evaluate_adapter.render_markdown(metrics)
    assert "| adapter |" in markdown and "| missed |" in markdown


def _size_entry(threshold, share, repeats, low, high, budget=0.05):
    from cache_embed.evaluate.threshold import reading

    return {
        "threshold": threshold,
        "bound_met_on_val": threshold is not None,
        "evaluated_at": threshold if threshold is not None else 0.95,
        "val": {"wrong_share_upper": 0.049 if threshold is not None else 0.07},
        "test": {
            "wrong_share": share,
            "repeat_hit_rate": repeats,
            "wrong_share_cp": {"low": low, "high": high},
            "repeat_hit_rate_ci": {"low": repeats - 0.02, "high": repeats + 0.02},
            "reading": reading(low, high, budget),
        },
    }


@pytest.mark.parametrize(
    ("wrong_share", "interval", "expected"),
    [
        (0.040, (0.030, 0.049), "4.0% [3.0%, 4.9%] of served answers wrong: held: the 95% interval lies within"),
        (0.053, (0.040, 0.068), "5.3% [4.0%, 6.8%] of served answers wrong: consistent with the 5.0% budget"),
        (0.069, (0.055, 0.083), "6.9% [5.5%, 8.3%] of served answers wrong: missed: the 95% interval lies above"),
    ],
)
def test_verdict_words_the_test_interval_not_the_point(wrong_share, interval, expected):
    """The verdict reads the test interval: held, consistent (a point over the budget whose interval
    contains it is not a miss), missed; the base is named with its threshold and reading, and a
    larger cache says what the smallest size's threshold would serve there."""
    from cache_embed.evaluate.deploy_threshold import size_verdict

    block = {
        "label": "37,012 (largest)",
        "adapter": _size_entry(0.88, wrong_share, 0.61, *interval),
        "base": _size_entry(0.984, 0.017, 0.022, 0.001, 0.072),
        "delta": {"repeat_hit_rate": {"delta": 0.59, "low": 0.56, "high": 0.61}},
        "adapter_at_smallest_threshold": {
            "calibrated_for": 4341,
            "threshold": 0.871,
            "wrong_share": 0.122,
            "wrong_share_cp": {"low": 0.10, "high": 0.15},
        },
    }
    text = size_verdict(block, 0.05)
    assert text.startswith("At 37,012 (largest) cached questions: the adapter's threshold is 0.880.")
    assert expected in text
    assert "The base model's threshold is 0.984: it answers 2.2% of repeats, its test wrong share consistent;" in text
    assert "the adapter answers 59.0% more (95% CI 56.0% to 61.0%)" in text
    assert text.endswith(
        "The threshold chosen for 4,341 questions (0.871) would serve 12.2% [10.0%, 15.0%] wrong answers here."
    )
    block["adapter"] = _size_entry(None, 0.07, 0.7, 0.06, 0.09)
    text = size_verdict(block, 0.05)
    assert "no adapter threshold keeps the 5.0% bound on validation (the closest, 0.950" in text


def test_calibration_subset_is_seeded_in_file_order_and_keeps_whole_anchors():
    triplets = [{"id": i, "query_id": f"q{i // 2}", "anchor": f"a{i // 2}"} for i in range(100)]
    first = evaluate_adapter.calibration_subset(triplets, 30, seed=7)
    assert first == evaluate_adapter.calibration_subset(triplets, 30, seed=7)
    assert len(first) == 30 and [t["id"] for t in first] == sorted(t["id"] for t in first)
    kept = {t["query_id"] for t in first}
    assert all((t in first) == (t["query_id"] in kept) for t in triplets)
    assert first != evaluate_adapter.calibration_subset(triplets, 30, seed=8)
    assert evaluate_adapter.calibration_subset(triplets, 0, seed=7) == triplets
    assert evaluate_adapter.calibration_subset(triplets, 500, seed=7) == triplets


def test_calibration_subset_keeps_whole_focus_groups_of_real_val(medquad_splits):
    """Given the split's records, the subset takes whole focus groups: every question of a chosen
    group is in it (as in the test cache), checked against the groups computed here from the records."""
    from cache_embed.data.focus_groups import group_of_record

    records = sorted(read_jsonl(medquad_splits / "val.jsonl"), key=lambda record: record["id"])
    triplets = [
        {"id": f"t{row}-{copy}", "query_id": record["id"], "anchor": record["query"]}
        for row, record in enumerate(records)
        for copy in range(1 + row % 2)
    ]
    group_of = group_of_record(records)
    chosen = evaluate_adapter.calibration_subset(triplets, 600, seed=7, records=records)
    assert 0.9 * 600 < len(chosen) <= 600
    chosen_groups = {group_of[t["query_id"]] for t in chosen}
    assert {t["id"] for t in chosen} == {t["id"] for t in triplets if group_of[t["query_id"]] in chosen_groups}
    assert len(chosen_groups) < len({t["query_id"] for t in chosen})  # groups of several questions were taken
    # Whole anchors only would split groups.
    by_anchor = evaluate_adapter.calibration_subset(triplets, 600, seed=7)
    split_groups = {group_of[t["query_id"]] for t in by_anchor}
    assert {t["id"] for t in by_anchor} != {t["id"] for t in triplets if group_of[t["query_id"]] in split_groups}


def test_cli_rejects_bad_calibration_file_before_loading_models(tmp_path, capsys):
    triplets = tmp_path / "t.jsonl"
    triplets.write_text(json.dumps({"anchor": "a", "positive": "b", "negative": "c"}) + "\n", encoding="utf-8")
    val = tmp_path / "val.jsonl"
    val.write_text(json.dumps({"id": "v1", "anchor": "a", "positive": " ", "negative": "c"}) + "\n", encoding="utf-8")
    rc = evaluate_adapter.run_main(
        evaluate_adapter.main,
        [
            "--triplets",
            str(triplets),
            "--base-model",
            str(tmp_path / "none"),
            "--adapter",
            str(tmp_path / "none"),
            "--output-json",
            str(tmp_path / "m.json"),
            "--output-md",
            str(tmp_path / "m.md"),
            "--plots-dir",
            str(tmp_path / "p"),
            "--calibration-triplets",
            str(val),
            *step_argv("evaluate", "medical", {}),
        ],
    )
    assert rc == 1
    assert f"{val}: triplet 1 (id v1) has no text in 'positive'" in capsys.readouterr().err


# ------------------------------------------------------------------ validation halves (select / calibrate)


def test_val_halves_are_seeded_and_focus_disjoint_on_real_val(medquad_splits, tmp_path):
    import split_val_triplets

    records = sorted(read_jsonl(medquad_splits / "val.jsonl"), key=lambda record: record["id"])
    triplets = build_triplets(records, 1500, seed=3)
    path = tmp_path / "val.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in triplets), encoding="utf-8")
    argv = [
        "--triplets",
        str(path),
        "--queries",
        str(medquad_splits / "val.jsonl"),
        "--select",
        str(tmp_path / "s.jsonl"),
        "--calibrate",
        str(tmp_path / "c.jsonl"),
        "--stats",
        str(tmp_path / "h.json"),
        "--calibrate-fraction",
        "0.5",
        "--seed",
        "13",
    ]
    assert split_val_triplets.main(argv) == 0
    select, calibrate = list(read_jsonl(tmp_path / "s.jsonl")), list(read_jsonl(tmp_path / "c.jsonl"))
    assert len(select) + len(calibrate) == len(triplets) and 0.35 < len(calibrate) / len(triplets) < 0.65
    # Disjoint by the records' CUIs, foci and synonyms, checked here without the grouping code.
    by_id = {record["id"]: record for record in records}

    def strings(rows):
        found = set()
        for t in rows:
            record = by_id[t["query_id"]]
            found |= {f"cui {c}" for c in record.get("cuis") or []}
            found |= {(o.get("focus") or "").casefold() for o in record.get("occurrences") or []}
        return found - {""}

    assert not strings(select) & strings(calibrate)
    first = (tmp_path / "c.jsonl").read_bytes()
    assert split_val_triplets.main(argv) == 0 and (tmp_path / "c.jsonl").read_bytes() == first
    stats = json.loads((tmp_path / "h.json").read_text())
    assert stats["select"]["triplets"] == len(select) and stats["shared_focus_texts"] == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**triplets[0], "query_id": "mq-missing"}) + "\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="not in the val split"):
        split_val_triplets.main(argv[:1] + [str(bad)] + argv[2:])
