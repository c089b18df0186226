"""Labelled pair sets (evaluate.external and a domain's own sets, such as the natural-phrasing
pairs of resources/eval/) read as a cache reads them: ROC-AUC, the recall at a target precision,
and precision and recall at each cache size's deploy threshold, per model, with 95% intervals from
a paired bootstrap over the sets' source records (pairs written from one question share its
wording and are not independent), and the same figures per kind of pair.

A kind of label-1 pairs (a way of rewording) is scored against every label-0 pair, and a kind of
label-0 pairs (a way of asking something else) against every label-1 pair: each kind's ROC-AUC
says how well the model tells that kind from the other side.
"""

from __future__ import annotations

import numpy as np

from cache_embed.evaluate import pair_metrics as cm
from cache_embed.evaluate.intervals import group_index, group_weights, percentile_interval

MODELS = ("base", "adapter")


def _weighted_figures(scores, labels, weights, target: float, thresholds: dict) -> dict:
    """ROC-AUC, recall at `target` precision, and precision/recall at each named threshold, weighted."""
    curve_thresholds, tp, fp, total_positive, total_negative = cm._curve(scores, labels.astype(bool), weights)
    tpr = np.concatenate(([0.0], tp / total_positive))
    fpr = np.concatenate(([0.0], fp / total_negative))
    found = cm._threshold_for_precision_from_curve(curve_thresholds, tp, fp, total_positive, target)
    figures = {
        "roc_auc": float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2.0)),
        "recall_at_precision": 0.0 if found is None else found[1],
    }
    for name, threshold in thresholds.items():
        if threshold is None:
            continue
        served = scores >= threshold
        served_weight = float(np.sum(weights * served))
        figures[f"precision@{name}"] = (
            float(np.sum(weights * (served & (labels == 1))) / served_weight) if served_weight > 0 else None
        )
        figures[f"recall@{name}"] = float(np.sum(weights * (served & (labels == 1))) / np.sum(weights * (labels == 1)))
    return figures


def phrasing_figures(
    scores: dict[str, np.ndarray],
    labels: np.ndarray,
    sources: list | None,
    thresholds: dict[str, dict[str, float | None]],
    target: float,
    resamples: int,
    seed: int,
    level: float = 0.95,
) -> dict:
    """{model: {figure: {value, low, high}}, delta: {figure: {delta, low, high}}, unit, groups,
    resamples}. `thresholds`: model -> {name: threshold} (each cache size's deploy threshold);
    `sources`: each pair's source record (None: each pair its own unit)."""
    labels = np.asarray(labels, dtype=np.int64)
    keys = sources if sources is not None else list(range(labels.size))
    ids, n_groups = group_index(keys)
    ones = np.ones(labels.size)
    point = {model: _weighted_figures(scores[model], labels, ones, target, thresholds[model]) for model in MODELS}
    samples = {model: {figure: [] for figure in point[model]} for model in MODELS}
    deltas = {figure: [] for figure in point["adapter"] if figure in point["base"]}
    rng = np.random.default_rng(seed)
    skipped = 0
    for _ in range(resamples):
        weights = group_weights(ids, n_groups, rng)
        if not np.any(weights * labels) or not np.any(weights * (1 - labels)):
            skipped += 1  # a resample without both labels has no ROC-AUC
            continue
        drawn = {
            model: _weighted_figures(scores[model], labels, weights, target, thresholds[model]) for model in MODELS
        }
        for model in MODELS:
            for figure, value in drawn[model].items():
                samples[model][figure].append(value)
        for figure in deltas:
            a, b = drawn["adapter"].get(figure), drawn["base"].get(figure)
            if a is not None and b is not None:
                deltas[figure].append(a - b)
    out = {
        "unit": "source record" if sources is not None else "pair",
        "groups": n_groups,
        "resamples": resamples,
        "skipped_resamples": skipped,
        "target_precision": target,
    }
    for model in MODELS:
        out[model] = {}
        for figure, value in point[model].items():
            low, high = percentile_interval(samples[model][figure], level)
            out[model][figure] = {"value": value, "low": low, "high": high}
    out["delta"] = {}
    for figure, values in deltas.items():
        a, b = point["adapter"][figure], point["base"][figure]
        low, high = percentile_interval(values, level)
        out["delta"][figure] = {"delta": None if a is None or b is None else a - b, "low": low, "high": high}
    return out


def by_kind(scores: dict[str, np.ndarray], labels, kinds: list[str], thresholds: dict[str, float | None]) -> dict:
    """{kind: {label, pairs, model: {roc_auc, served_share}}}: each kind of pair against every pair of
    the other label; served_share at the model's threshold (`thresholds`: model -> the largest size's)."""
    labels = np.asarray(labels, dtype=np.int64)
    kinds_array = np.asarray(kinds, dtype=object)
    out = {}
    for kind in sorted(set(kinds)):
        rows = kinds_array == kind
        label = int(labels[rows][0])
        if np.any(labels[rows] != label):
            raise ValueError(f"the pair kind {kind!r} has both labels; a kind names one way of asking")
        subset = rows | (labels != label)
        entry = {"label": label, "pairs": int(rows.sum())}
        for model in MODELS:
            threshold = thresholds.get(model)
            entry[model] = {
                "roc_auc": cm.roc_auc(scores[model][subset], labels[subset]),
                "served_share": None if threshold is None else float(np.mean(scores[model][rows] >= threshold)),
            }
        out[kind] = entry
    return out
