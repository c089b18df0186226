"""Every figure of metrics.json from the embeddings: pair figures, the operational cache
simulation, the deploy threshold with its bound, intervals over focus groups, and the verdict.

The shape is documented in evaluate_adapter.py's docstring and in the README (evaluation section).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict

import numpy as np

from cache_embed.common.cli import PipelineError, library_versions
from cache_embed.common.numbers import fmt, pct
from cache_embed.data.equivalence import EquivalenceIndex
from cache_embed.evaluate import pair_metrics as cm
from cache_embed.evaluate import simulation
from cache_embed.evaluate.inputs import attach_groups

LOG = logging.getLogger("evaluate_adapter")
THRESHOLD_NOTE = (
    "Training moves the similarity scale: a threshold tuned for the base model is wrong for the "
    "adapter. Deploy the adapter with its own threshold (recommended_threshold.adapter), and re-tune "
    "it whenever the adapter is retrained."
)
PAIR_THRESHOLD_NOTE = (
    "A secondary figure: the lowest threshold reaching the deploy precision on validation PAIRS "
    "(anchor-positive against anchor-negative). Pair precision ignores every other cached question, "
    "so it says little about the wrong share a cache serves; deploy recommended_threshold.<model>."
)
MODELS = ("base", "adapter")


def _cos(embeddings, left, right) -> np.ndarray:
    return np.clip(np.einsum("ij,ij->i", embeddings[left], embeddings[right]).astype(np.float64), -1.0, 1.0)


def _sub(a, b):
    return None if a is None or b is None else a - b


def _threshold_point(scores, labels, threshold):
    if threshold is None:
        return None
    figures = cm.at_threshold(scores, labels, threshold)
    return {key: figures[key] for key in ("threshold", "precision", "recall", "f1")}


def _pair_arrays(pos, neg):
    return np.concatenate((pos, neg)), np.concatenate((np.ones(pos.size), np.zeros(neg.size)))


def delta_block(base: dict, adapter: dict) -> dict:
    delta = {
        key: _sub(adapter.get(key), base.get(key))
        for key in ("roc_auc", "pr_auc", "mean_pos", "mean_neg", "margin", "triplet_accuracy")
        if key in base or key in adapter
    }
    delta["at_threshold"] = {
        key: {
            name: adapter["at_threshold"][key][name] - base["at_threshold"][key][name]
            for name in ("precision", "recall", "f1")
        }
        for key in base["at_threshold"]
    }
    delta["at_precision"] = {
        key: {
            "recall": (adapter["at_precision"][key] or {}).get("recall", 0.0)
            - (base["at_precision"][key] or {}).get("recall", 0.0)
        }
        for key in base["at_precision"]
    }
    delta["best_f1"] = {"f1": _sub((adapter.get("best_f1") or {}).get("f1"), (base.get("best_f1") or {}).get("f1"))}
    if "cache" in base and "cache" in adapter:
        delta["cache"] = {
            "rank1_correct": _sub(adapter["cache"]["rank1_correct"], base["cache"]["rank1_correct"]),
            "p_chr_auc": _sub(adapter["cache"]["p_chr"]["auc"], base["cache"]["p_chr"]["auc"]),
            "at_threshold": {
                key: {
                    name: _sub(adapter["cache"]["at_threshold"][key][name], base["cache"]["at_threshold"][key][name])
                    for name in ("repeat_hit_rate", "novel_false_hit_rate", "wrong_share")
                }
                for key in base["cache"]["at_threshold"]
            },
        }
    return delta


def group_figures(pos, neg, recommended) -> dict:
    scores, labels = _pair_arrays(pos, neg)
    figures = cm.margin_figures(pos, neg)
    figures["roc_auc"] = cm.roc_auc(scores, labels)
    figures["pr_auc"] = cm.average_precision(scores, labels)
    figures["at_recommended_threshold"] = _threshold_point(scores, labels, recommended)
    return figures


def _embedder(embeddings: np.ndarray, index: dict):
    return lambda texts: embeddings[[index[text] for text in texts]]


def _ci_entry(entry: dict | None) -> dict:
    entry = entry or {}
    return {"low": entry.get("low"), "high": entry.get("high")}


def verdict(rec: dict) -> str:
    """One line computed from the deploy figures: which model to deploy at which threshold, and
    whether the bound held on test; every clause is conditional on the numbers."""
    budget = rec["max_wrong_share"]
    parts = []
    usable = {}
    for name in MODELS:
        entry = rec.get(name)
        if not entry or entry.get("threshold") is None:
            continue
        test = entry["test"]
        usable[name] = entry["bound_met_on_val"] and test["bound_held"]
    adapter, base = rec.get("adapter"), rec.get("base")
    if adapter and adapter.get("threshold") is not None:
        test = adapter["test"]
        if not adapter["bound_met_on_val"]:
            parts.append(
                f"No adapter threshold meets the {pct(budget)} wrong-share bound on validation; the closest"
                f" ({fmt(adapter['threshold'], 3)}) serves {pct(test['wrong_share'])} wrong answers on test."
            )
        elif test["bound_held"]:
            parts.append(
                f"Deploy the adapter at {fmt(adapter['threshold'], 3)}: on test it answers"
                f" {pct(test['repeat_hit_rate'])} of repeats with {pct(test['wrong_share'])} of served answers"
                f" wrong, within the {pct(budget)} budget."
            )
        else:
            # The test interval (Clopper-Pearson over focus groups) tells a clear miss from a near one.
            interval = test.get("wrong_share_cp") or {}
            low, high = interval.get("low"), interval.get("high")
            near = low is not None and low <= budget
            parts.append(
                f"The adapter's threshold {fmt(adapter['threshold'], 3)} met the bound on validation but serves"
                f" {pct(test['wrong_share'])} wrong answers on test"
                + (f" (95% CI {pct(low)} to {pct(high)})" if low is not None else "")
                + f", over the {pct(budget)} budget"
                + (
                    ", though the interval reaches under it: raise it for a margin, or check it on your own traffic."
                    if near
                    else ": raise it."
                )
            )
    if base and base.get("threshold") is not None and adapter and adapter.get("threshold") is not None:
        delta = (rec.get("delta") or {}).get("repeat_hit_rate") or {}
        low, high = delta.get("low"), delta.get("high")
        if usable.get("adapter") and not usable.get("base"):
            parts.append("The base model does not keep the bound at its own threshold.")
        elif usable.get("adapter") and usable.get("base") and low is not None:
            if low > 0:
                parts.append(
                    f"Both keep the bound; the adapter answers more repeats ({pct(delta['delta'])} more, 95% CI"
                    f" {pct(low)} to {pct(high)})."
                )
            elif high < 0:
                parts.append(
                    f"Both keep the bound; the base answers more repeats ({pct(-delta['delta'])} more, 95% CI"
                    f" {pct(-high)} to {pct(-low)})."
                )
            else:
                parts.append(
                    "Both keep the bound; their repeat hit rates do not differ clearly"
                    f" (adapter minus base 95% CI {pct(low)} to {pct(high)})."
                )
        elif not usable.get("adapter") and usable.get("base"):
            parts.append(
                f"The base model keeps the bound at {fmt(base['threshold'], 3)}, answering"
                f" {pct(base['test']['repeat_hit_rate'])} of repeats."
            )
    return " ".join(parts) or "No deploy threshold could be computed."


def compute_metrics(
    triplets: list[dict],
    texts: list[str],
    embeddings: dict[str, np.ndarray],
    external: dict[str, dict],
    thresholds: list[float],
    targets: list[float],
    deploy_precision: float,
    bootstrap: int,
    seed: int,
    progress=None,
    calibration: list[dict] | None = None,
    calibration_available: int | None = None,
    *,
    test_records: list[dict] | None = None,
    calibration_records: list[dict] | None = None,
    calibration_distractors: list[str] = (),
    equivalence_mode: str = "medquad",
    repeat_share: float = 0.5,
    max_wrong_share: float = 0.05,
    level: float = 0.95,
) -> tuple[dict, dict]:
    """All figures from the embeddings (rows of `texts`). `external`: name -> {file, pairs}.
    `calibration`: triplets (texts among `texts`) on which each model's deploy threshold is chosen;
    None chooses it on the test triplets themselves. `test_records` / `calibration_records`: the
    query records of those splits (equivalence and focus groups); None judges by identity and
    groups by anchor. Returns (metrics, curves) where curves holds what the plots need."""
    index = {text: row for row, text in enumerate(texts)}
    triplets, n_groups = attach_groups(triplets, test_records)
    anchor_rows = np.array([index[t["anchor"]] for t in triplets])
    positive_rows = np.array([index[t["positive"]] for t in triplets])
    negative_rows = np.array([index[t["negative"]] for t in triplets])
    chosen_on = "test" if calibration is None else "val"
    if calibration is not None and not calibration:
        raise PipelineError("no calibration triplets to choose the threshold on; check the val triplets")

    test_index = EquivalenceIndex(test_records, equivalence_mode) if test_records else None
    test_plan = simulation.build_plan(triplets, test_index)
    if calibration is None:
        calibration_plan, calibration_triplets = test_plan, triplets
    else:
        calibration_triplets, _ = attach_groups(calibration, calibration_records)
        calibration_index = EquivalenceIndex(calibration_records, equivalence_mode) if calibration_records else None
        calibration_plan = simulation.build_plan(calibration_triplets, calibration_index, calibration_distractors)
    calibration_rows = tuple(
        np.array([index[t[field]] for t in calibration_triplets]) for field in ("anchor", "positive", "negative")
    )

    scores, calibration_scores, test, lookups, calibration_lookups = {}, {}, {}, {}, {}
    pair_threshold, deploy, sweeps = {}, {}, {}
    for name in MODELS:
        emb = embeddings[name]
        pos, neg = _cos(emb, anchor_rows, positive_rows), _cos(emb, anchor_rows, negative_rows)
        scores[name] = (pos, neg)
        calibration_scores[name] = (
            _cos(emb, calibration_rows[0], calibration_rows[1]),
            _cos(emb, calibration_rows[0], calibration_rows[2]),
        )
        block = cm.triplet_figures(pos, neg, thresholds, targets)
        found = cm.threshold_for_precision(*_pair_arrays(*calibration_scores[name]), deploy_precision)
        pair_threshold[name] = None if found is None else found["threshold"]
        lookups[name] = simulation.simulate(test_plan, _embedder(emb, index))
        calibration_lookups[name] = (
            lookups[name] if calibration is None else simulation.simulate(calibration_plan, _embedder(emb, index))
        )
        block["cache"] = simulation.cache_block(test_plan, lookups[name], thresholds, repeat_share, level)
        sweeps[name] = simulation.Sweep(lookups[name], repeat_share, level=level, groups=test_plan.lookup_groups)
        deploy[name] = simulation.choose_threshold(
            simulation.Sweep(
                calibration_lookups[name], repeat_share, level=level, groups=calibration_plan.lookup_groups
            ),
            max_wrong_share,
        )
        test[name] = block
    test["delta"] = delta_block(test["base"], test["adapter"])
    groups = [t["group"] for t in triplets]
    LOG.info("bootstrap: %d paired resamples over %d focus groups", bootstrap, n_groups)
    test["ci"] = cm.bootstrap_deltas(
        *scores["base"], *scores["adapter"], [], resamples=bootstrap, seed=seed, progress=progress, groups=groups
    )
    recommended = {name: deploy[name]["threshold"] for name in MODELS}
    cache_ci = (
        simulation.bootstrap_operating_points(
            lookups,
            recommended,
            test_plan.repeat_group,
            test_plan.novel_group,
            repeat_share,
            bootstrap,
            seed + 1,
            level,
            progress=progress,
        )
        if bootstrap > 0
        else {}
    )

    for field, out_key in (
        ("qtype", "by_qtype"),
        ("negative_kind", "by_negative_kind"),
        ("positive_kind", "by_positive_kind"),
    ):
        by_value = defaultdict(list)
        for row, triplet in enumerate(triplets):
            by_value[str(triplet.get(field) or "unknown")].append(row)
        test[out_key] = {
            value: {
                "triplets": len(rows),
                **{
                    name: group_figures(scores[name][0][rows], scores[name][1][rows], recommended[name])
                    for name in MODELS
                },
            }
            for value, rows in sorted(by_value.items())
        }
    # Per paraphrase kind, also the cache's rank-1: which kinds of repeat find their own question.
    for kind, entry in test["by_positive_kind"].items():
        # The lookups are the same for every model; only their rank-1 differs.
        entry["repeat_lookups"] = (test["adapter"]["cache"]["rank1_by_positive_kind"].get(kind) or {}).get("repeats", 0)
        for name in MODELS:
            found = test[name]["cache"]["rank1_by_positive_kind"].get(kind) or {}
            entry[name]["cache_rank1_correct"] = found.get("rank1_correct")

    # The deploy threshold: chosen on the validation cache simulation, measured on test.
    rec = {
        "rule": (
            "the lowest threshold whose one-sided upper confidence bound (Clopper-Pearson on the effective"
            " sample size, focus groups as the independent units) on the wrong share of served answers, in the"
            " validation cache simulation, is at most max_wrong_share"
        ),
        "max_wrong_share": max_wrong_share,
        "repeat_share": repeat_share,
        "level": level,
        "chosen_on": chosen_on,
        "equivalence": equivalence_mode if test_records else "identity",
        "calibration_triplets": len(calibration_triplets),
        "calibration_triplets_available": (
            len(triplets) if calibration is None else calibration_available or len(calibration)
        ),
        "calibration_cache": {
            key: calibration_plan.counts[key]
            for key in ("cached_entries", "distractor_entries", "repeat_lookups", "novel_lookups")
        },
        "test_cache": {key: test_plan.counts[key] for key in ("cached_entries", "repeat_lookups", "novel_lookups")},
        "note": THRESHOLD_NOTE,
    }
    for name in MODELS:
        choice = deploy[name]
        if choice["threshold"] is None:
            rec[name] = None
            continue
        threshold = choice["threshold"]
        at_test = sweeps[name].at(threshold)
        model_ci = cache_ci.get(name) or {}
        rec[name] = {
            "threshold": threshold,
            "bound_met_on_val": choice["bound_met"],
            "val": {
                key: choice[key]
                for key in (
                    "wrong_share",
                    "wrong_share_upper",
                    "repeat_hit_rate",
                    "repeat_wrong_rate",
                    "novel_false_hit_rate",
                    "served_share",
                )
            },
            "test": {
                **{
                    key: at_test[key]
                    for key in (
                        "wrong_share",
                        "wrong_share_upper",
                        "repeat_hit_rate",
                        "repeat_wrong_rate",
                        "novel_false_hit_rate",
                        "served_share",
                    )
                },
                "wrong_share_ci": _ci_entry(model_ci.get("wrong_share")),
                "wrong_share_cp": {
                    key: value
                    for key, value in sweeps[name].interval(threshold, level).items()
                    if key in ("low", "high", "n_effective")
                },
                "repeat_hit_rate_ci": _ci_entry(model_ci.get("repeat_hit_rate")),
                "novel_false_hit_rate_ci": _ci_entry(model_ci.get("novel_false_hit_rate")),
                "bound_held": at_test["wrong_share"] is not None and at_test["wrong_share"] <= max_wrong_share + 1e-12,
            },
        }
        pairs = _pair_arrays(*scores[name])
        rec[name]["test"]["pair"] = _threshold_point(*pairs, threshold)
    rec["delta"] = {figure: entry for figure, entry in (cache_ci.get("delta") or {}).items()}
    rec["bootstrap"] = {key: cache_ci[key] for key in ("unit", "groups", "resamples", "level") if key in cache_ci}
    rec["base_at_adapter_threshold"] = (
        None if recommended["adapter"] is None else sweeps["base"].at(recommended["adapter"])
    )
    rec["adapter_at_base_threshold"] = (
        None if recommended["base"] is None else sweeps["adapter"].at(recommended["base"])
    )

    # The pair-based threshold, kept as a secondary, named figure.
    pair = {"deploy_precision": deploy_precision, "chosen_on": chosen_on, "note": PAIR_THRESHOLD_NOTE}
    for name in MODELS:
        point = _threshold_point(*_pair_arrays(*scores[name]), pair_threshold[name])
        if point is not None:
            chosen = _threshold_point(*_pair_arrays(*calibration_scores[name]), pair_threshold[name])
            point["calibration"] = {key: chosen[key] for key in ("precision", "recall", "f1")}
            point["meets_deploy_precision_on_test"] = bool(point["precision"] >= deploy_precision - 1e-12)
            point["cache"] = sweeps[name].at(pair_threshold[name])
        pair[name] = point
    pair["base_at_adapter_threshold"] = _threshold_point(*_pair_arrays(*scores["base"]), pair_threshold["adapter"])
    pair["adapter_at_base_threshold"] = _threshold_point(*_pair_arrays(*scores["adapter"]), pair_threshold["base"])
    rec["pair_threshold"] = pair
    rec["verdict"] = verdict(rec)

    external_out, external_scores = {}, {}
    for name, spec in external.items():
        pairs = spec["pairs"]
        left = np.array([index[a] for a, _, _ in pairs])
        right = np.array([index[b] for _, b, _ in pairs])
        labels = np.array([label for _, _, label in pairs])
        entry = {
            "file": spec["file"],
            "pairs": len(pairs),
            "positives": int(labels.sum()),
            "negatives": int((labels == 0).sum()),
        }
        external_scores[name] = {}
        for model in MODELS:
            pair_scores = _cos(embeddings[model], left, right)
            external_scores[name][model] = (pair_scores, labels)
            block = cm.pair_figures(pair_scores, labels, thresholds, targets)
            block["at_recommended_threshold"] = _threshold_point(pair_scores, labels, recommended[model])
            entry[model] = block
        entry["delta"] = delta_block(entry["base"], entry["adapter"])
        external_out[name] = entry

    base_emb, tuned_emb = embeddings["base"], embeddings["adapter"]
    metrics = {
        "test": test,
        "external": external_out,
        "recommended_threshold": rec,
        "counts": {
            "triplets": len(triplets),
            "distinct_texts": len(texts),
            "anchors": test_plan.counts["cached_entries"],
            "focus_groups": n_groups,
            "cache": test_plan.counts,
            "by_negative_kind": dict(
                sorted(Counter(str(t.get("negative_kind") or "unknown") for t in triplets).items())
            ),
            "by_qtype": dict(sorted(Counter(str(t.get("qtype") or "unknown") for t in triplets).items())),
            "by_positive_kind": dict(
                sorted(Counter(str(t.get("positive_kind") or "unknown") for t in triplets).items())
            ),
            "external_pairs": {name: len(spec["pairs"]) for name, spec in external.items()},
        },
        "models": {
            "embedding_dim": int(base_emb.shape[1]) if base_emb.ndim == 2 else None,
            "adapter_changes_embeddings": bool(np.any(np.abs(base_emb - tuned_emb) > 1e-6)),
            "max_abs_embedding_change": float(np.max(np.abs(base_emb - tuned_emb))) if base_emb.size else 0.0,
        },
    }
    curves = {
        "test": scores,
        "external": external_scores,
        "recommended": recommended,
        "chosen_on": chosen_on,
        "sweeps": sweeps,
        "max_wrong_share": max_wrong_share,
        "pair_threshold": pair_threshold,
    }
    return metrics, curves


EVALUATION_LIBRARIES = ("numpy", "scipy", "torch", "transformers", "sentence-transformers", "peft", "matplotlib")


def versions() -> dict:
    return library_versions(EVALUATION_LIBRARIES)
