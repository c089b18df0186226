"""Every figure of metrics.json from the embeddings: pair figures, the operational cache
simulation, the deploy threshold with its bound, intervals over focus groups, and the verdict.

metrics.json shape (keys sorted; thresholds and precisions keyed as "0.80", "0.95"):

  settings: {thresholds, target_precisions, deploy_precision, max_wrong_share, repeat_share, equivalence,
             bootstrap, seed, batch_size, calibration_triplets (path | null), max_calibration_triplets}
  models: {base, adapter, adapter_base_model, embedding_dim, adapter_changes_embeddings, max_abs_embedding_change}
  counts: {triplets, distinct_texts, anchors, focus_groups, cache: {cached_entries, repeat_lookups, novel_lookups,
           repeats_with_equivalent_entries, novel_lookups_with_entries_left_out,
           novel_lookups_with_equivalents_left_out, entries_left_out}, by_negative_kind, by_qtype, external_pairs}
  test:
    base | adapter: {triplets, pairs, positives, negatives, roc_auc, pr_auc, mean_pos, mean_neg, margin,
      triplet_accuracy, at_threshold: {t: {threshold, precision, recall, f1, tp, fp, fn}},
      at_precision: {p: {threshold, recall, precision} | null}, best_f1: {threshold, f1, precision, recall},
      cache: {<counts as above>, repeat_share, rank1_correct, rank1_identity,
              at_threshold: {t: {threshold, repeat_hit_rate, repeat_wrong_rate, novel_false_hit_rate,
                                 served_share, wrong_share, wrong_share_upper, correct_hits,
                                 correct_by_equivalence, wrong_hits, false_hits}},
              p_chr: {auc, points: [[threshold, served_share, precision], ...]}}}
    delta: adapter minus base (pair figures; cache: rank1_correct, p_chr_auc, at_threshold.{repeat_hit_rate,
           novel_false_hit_rate, wrong_share})
    ci: paired bootstrap over focus groups: {roc_auc | pr_auc | triplet_accuracy | margin:
        {delta, low, high, level, resamples, unit}} ({} with --bootstrap 0)
    by_qtype | by_negative_kind: {value: {triplets, base: G, adapter: G}}, G = {roc_auc, pr_auc, mean_pos,
        mean_neg, margin, triplet_accuracy, at_recommended_threshold: {threshold, precision, recall, f1} | null}
  external: {name: {file, pairs, positives, negatives, base: P, adapter: P, delta}}
  recommended_threshold: {rule, max_wrong_share, repeat_share, level, chosen_on ("val" | "test"), equivalence,
      calibration_triplets, calibration_triplets_available, padding, novel_traffic, note, verdict, headline_size,
      sizes: [{cache_size, names, label, calibration_cache, test_cache: {cached_entries, distractor_entries,
               repeat_lookups, novel_lookups}, verdict,
          adapter | base: {threshold (null: no threshold keeps the bound on val), bound_met_on_val, evaluated_at,
              val: {wrong_share, wrong_share_upper, repeat_hit_rate, repeat_wrong_rate, novel_false_hit_rate,
                    served_share},
              test: {<the same>, wrong_share_cp: {low, high, n_effective}, reading (held | consistent | missed),
                     wrong_share_ci, repeat_hit_rate_ci, novel_false_hit_rate_ci: {low, high} (group bootstrap)}},
          delta: {figure: {delta, low, high}} (adapter minus base, each at its own threshold),
          bootstrap: {unit, groups, resamples, skipped_resamples, level},
          base_at_adapter_threshold | adapter_at_base_threshold: cache figures at the other's threshold,
          adapter_at_smallest_threshold: the smallest size's adapter threshold read at this size (not the first)}],
      pair_threshold: {deploy_precision, chosen_on, note, adapter | base: {threshold, precision, recall, f1,
          calibration, meets_deploy_precision_on_test, cache} | null, base_at_adapter_threshold,
          adapter_at_base_threshold}}
  (by_qtype, by_*_kind and external figures `at_recommended_threshold` are at the largest size's thresholds;
   external `at_size_threshold` at each size's)
  versions: {python, numpy, scipy, torch, transformers, sentence-transformers, peft, matplotlib}
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict

import numpy as np

from cache_embed.common.cli import PipelineError, library_versions
from cache_embed.common.numbers import pct
from cache_embed.data.equivalence import EquivalenceIndex
from cache_embed.evaluate import pair_metrics as cm
from cache_embed.evaluate import simulation
from cache_embed.evaluate.cache_sizes import resolve_sizes
from cache_embed.evaluate.deploy_threshold import size_block
from cache_embed.evaluate.inputs import attach_groups
from cache_embed.evaluate.pair_sets import by_kind, phrasing_figures
from cache_embed.evaluate.threshold import RULE

LOG = logging.getLogger("evaluate_adapter")
PADDING_NOTE = (
    "At each size the calibration cache (val) holds the calibrate half's questions padded with train questions"
    " (outside the validation and test focus groups), and the test cache the test questions padded with train and"
    " val questions (outside the test focus groups), in a seeded order; a hit on a padding question is wrong. The"
    " adapter was trained on train questions, so padding with them may place them differently than questions it"
    " never saw: docs/decisions.md records the measurement."
)
NOVEL_TRAFFIC_NOTE = (
    "The novel traffic is made of hard negatives only (questions close to a cached one by design), so the wrong"
    " share at a 50/50 mix is a stress figure: ordinary novel traffic is easier to refuse."
)
THRESHOLD_NOTE = (
    "Training moves the similarity scale: a threshold tuned for the base model is wrong for the "
    "adapter. Deploy the adapter with its own threshold (recommended_threshold.sizes[].adapter), and re-tune "
    "it whenever the adapter is retrained."
)
PAIR_THRESHOLD_NOTE = (
    "A secondary figure: the lowest threshold reaching the deploy precision on validation PAIRS "
    "(anchor-positive against anchor-negative). Pair precision ignores every other cached question, "
    "so it says little about the wrong share a cache serves; deploy the threshold of recommended_threshold.sizes."
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


def guard_figures(entry: dict, name: str, block: dict, max_wrong_share: float) -> dict:
    """The adapter's pair precision on the guard set at this size's deploy threshold, and whether it
    is under 1 - max_wrong_share (a sentence for the verdict when it is)."""
    size = str(block["cache_size"])
    precision = entry["phrasing"]["adapter"].get(f"precision@{size}") or {}
    recall = entry["phrasing"]["adapter"].get(f"recall@{size}") or {}
    value = precision.get("value")
    under = value is not None and value < 1 - max_wrong_share - 1e-12
    sentence = (
        f"On naturally phrased pairs ({name}, validation), the adapter's threshold serves with pair precision"
        f" {pct(value)} [{pct(precision.get('low'))}, {pct(precision.get('high'))}], under the"
        f" {pct(1 - max_wrong_share)} the budget asks, catching {pct(recall.get('value'))} of the rewordings: check"
        " the threshold on your own traffic before relying on it."
        if under
        else ""
    )
    return {
        "set": name,
        "precision": precision or None,
        "recall": recall or None,
        "required_precision": 1 - max_wrong_share,
        "under": under,
        "sentence": sentence,
    }


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
    cache_sizes: tuple[str, ...] = ("test_cache",),
    calibration_padding: list[str] = (),
    test_padding: list[str] = (),
    equivalence_mode: str = "medquad",
    repeat_share: float = 0.5,
    max_wrong_share: float = 0.05,
    level: float = 0.95,
    phrasing_guard: str | None = None,
) -> tuple[dict, dict]:
    """All figures from the embeddings (rows of `texts`). `external`: name -> {file, pairs}.
    `calibration`: triplets (texts among `texts`) on which each model's deploy threshold is chosen;
    None chooses it on the test triplets themselves. `test_records` / `calibration_records`: the
    query records of those splits (equivalence and focus groups); None judges by identity and
    groups by anchor. `cache_sizes`: the sizes (cache_embed.evaluate.cache_sizes) the threshold is
    chosen for, each cache padded with the first questions of `calibration_padding` /
    `test_padding`. `phrasing_guard`: the external set (validation data only) whose pair precision at
    each deploy threshold the verdict checks. Returns (metrics, curves) where curves holds what the
    plots need."""
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
        calibration_triplets, calibration_index = triplets, test_index
    else:
        calibration_triplets, _ = attach_groups(calibration, calibration_records)
        calibration_index = EquivalenceIndex(calibration_records, equivalence_mode) if calibration_records else None
    calibration_entries = simulation.cached_entry_count(calibration_triplets)
    test_entries = test_plan.counts["cached_entries"]
    sizes = resolve_sizes(
        list(cache_sizes),
        test_entries=test_entries,
        test_padding=len(test_padding),
        calibration_entries=calibration_entries,
        calibration_padding=len(calibration_padding) if calibration is not None else len(test_padding),
    )
    calibration_rows = tuple(
        np.array([index[t[field]] for t in calibration_triplets]) for field in ("anchor", "positive", "negative")
    )

    scores, calibration_scores, test, lookups, pair_threshold = {}, {}, {}, {}, {}
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
        block["cache"] = simulation.cache_block(test_plan, lookups[name], thresholds, repeat_share, level)
        test[name] = block
    test["delta"] = delta_block(test["base"], test["adapter"])
    groups = [t["group"] for t in triplets]
    LOG.info("bootstrap: %d paired resamples over %d focus groups", bootstrap, n_groups)
    test["ci"] = cm.bootstrap_deltas(
        *scores["base"], *scores["adapter"], [], resamples=bootstrap, seed=seed, progress=progress, groups=groups
    )

    # The deploy threshold at each cache size: chosen on the validation cache, measured on test.
    size_blocks, sweeps = [], {}
    for size in sizes:
        sized_test_plan = (
            test_plan
            if size.entries == test_entries
            else simulation.build_plan(triplets, test_index, test_padding[: size.entries - test_entries])
        )
        calibration_plan = (
            sized_test_plan
            if calibration is None
            else simulation.build_plan(
                calibration_triplets, calibration_index, calibration_padding[: size.entries - calibration_entries]
            )
        )
        sized_lookups, calibration_lookups = {}, {}
        for name in MODELS:
            embed = _embedder(embeddings[name], index)
            sized_lookups[name] = (
                lookups[name] if sized_test_plan is test_plan else simulation.simulate(sized_test_plan, embed)
            )
            calibration_lookups[name] = (
                sized_lookups[name] if calibration is None else simulation.simulate(calibration_plan, embed)
            )
        LOG.info(
            "cache size %s: calibration cache %d questions, test cache %d",
            size.label,
            calibration_plan.counts["cached_entries"],
            sized_test_plan.counts["cached_entries"],
        )
        block, sweeps[size.entries] = size_block(
            size,
            calibration_plan,
            sized_test_plan,
            calibration_lookups,
            sized_lookups,
            repeat_share=repeat_share,
            max_wrong_share=max_wrong_share,
            level=level,
            bootstrap=bootstrap,
            seed=seed + 1,
            progress=progress,
            smallest=size_blocks[0] if size_blocks else None,
        )
        size_blocks.append(block)
    headline = size_blocks[-1]
    recommended = {name: (headline[name] or {}).get("threshold") for name in MODELS}

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

    rec = {
        "rule": RULE,
        "max_wrong_share": max_wrong_share,
        "repeat_share": repeat_share,
        "level": level,
        "chosen_on": chosen_on,
        "equivalence": equivalence_mode if test_records else "identity",
        "calibration_triplets": len(calibration_triplets),
        "calibration_triplets_available": (
            len(triplets) if calibration is None else calibration_available or len(calibration)
        ),
        "padding": PADDING_NOTE,
        "novel_traffic": NOVEL_TRAFFIC_NOTE,
        "note": THRESHOLD_NOTE,
        "sizes": size_blocks,
        "headline_size": headline["cache_size"],
    }

    # The pair-based threshold, kept as a secondary, named figure.
    test_sweeps = (
        sweeps[test_entries]
        if test_entries in sweeps
        else {
            name: simulation.Sweep(lookups[name], repeat_share, level=level, groups=test_plan.lookup_groups)
            for name in MODELS
        }
    )
    pair = {"deploy_precision": deploy_precision, "chosen_on": chosen_on, "note": PAIR_THRESHOLD_NOTE}
    for name in MODELS:
        point = _threshold_point(*_pair_arrays(*scores[name]), pair_threshold[name])
        if point is not None:
            chosen = _threshold_point(*_pair_arrays(*calibration_scores[name]), pair_threshold[name])
            point["calibration"] = {key: chosen[key] for key in ("precision", "recall", "f1")}
            point["meets_deploy_precision_on_test"] = bool(point["precision"] >= deploy_precision - 1e-12)
            point["cache"] = test_sweeps[name].at(pair_threshold[name])
        pair[name] = point
    pair["base_at_adapter_threshold"] = _threshold_point(*_pair_arrays(*scores["base"]), pair_threshold["adapter"])
    pair["adapter_at_base_threshold"] = _threshold_point(*_pair_arrays(*scores["adapter"]), pair_threshold["base"])
    rec["pair_threshold"] = pair

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
            block["at_size_threshold"] = {
                str(size["cache_size"]): _threshold_point(pair_scores, labels, (size[model] or {}).get("threshold"))
                for size in size_blocks
            }
            entry[model] = block
        entry["delta"] = delta_block(entry["base"], entry["adapter"])
        entry["phrasing"] = phrasing_figures(
            {model: external_scores[name][model][0] for model in MODELS},
            labels,
            spec.get("sources"),
            {
                model: {str(size["cache_size"]): (size[model] or {}).get("threshold") for size in size_blocks}
                for model in MODELS
            },
            deploy_precision,
            bootstrap,
            seed + 2,
            level,
        )
        if spec.get("kinds") is not None:
            entry["by_kind"] = by_kind(
                {model: external_scores[name][model][0] for model in MODELS}, labels, spec["kinds"], recommended
            )
        external_out[name] = entry
    if phrasing_guard is not None:
        if phrasing_guard not in external_out:
            raise PipelineError(f"the phrasing guard set {phrasing_guard!r} is not among the external pair sets")
        for block in size_blocks:
            block["phrasing_guard"] = guard_figures(
                external_out[phrasing_guard], phrasing_guard, block, max_wrong_share
            )
            if block["phrasing_guard"]["under"]:
                block["verdict"] += " " + block["phrasing_guard"]["sentence"]
    rec["verdict"] = " ".join(block["verdict"] for block in reversed(size_blocks))

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
        "sweeps": sweeps[headline["cache_size"]],
        "headline_size": headline["label"],
        "max_wrong_share": max_wrong_share,
        "pair_threshold": pair_threshold,
    }
    return metrics, curves


EVALUATION_LIBRARIES = ("numpy", "scipy", "torch", "transformers", "sentence-transformers", "peft", "matplotlib")


def versions() -> dict:
    return library_versions(EVALUATION_LIBRARIES)
