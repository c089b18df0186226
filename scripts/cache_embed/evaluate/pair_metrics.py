"""Pure-numpy figures for judging an embedding model as a semantic cache.

A *pair* is (cached question, incoming question) with a cosine similarity `score` and a
`label`: 1 when the incoming question should HIT (same question), 0 when it should MISS.
A cache serves a hit when `score >= threshold`, so every figure below uses `>=`.

Conventions:
- precision with no predicted hits is 1.0 (no false hits were served); recall with no
  positives is 0.0; F1 is 0.0 when precision + recall is 0.
- Threshold searches use the distinct observed scores as candidate thresholds.
- `threshold_for_precision` returns None when no threshold reaches the target.
- In bootstrap deltas, an unreachable target precision counts as recall 0.0
  (no usable threshold means the cache serves nothing at that precision).

The operational cache simulation (repeats and novel questions, equivalence-aware) is in
cache_embed.evaluate.simulation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "roc_auc",
    "average_precision",
    "precision_recall_curve",
    "threshold_sweep",
    "at_threshold",
    "threshold_for_precision",
    "best_f1",
    "margin_figures",
    "pair_figures",
    "triplet_figures",
    "bootstrap_deltas",
    "threshold_key",
]


def threshold_key(value: float) -> str:
    """The JSON key of a threshold or target precision: two decimals at least ("0.80", "0.995")."""
    text = f"{value:.4f}".rstrip("0")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


def _arrays(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in length ({scores.size} vs {labels.size})")
    if scores.size and not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinity")
    if labels.size and not np.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must be 0 or 1")
    return scores, labels.astype(bool)


def _rankdata(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (like scipy.stats.rankdata)."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [values.size]))
    average = (starts + ends + 1) / 2.0  # mean of the 1-based ranks start+1 .. end
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def roc_auc(scores, labels) -> float | None:
    """Area under the ROC curve as the Mann-Whitney statistic: the probability that a random
    hit pair scores above a random miss pair, ties counting one half. None with one class only."""
    scores, labels = _arrays(scores, labels)
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = _rankdata(scores)
    rank_sum = ranks[labels].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def _curve(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None, order: np.ndarray | None = None):
    """Cumulative (weighted) hit/miss counts at each distinct score, highest score first.

    Returns (thresholds, tp, fp, total_positive, total_negative); tp[k] and fp[k] count the
    pairs with score >= thresholds[k]."""
    if order is None:
        order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    sorted_labels = labels[order]
    w = np.ones(scores.size) if weights is None else np.asarray(weights, dtype=np.float64)[order]
    tp_all = np.cumsum(w * sorted_labels)
    fp_all = np.cumsum(w * ~sorted_labels)
    last_of_group = np.flatnonzero(np.diff(sorted_scores) != 0)
    last_of_group = np.concatenate((last_of_group, [scores.size - 1])) if scores.size else last_of_group
    thresholds = sorted_scores[last_of_group]
    tp = tp_all[last_of_group]
    fp = fp_all[last_of_group]
    total_positive = float(tp_all[-1]) if scores.size else 0.0
    total_negative = float(fp_all[-1]) if scores.size else 0.0
    return thresholds, tp, fp, total_positive, total_negative


def _safe_precision(tp, fp):
    predicted = tp + fp
    return np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1), 1.0)


def precision_recall_curve(scores, labels) -> dict:
    """Precision and recall at each distinct score used as threshold, thresholds ascending."""
    scores, labels = _arrays(scores, labels)
    thresholds, tp, fp, total_positive, _ = _curve(scores, labels)
    precision = _safe_precision(tp, fp)
    recall = tp / total_positive if total_positive else np.zeros_like(tp)
    return {"thresholds": thresholds[::-1], "precision": precision[::-1], "recall": recall[::-1]}


def _average_precision_from_curve(tp, fp, total_positive) -> float | None:
    if total_positive <= 0:
        return None
    precision = _safe_precision(tp, fp)
    recall = tp / total_positive
    previous = np.concatenate(([0.0], recall[:-1]))
    return float(np.sum((recall - previous) * precision))


def average_precision(scores, labels) -> float | None:
    """PR-AUC as average precision: sum over distinct thresholds of (R_k - R_{k-1}) * P_k
    (the step-wise definition scikit-learn uses). None when there is no hit pair."""
    scores, labels = _arrays(scores, labels)
    _, tp, fp, total_positive, _ = _curve(scores, labels)
    return _average_precision_from_curve(tp, fp, total_positive)


def at_threshold(scores, labels, threshold: float) -> dict:
    """Precision, recall and F1 of serving a hit when score >= threshold, with the counts."""
    scores, labels = _arrays(scores, labels)
    predicted = scores >= threshold
    tp = int(np.sum(predicted & labels))
    fp = int(np.sum(predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "threshold": float(threshold),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def _threshold_for_precision_from_curve(thresholds, tp, fp, total_positive, target):
    precision = _safe_precision(tp, fp)
    reaching = np.flatnonzero((precision >= target - 1e-12) & (tp > 0))
    if reaching.size == 0 or total_positive <= 0:
        return None
    k = int(reaching[-1])  # curve runs highest threshold first: the last index is the lowest threshold
    return float(thresholds[k]), float(tp[k] / total_positive), float(precision[k])


def threshold_for_precision(scores, labels, target: float) -> dict | None:
    """The lowest threshold whose precision is >= target (so the highest recall at that
    precision), with the recall and precision there; None when no threshold reaches it."""
    scores, labels = _arrays(scores, labels)
    found = _threshold_for_precision_from_curve(*_curve(scores, labels)[:4], target)
    if found is None:
        return None
    threshold, recall, precision = found
    return {"threshold": threshold, "recall": recall, "precision": precision}


def best_f1(scores, labels) -> dict | None:
    """The threshold with the highest F1 (the lowest such threshold on ties)."""
    scores, labels = _arrays(scores, labels)
    thresholds, tp, fp, total_positive, _ = _curve(scores, labels)
    if total_positive <= 0:
        return None
    precision = _safe_precision(tp, fp)
    recall = tp / total_positive
    denominator = precision + recall
    f1 = np.where(denominator > 0, 2 * precision * recall / np.where(denominator > 0, denominator, 1), 0.0)
    best = float(f1.max())
    k = int(np.flatnonzero(f1 >= best - 1e-12)[-1])
    return {
        "threshold": float(thresholds[k]),
        "f1": float(f1[k]),
        "precision": float(precision[k]),
        "recall": float(recall[k]),
    }


def threshold_sweep(scores, labels, thresholds: Sequence[float]) -> dict:
    """Precision and recall (hit rate of hit pairs) at each given threshold, for plots."""
    scores, labels = _arrays(scores, labels)
    positives = max(int(labels.sum()), 1)
    precision, recall = [], []
    for threshold in thresholds:
        predicted = scores >= threshold
        tp = int(np.sum(predicted & labels))
        fp = int(np.sum(predicted & ~labels))
        precision.append(tp / (tp + fp) if tp + fp else 1.0)
        recall.append(tp / positives)
    return {"thresholds": list(map(float, thresholds)), "precision": precision, "recall": recall}


def margin_figures(positive_scores, negative_scores) -> dict:
    """Mean anchor-positive and anchor-negative cosine, their difference, and triplet accuracy
    (the share of triplets whose positive is strictly closer to the anchor than the negative)."""
    positive_scores = np.asarray(positive_scores, dtype=np.float64)
    negative_scores = np.asarray(negative_scores, dtype=np.float64)
    mean_pos = float(positive_scores.mean()) if positive_scores.size else None
    mean_neg = float(negative_scores.mean()) if negative_scores.size else None
    figures = {
        "mean_pos": mean_pos,
        "mean_neg": mean_neg,
        "margin": mean_pos - mean_neg if mean_pos is not None and mean_neg is not None else None,
    }
    if positive_scores.shape == negative_scores.shape and positive_scores.size:
        figures["triplet_accuracy"] = float(np.mean(positive_scores > negative_scores))
    return figures


def pair_figures(scores, labels, thresholds: Iterable[float], target_precisions: Iterable[float]) -> dict:
    """Every pair figure for one model: ROC-AUC, PR-AUC, means and margin, precision/recall/F1
    at each threshold, the threshold reaching each target precision, and the best-F1 threshold."""
    scores, labels = _arrays(scores, labels)
    curve = _curve(scores, labels)
    figures = margin_figures(scores[labels], scores[~labels])
    figures.pop("triplet_accuracy", None)
    figures.update(
        {
            "pairs": int(scores.size),
            "positives": int(labels.sum()),
            "negatives": int((~labels).sum()),
            "roc_auc": roc_auc(scores, labels),
            "pr_auc": _average_precision_from_curve(curve[1], curve[2], curve[3]),
            "at_threshold": {threshold_key(t): at_threshold(scores, labels, t) for t in thresholds},
            "at_precision": {},
            "best_f1": best_f1(scores, labels),
        }
    )
    for target in target_precisions:
        found = _threshold_for_precision_from_curve(*curve[:4], target)
        figures["at_precision"][threshold_key(target)] = (
            None if found is None else {"threshold": found[0], "recall": found[1], "precision": found[2]}
        )
    return figures


def triplet_figures(positive_scores, negative_scores, thresholds, target_precisions) -> dict:
    """Pair figures over (anchor, positive) hits and (anchor, negative) misses, plus triplet accuracy."""
    positive_scores = np.asarray(positive_scores, dtype=np.float64)
    negative_scores = np.asarray(negative_scores, dtype=np.float64)
    scores = np.concatenate((positive_scores, negative_scores))
    labels = np.concatenate((np.ones(positive_scores.size), np.zeros(negative_scores.size)))
    figures = pair_figures(scores, labels, thresholds, target_precisions)
    figures["triplets"] = int(positive_scores.size)
    figures["triplet_accuracy"] = margin_figures(positive_scores, negative_scores).get("triplet_accuracy")
    return figures


def _resample_figures(scores, labels, weights, order, pair_weights_positive, pos, neg, targets):
    thresholds, tp, fp, total_positive, total_negative = _curve(scores, labels, weights, order)
    figures = {}
    # ROC-AUC by the trapezoid over the (weighted) ROC steps: equal to the rank statistic with ties as 1/2.
    tpr = np.concatenate(([0.0], tp / total_positive))
    fpr = np.concatenate(([0.0], fp / total_negative))
    figures["roc_auc"] = float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2.0))
    figures["pr_auc"] = _average_precision_from_curve(tp, fp, total_positive)
    figures["triplet_accuracy"] = float(np.sum(pair_weights_positive * (pos > neg)) / np.sum(pair_weights_positive))
    figures["margin"] = float(np.sum(pair_weights_positive * (pos - neg)) / np.sum(pair_weights_positive))
    for target in targets:
        found = _threshold_for_precision_from_curve(thresholds, tp, fp, total_positive, target)
        figures[f"recall_at_precision_{threshold_key(target)}"] = 0.0 if found is None else found[1]
    return figures


def bootstrap_deltas(
    base_pos,
    base_neg,
    adapter_pos,
    adapter_neg,
    target_precisions: Iterable[float],
    resamples: int = 1000,
    seed: int = 7,
    level: float = 0.95,
    progress=None,
    groups=None,
) -> dict:
    """Paired bootstrap of adapter-minus-base deltas: resample with replacement (the same draw for
    both models), recompute each figure, and take the percentile interval.

    `groups`: a group id per triplet (e.g. its focus group); when given, whole groups are drawn
    (a group brings all of its triplets), which is what clustered data needs: triplets of one
    anchor or one disease are not independent. Without it, single triplets are drawn.

    Figures: roc_auc, pr_auc, triplet_accuracy, margin, and recall_at_precision_<p> for each target
    (that one re-tunes its threshold on every resample; pass no targets to leave it out). Returns
    {figure: {"delta", "low", "high", "level", "resamples", "unit"}}; the point delta is from the
    full set. Weighted counts replace physical resampling, so each resample costs no sort."""
    arrays = [np.asarray(a, dtype=np.float64) for a in (base_pos, base_neg, adapter_pos, adapter_neg)]
    n = arrays[0].size
    if any(a.size != n for a in arrays):
        raise ValueError("bootstrap needs four arrays of the same length (one score per triplet)")
    if n == 0 or resamples <= 0:
        return {}
    targets = list(target_precisions)
    labels = np.concatenate((np.ones(n, dtype=bool), np.zeros(n, dtype=bool)))
    models = []
    for pos, neg in (arrays[0:2], arrays[2:4]):
        scores = np.concatenate((pos, neg))
        models.append((scores, np.argsort(-scores, kind="mergesort"), pos, neg))

    def figures_for(weights):
        pair_weights = np.concatenate((weights, weights))
        results = [
            _resample_figures(scores, labels, pair_weights, order, weights, pos, neg, targets)
            for scores, order, pos, neg in models
        ]
        return {
            key: results[1][key] - results[0][key]
            for key in results[0]
            if results[0][key] is not None and results[1][key] is not None
        }

    point = figures_for(np.ones(n))
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {key: [] for key in point}
    iterator = range(resamples)
    if progress is not None:
        iterator = progress(iterator)
    if groups is not None:
        group_ids = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
        if group_ids.size != n:
            raise ValueError("bootstrap needs one group id per triplet")
        n_groups = int(group_ids.max()) + 1
    for _ in iterator:
        if groups is None:
            weights = np.bincount(rng.integers(0, n, size=n), minlength=n).astype(np.float64)
        else:
            counts = np.bincount(rng.integers(0, n_groups, size=n_groups), minlength=n_groups)
            weights = counts[group_ids].astype(np.float64)
            if not weights.any():
                continue
        for key, value in figures_for(weights).items():
            samples.setdefault(key, []).append(value)
    alpha = (1.0 - level) / 2.0
    intervals = {}
    for key, delta in point.items():
        values = np.asarray(samples.get(key, []))
        intervals[key] = {
            "delta": float(delta),
            "low": float(np.quantile(values, alpha)) if values.size else None,
            "high": float(np.quantile(values, 1.0 - alpha)) if values.size else None,
            "level": level,
            "resamples": int(values.size),
            "unit": "triplet" if groups is None else "group",
        }
    return intervals
