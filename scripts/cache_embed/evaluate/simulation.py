"""The cache as an operator sees it: repeats, novel questions, and the wrong share of served answers.

Every distinct anchor is cached (one entry per query record). Two kinds of traffic are looked up:

- a *repeat* (a paraphrase of a cached question): served when its nearest entry's similarity is at
  least the threshold; the answer is *correct* when the served entry is equivalent to the question
  (cache_embed.data.equivalence), which counts another collection's copy of the same question as right;
  `correct_by_equivalence` counts the correct hits whose entry is not the question's own anchor;
- a *novel* question (a hard negative: a real question the cache must not answer): looked up
  among the entries other than its own source question and that question's equivalents (a cache
  that held them would rightly answer), and other than an entry with its exact text. Any hit is
  a wrong answer.

At a threshold tau: `repeat_hit_rate` (repeats served a correct answer), `repeat_wrong_rate`
(repeats served a wrong one), `novel_false_hit_rate` (novel questions served anything),
`served_share` (the cache hit ratio for a traffic mix with `repeat_share` repeats), and
`wrong_share`, the share of served answers that are wrong for that mix:

    wrong_share = (r * repeat_wrong_rate + (1 - r) * novel_false_hit_rate) / served_share

so the figure does not depend on how many negatives the generator made. Its one-sided upper bound
is the Korn-Graubard (effective-size Clopper-Pearson) bound on the weighted share of wrong served
answers, each served repeat weighing r / repeats and each served novel (1 - r) / novels. Given the
lookups' focus groups, the effective size also counts the groups as the independent units: the
questions of one group share a neighbourhood and are wrong together, so a bound that took every
lookup as independent would be too tight, and the threshold chosen with it would miss its budget
on other data (the design-based effective size, p (1 - p) / Var(p), from the ratio estimator's
linearised variance over groups, with Korn and Graubard's degrees-of-freedom correction; never
above the weights' own effective size).

The precision-versus-cache-hit-ratio curve (P-CHR: 1 - wrong_share against served_share over all
thresholds) and its area summarise a model over every threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import beta, norm
from scipy.stats import t as student_t

from cache_embed.common.nearest import exact_nearest
from cache_embed.common.text import comparison_key
from cache_embed.data.equivalence import EquivalenceIndex

__all__ = [
    "CachePlan",
    "Lookups",
    "Sweep",
    "bootstrap_operating_points",
    "build_plan",
    "cached_entry_count",
    "cache_block",
    "operating_point",
    "simulate",
]


# Bootstrap resamples without a repeat or a novel lookup are skipped and counted; past this share of
# them the interval would describe another sample than the one measured, and the step fails.
MAX_SKIPPED_RESAMPLES = 0.01


@dataclass
class CachePlan:
    """What is cached and what is looked up (model-independent)."""

    entry_text: list[str]
    entry_record: list[str | None]
    repeat_text: list[str]
    repeat_own: np.ndarray  # the entry of the question's own anchor
    repeat_accept: list[frozenset]  # entries whose answer is correct for the question
    repeat_group: list
    novel_text: list[str]
    novel_excluded: list[np.ndarray]  # entries a novel question is not looked up against
    novel_group: list
    counts: dict = field(default_factory=dict)
    repeat_kind: list = field(default_factory=list)  # the generator's positive_kind of each repeat

    @property
    def lookup_groups(self) -> tuple[list, list]:
        """(repeat_group, novel_group): the `groups` argument of Sweep."""
        return self.repeat_group, self.novel_group


@dataclass
class Lookups:
    """The nearest entry of each lookup for one model."""

    repeat_score: np.ndarray
    repeat_correct: np.ndarray
    repeat_identity: np.ndarray
    novel_score: np.ndarray


def _entry_key(triplet: dict) -> tuple:
    query_id = triplet.get("query_id")
    return ("id", query_id) if query_id else ("text", comparison_key(triplet["anchor"]))


def cached_entry_count(triplets: list[dict]) -> int:
    """How many cache entries the triplets' distinct anchors make (as build_plan counts them)."""
    return len({_entry_key(triplet) for triplet in triplets})


def build_plan(triplets: list[dict], index: EquivalenceIndex | None = None, distractors=()) -> CachePlan:
    """Cache entries, deduplicated repeat and novel lookups, and what each may be served.

    `distractors`: texts cached beside the anchors (questions of other focus groups, which no lookup
    may be served: a hit on one is wrong), so that a small cache can stand in for a larger one.

    `index`: equivalence over the query records the triplets come from (their `query_id` and
    `negative_query_id`); None judges by identity and equal text only. A lookup's group is its
    anchor's `group` field (set by the caller; default the anchor's entry)."""
    entry_of: dict[tuple, int] = {}
    entry_text, entry_record, entry_keys = [], [], []
    for triplet in triplets:
        key = _entry_key(triplet)
        if key not in entry_of:
            entry_of[key] = len(entry_text)
            entry_text.append(triplet["anchor"])
            entry_record.append(triplet.get("query_id"))
            entry_keys.append(comparison_key(triplet["anchor"]))
    anchor_entries = len(entry_text)
    known_keys = set(entry_keys)
    for text in distractors:
        key = comparison_key(text)
        if key not in known_keys:
            known_keys.add(key)
            entry_text.append(text)
            entry_record.append(None)
            entry_keys.append(key)
    entries_by_record: dict[str, list[int]] = {}
    entries_by_key: dict[str, list[int]] = {}
    for position, (record_id, key) in enumerate(zip(entry_record, entry_keys, strict=False)):
        if record_id:
            entries_by_record.setdefault(record_id, []).append(position)
        entries_by_key.setdefault(key, []).append(position)

    def equivalent_entries(record_id: str | None, text_key: str) -> set[int]:
        found = set(entries_by_key.get(text_key, ()))
        if record_id and index is not None and record_id in index:
            for other in index.equivalents(record_id):
                found.update(entries_by_record.get(other, ()))
        elif record_id:
            found.update(entries_by_record.get(record_id, ()))
        return found

    repeats: dict[tuple, int] = {}
    repeat_text, repeat_own, repeat_accept, repeat_group, repeat_kind = [], [], [], [], []
    novels: dict[tuple, int] = {}
    novel_text, novel_excluded, novel_group = [], [], []
    left_out_total = novels_with_equivalents = 0
    for triplet in triplets:
        own = entry_of[_entry_key(triplet)]
        group = triplet.get("group", ("entry", own))
        positive_key = comparison_key(triplet["positive"])
        if (positive_key, own) not in repeats:
            repeats[(positive_key, own)] = len(repeat_text)
            repeat_text.append(triplet["positive"])
            repeat_own.append(own)
            accept = equivalent_entries(triplet.get("query_id"), entry_keys[own]) | {own}
            accept |= set(entries_by_key.get(positive_key, ()))
            repeat_accept.append(frozenset(accept))
            repeat_group.append(group)
            repeat_kind.append(str(triplet.get("positive_kind") or "unknown"))
        negative_key = comparison_key(triplet["negative"])
        source = triplet.get("negative_query_id")
        if (negative_key, source) not in novels:
            novels[(negative_key, source)] = len(novel_text)
            excluded = equivalent_entries(source, negative_key)
            exact = set(entries_by_key.get(negative_key, ()))
            left_out_total += len(excluded)
            novels_with_equivalents += bool(excluded - exact - set(entries_by_record.get(source, ())))
            novel_text.append(triplet["negative"])
            novel_excluded.append(np.array(sorted(excluded), dtype=np.int64))
            novel_group.append(group)
    counts = {
        "cached_entries": len(entry_text),
        "distractor_entries": len(entry_text) - anchor_entries,
        "repeat_lookups": len(repeat_text),
        "novel_lookups": len(novel_text),
        "repeats_with_equivalent_entries": int(sum(len(a) > 1 for a in repeat_accept)),
        "novel_lookups_with_entries_left_out": int(sum(len(e) > 0 for e in novel_excluded)),
        "novel_lookups_with_equivalents_left_out": int(novels_with_equivalents),
        "entries_left_out": int(left_out_total),
    }
    return CachePlan(
        entry_text,
        entry_record,
        repeat_text,
        np.array(repeat_own, dtype=np.int64),
        repeat_accept,
        repeat_group,
        novel_text,
        novel_excluded,
        novel_group,
        counts,
        repeat_kind,
    )


def simulate(plan: CachePlan, embed, chunk: int = 512) -> Lookups:
    """Nearest entries for one model. `embed(texts)` returns their L2-normalised rows."""
    entries = np.asarray(embed(plan.entry_text), dtype=np.float32)
    repeat_index, repeat_score = exact_nearest(embed(plan.repeat_text), entries, chunk=chunk)
    # A novel question with every entry left out is never served (similarity -inf).
    _, novel_score = exact_nearest(embed(plan.novel_text), entries, excluded=plan.novel_excluded, chunk=chunk)
    repeat_index, repeat_score = repeat_index[:, 0], np.clip(repeat_score[:, 0], -1.0, 1.0)
    novel_score = np.where(np.isfinite(novel_score[:, 0]), np.clip(novel_score[:, 0], -1.0, 1.0), -np.inf)
    correct = np.array(
        [int(i) in accept for i, accept in zip(repeat_index, plan.repeat_accept, strict=True)], dtype=bool
    )
    return Lookups(repeat_score, correct, repeat_index == plan.repeat_own, novel_score)


class Sweep:
    """Cumulative figures over every threshold (each distinct nearest-entry score), for one model,
    one traffic mix and optional bootstrap multiplicities of the lookups."""

    def __init__(
        self,
        lookups: Lookups,
        repeat_share: float,
        repeat_weights=None,
        novel_weights=None,
        level: float = 0.95,
        groups: tuple | None = None,
    ):
        """`groups`: (repeat_groups, novel_groups), each lookup's focus group, for the bound's
        design-based effective size; None takes every lookup as independent."""
        if not 0 < repeat_share < 1:
            raise ValueError("repeat_share must be in (0, 1)")
        rep_w = np.ones(lookups.repeat_score.size) if repeat_weights is None else np.asarray(repeat_weights, float)
        nov_w = np.ones(lookups.novel_score.size) if novel_weights is None else np.asarray(novel_weights, float)
        if rep_w.sum() <= 0 or nov_w.sum() <= 0:
            raise ValueError("the cache simulation needs repeat and novel lookups")
        self.repeat_share, self.level = repeat_share, level
        rep_unit = repeat_share * rep_w / rep_w.sum()
        nov_unit = (1 - repeat_share) * nov_w / nov_w.sum()
        scores = np.concatenate((lookups.repeat_score, lookups.novel_score))
        weights = np.concatenate((rep_unit, nov_unit))
        wrong = np.concatenate((~lookups.repeat_correct, np.ones(lookups.novel_score.size, bool)))
        is_repeat = np.concatenate((np.ones(lookups.repeat_score.size, bool), np.zeros(lookups.novel_score.size, bool)))
        group_ids = None
        if groups is not None:
            keys = list(groups[0]) + list(groups[1])
            if len(keys) != scores.size:
                raise ValueError("groups must name one group per repeat and per novel lookup")
            group_ids = np.unique(np.array([repr(key) for key in keys]), return_inverse=True)[1]
        keep = (weights > 0) & np.isfinite(scores)
        scores, weights, wrong, is_repeat = scores[keep], weights[keep], wrong[keep], is_repeat[keep]
        order = np.argsort(-scores, kind="mergesort")
        scores, weights, wrong, is_repeat = scores[order], weights[order], wrong[order], is_repeat[order]
        if group_ids is not None:
            group_ids = group_ids[keep][order]
        last = np.flatnonzero(np.diff(scores) != 0)
        last = np.concatenate((last, [scores.size - 1])) if scores.size else last
        self.thresholds = scores[last]  # descending
        self.served = np.cumsum(weights)[last]  # = served_share (weights sum to 1)
        self.served_sq = np.cumsum(weights**2)[last]
        self.wrong = np.cumsum(weights * wrong)[last]
        self.repeat_correct = np.cumsum(weights * (is_repeat & ~wrong))[last] / repeat_share
        self.repeat_wrong = np.cumsum(weights * (is_repeat & wrong))[last] / repeat_share
        self.novel_served = np.cumsum(weights * ~is_repeat)[last] / (1 - repeat_share)
        self.served_items = np.cumsum(np.ones(scores.size))[last]
        with np.errstate(divide="ignore", invalid="ignore"):
            self.wrong_share = np.where(self.served > 0, self.wrong / self.served, 0.0)
            n_eff = np.where(self.served_sq > 0, self.served**2 / self.served_sq, 0.0)
        if group_ids is not None:
            n_eff = np.minimum(n_eff, _design_effective_size(group_ids, weights, wrong, last, self, level))
        k_eff = np.minimum(self.wrong_share * n_eff, n_eff)
        upper = np.ones_like(n_eff)
        inside = (n_eff > 0) & (k_eff < n_eff - 1e-12)
        upper[inside] = beta.ppf(level, k_eff[inside] + 1, n_eff[inside] - k_eff[inside])
        self.wrong_share_upper = upper
        self.n_effective = n_eff

    def _position(self, threshold: float) -> int:
        """Index into the cumulative arrays for `threshold` (-1: nothing served)."""
        # thresholds are descending; count those >= threshold.
        return int(np.searchsorted(-self.thresholds, -threshold, side="right")) - 1

    def at(self, threshold: float) -> dict:
        k = self._position(threshold)
        if k < 0:
            return {
                "threshold": float(threshold),
                "repeat_hit_rate": 0.0,
                "repeat_wrong_rate": 0.0,
                "novel_false_hit_rate": 0.0,
                "served_share": 0.0,
                "wrong_share": None,
                "wrong_share_upper": 1.0,
            }
        return {
            "threshold": float(threshold),
            "repeat_hit_rate": float(self.repeat_correct[k]),
            "repeat_wrong_rate": float(self.repeat_wrong[k]),
            "novel_false_hit_rate": float(self.novel_served[k]),
            "served_share": float(self.served[k]),
            "wrong_share": float(self.wrong_share[k]),
            "wrong_share_upper": float(self.wrong_share_upper[k]),
        }

    def interval(self, threshold: float, level: float = 0.95, side: str = "two-sided") -> dict:
        """Korn-Graubard (effective-size Clopper-Pearson) interval of the wrong share at `threshold`."""
        from cache_embed.evaluate.intervals import clopper_pearson

        k = self._position(threshold)
        if k < 0 or self.n_effective[k] <= 0:
            return {"low": 0.0, "high": 1.0, "n_effective": 0.0, "level": level, "side": side}
        n_eff = float(self.n_effective[k])
        low, high = clopper_pearson(min(self.wrong_share[k] * n_eff, n_eff), n_eff, level, side)
        return {"low": low, "high": high, "n_effective": n_eff, "level": level, "side": side}

    def p_chr_auc(self) -> float:
        """Area under precision (1 - wrong share) against served share, from served share 0
        (starting at the precision of the highest threshold) to the lowest threshold's."""
        if not self.served.size:
            return 0.0
        x = np.concatenate(([0.0], self.served))
        precision = 1.0 - self.wrong_share
        y = np.concatenate(([precision[0]], precision))
        return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))

    def curve(self, grid) -> list[list[float]]:
        """[threshold, served_share, precision] at each threshold of `grid`."""
        points = []
        for threshold in grid:
            point = self.at(threshold)
            precision = None if point["wrong_share"] is None else 1.0 - point["wrong_share"]
            points.append([float(threshold), point["served_share"], precision])
        return points


def _design_effective_size(group_ids, weights, wrong, last, sweep: Sweep, level: float) -> np.ndarray:
    """At each threshold (the cumulative positions `last` of lookups sorted by descending score),
    p (1 - p) / Var(p) for the wrong share p = sum_g w_g / sum_g s_g over groups g (s_g: served
    weight, w_g: wrong served weight), Var(p) = G / (G - 1) * sum_g (w_g - p s_g)^2 / S^2, times
    (z / t_{G-1})^2 (Korn and Graubard 1998); infinite where Var(p) is 0 (p is 0 or 1)."""
    n_groups = np.unique(group_ids).size  # the groups with a lookup (ids need not be contiguous)
    if n_groups < 2:
        return np.zeros(last.size)
    wrong_weight = weights * wrong
    # Each lookup's group's served and wrong weight before it, in score order.
    by_group = np.lexsort((np.arange(group_ids.size), group_ids))
    before = {}
    for name, values in (("served", weights), ("wrong", wrong_weight)):
        ordered = values[by_group]
        running = np.cumsum(ordered) - ordered
        starts = np.r_[True, group_ids[by_group][1:] != group_ids[by_group][:-1]]
        group_start = np.maximum.accumulate(np.where(starts, running, 0.0))
        before[name] = np.empty(group_ids.size)
        before[name][by_group] = running - group_start
    # Running sums over groups of s_g^2, w_g s_g and w_g^2, updated lookup by lookup.
    s_sq = np.cumsum(2 * weights * before["served"] + weights**2)[last]
    ws = np.cumsum(before["wrong"] * weights + wrong_weight * before["served"] + wrong_weight * weights)[last]
    w_sq = np.cumsum(2 * wrong_weight * before["wrong"] + wrong_weight**2)[last]
    p = sweep.wrong_share
    spread = np.maximum(w_sq - 2 * p * ws + p**2 * s_sq, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = n_groups / (n_groups - 1) * spread / sweep.served**2
        size = np.where(variance > 1e-15, p * (1 - p) / variance, np.inf)
    return size * (norm.ppf(level) / student_t.ppf(level, n_groups - 1)) ** 2


def operating_point(
    lookups: Lookups, threshold: float, repeat_share: float, repeat_weights=None, novel_weights=None
) -> dict:
    """Figures at one threshold (bootstrap multiplicities optional), without building a full sweep."""
    rep_w = np.ones(lookups.repeat_score.size) if repeat_weights is None else np.asarray(repeat_weights, float)
    nov_w = np.ones(lookups.novel_score.size) if novel_weights is None else np.asarray(novel_weights, float)
    served_rep = lookups.repeat_score >= threshold
    repeats, novels = rep_w.sum(), nov_w.sum()
    hit = float(np.sum(rep_w * (served_rep & lookups.repeat_correct)) / repeats)
    wrong = float(np.sum(rep_w * (served_rep & ~lookups.repeat_correct)) / repeats)
    false = float(np.sum(nov_w * (lookups.novel_score >= threshold)) / novels)
    served = repeat_share * (hit + wrong) + (1 - repeat_share) * false
    wrong_share = (repeat_share * wrong + (1 - repeat_share) * false) / served if served > 0 else None
    return {
        "repeat_hit_rate": hit,
        "repeat_wrong_rate": wrong,
        "novel_false_hit_rate": false,
        "served_share": served,
        "wrong_share": wrong_share,
    }


def cache_block(plan: CachePlan, lookups: Lookups, thresholds, repeat_share: float, level: float = 0.95) -> dict:
    """The `cache` block of metrics.json for one model: counts, rank-1 figures, figures at each
    fixed threshold, and the P-CHR curve and its area."""
    sweep = Sweep(lookups, repeat_share, level=level, groups=plan.lookup_groups)
    from cache_embed.evaluate.pair_metrics import threshold_key

    at_threshold = {}
    for threshold in thresholds:
        point = sweep.at(threshold)
        served_rep = lookups.repeat_score >= threshold
        point.update(
            {
                "correct_hits": int(np.sum(served_rep & lookups.repeat_correct)),
                "correct_by_equivalence": int(np.sum(served_rep & lookups.repeat_correct & ~lookups.repeat_identity)),
                "wrong_hits": int(np.sum(served_rep & ~lookups.repeat_correct)),
                "false_hits": int(np.sum(lookups.novel_score >= threshold)),
            }
        )
        at_threshold[threshold_key(threshold)] = point
    grid = np.round(np.arange(0.0, 1.0001, 0.02), 2)
    return {
        **plan.counts,
        "repeat_share": repeat_share,
        "rank1_correct": float(np.mean(lookups.repeat_correct)) if lookups.repeat_correct.size else None,
        "rank1_identity": float(np.mean(lookups.repeat_identity)) if lookups.repeat_identity.size else None,
        "rank1_by_positive_kind": rank1_by_kind(plan, lookups),
        "at_threshold": at_threshold,
        "p_chr": {"auc": sweep.p_chr_auc(), "points": sweep.curve(grid)},
    }


def rank1_by_kind(plan: CachePlan, lookups: Lookups) -> dict:
    """{positive kind: {repeats, rank1_correct}}: how often the nearest cached question is a correct
    answer, for each kind of repeat the generator made (reworded, synonym, ...)."""
    kinds = np.array(plan.repeat_kind, dtype=object)
    if kinds.size != lookups.repeat_correct.size:
        raise ValueError(
            f"the plan names the kind of {kinds.size} repeats but {lookups.repeat_correct.size} were looked up;"
            " the lookups come from another plan"
        )
    return {
        kind: {
            "repeats": int(np.sum(kinds == kind)),
            "rank1_correct": float(np.mean(lookups.repeat_correct[kinds == kind])),
        }
        for kind in sorted(set(plan.repeat_kind))
    }


def bootstrap_operating_points(
    lookups: dict,
    thresholds: dict,
    repeat_groups,
    novel_groups,
    repeat_share: float,
    resamples: int,
    seed: int,
    level: float = 0.95,
    progress=None,
) -> dict:
    """Paired bootstrap over groups of the figures at each model's own threshold (and of the P-CHR
    area): the same groups are drawn for every model. Returns {model: {figure: {value, low, high}},
    "delta": {figure: {delta, low, high}}} with delta = adapter minus base."""
    from cache_embed.evaluate.intervals import group_index, group_weights, percentile_interval

    keys = list(repeat_groups) + list(novel_groups)
    ids, n_groups = group_index(keys)
    rep_ids, nov_ids = ids[: len(repeat_groups)], ids[len(repeat_groups) :]
    figures = ("repeat_hit_rate", "repeat_wrong_rate", "novel_false_hit_rate", "served_share", "wrong_share")
    names = [name for name in lookups if thresholds.get(name) is not None]

    def measure(rep_w=None, nov_w=None):
        out = {}
        for name in names:
            point = operating_point(lookups[name], thresholds[name], repeat_share, rep_w, nov_w)
            point["p_chr_auc"] = Sweep(lookups[name], repeat_share, rep_w, nov_w).p_chr_auc()
            out[name] = point
        return out

    point = measure()
    samples = {name: {f: [] for f in (*figures, "p_chr_auc")} for name in names}
    rng = np.random.default_rng(seed)
    iterator = range(resamples)
    if progress is not None:
        iterator = progress(iterator)
    skipped = 0
    for _ in iterator:
        weights = group_weights(np.arange(n_groups), n_groups, rng)
        rep_w, nov_w = weights[rep_ids], weights[nov_ids]
        if rep_w.sum() <= 0 or nov_w.sum() <= 0:
            skipped += 1  # a resample that drew no repeat or no novel lookup has no wrong share
            continue
        result = measure(rep_w, nov_w)
        for name in names:
            for figure in samples[name]:
                samples[name][figure].append(result[name][figure])
    if resamples and skipped > resamples * MAX_SKIPPED_RESAMPLES:
        raise ValueError(
            f"{skipped} of {resamples} bootstrap resamples drew no repeat or no novel lookup: too few focus groups"
            " with both for an interval; evaluate on more triplets"
        )
    out = {"unit": "group", "groups": n_groups, "resamples": resamples, "skipped_resamples": skipped, "level": level}
    for name in names:
        out[name] = {}
        for figure, values in samples[name].items():
            low, high = percentile_interval(values, level)
            out[name][figure] = {"value": point[name][figure], "low": low, "high": high}
    if {"base", "adapter"} <= set(names):
        out["delta"] = {}
        for figure in (*figures, "p_chr_auc"):
            pairs = [
                (a, b)
                for a, b in zip(samples["adapter"][figure], samples["base"][figure], strict=False)
                if a is not None and b is not None
            ]
            low, high = percentile_interval([a - b for a, b in pairs], level)
            a0, b0 = point["adapter"][figure], point["base"][figure]
            out["delta"][figure] = {"delta": None if a0 is None or b0 is None else a0 - b0, "low": low, "high": high}
    return out
