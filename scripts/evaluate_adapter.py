"""Evaluate a LoRA adapter against its base model as a semantic cache.

Every distinct text (test triplets, calibration triplets and external pairs) is encoded once per
model, base first,
then with the adapter loaded, as L2-normalised embeddings; similarity is cosine. A pair
(anchor, positive) must HIT, a pair (anchor, negative) must MISS; a cache serves a hit when
similarity >= threshold.

Training moves the similarity scale: a threshold tuned for the base model is wrong for the
adapter. `recommended_threshold` gives each model its own threshold for the deploy precision and
shows each model's precision/recall at the other's threshold. The threshold is CHOSEN on the
calibration triplets (--calibration-triplets: the validation split, focus-disjoint from test) and
REPORTED on the test triplets, so the test recall there is what a user would get; without
calibration triplets it is chosen on test itself (chosen_on "test": optimistic).

metrics.json shape (stable; keys sorted; thresholds and precisions keyed as "0.80", "0.95"):

  settings: {thresholds, target_precisions, deploy_precision, bootstrap, seed, batch_size,
             calibration_triplets (path | null), max_calibration_triplets}
  models: {base, adapter, adapter_base_model, embedding_dim, adapter_changes_embeddings,
           max_abs_embedding_change}
  counts: {triplets, distinct_texts, anchors, by_negative_kind: {kind: n}, by_qtype: {qtype: n},
           external_pairs: {name: n}}
  test:
    base | adapter: {
      triplets, pairs, positives, negatives,
      roc_auc, pr_auc, mean_pos, mean_neg, margin, triplet_accuracy,
      at_threshold: {"0.80": {threshold, precision, recall, f1, tp, fp, fn}, ...},
      at_precision: {"0.95": {threshold, recall, precision} | null (unreachable), ...},
      best_f1: {threshold, f1, precision, recall},
      cache: {anchors, positive_queries, negative_queries, negatives_matching_an_anchor,
              rank1_accuracy,
              at_threshold: {"0.80": {threshold, correct_hits, wrong_hits, false_hits, hit_rate,
                                      wrong_hit_rate, false_hit_rate, hit_precision}}}}
    delta: adapter minus base: {roc_auc, pr_auc, mean_pos, mean_neg, margin, triplet_accuracy,
           at_threshold: {t: {precision, recall, f1}}, at_precision: {p: {recall}} (unreachable = 0),
           best_f1: {f1}, cache: {rank1_accuracy, at_threshold: {t: {hit_rate, false_hit_rate,
           hit_precision}}}}
    ci: paired bootstrap over triplets: {roc_auc | pr_auc | triplet_accuracy | margin |
         recall_at_precision_<p>: {delta, low, high, level, resamples}} ({} with --bootstrap 0)
    by_qtype | by_negative_kind: {group: {triplets, base: G, adapter: G}} where G = {roc_auc,
         pr_auc, mean_pos, mean_neg, margin, triplet_accuracy, at_recommended_threshold:
         {threshold, precision, recall, f1} | null}
  external: {name: {file, pairs, positives, negatives, base: P, adapter: P, delta}} where P is the
         pair block above (no triplet_accuracy/cache) plus at_recommended_threshold
  recommended_threshold: {deploy_precision, chosen_on ("val" | "test"), calibration_triplets (n
         triplets the threshold was chosen on), calibration_triplets_available,
         adapter: {threshold, precision, recall, f1 (all on TEST at the chosen threshold),
                   calibration: {precision, recall, f1} (on the set it was chosen on),
                   meets_deploy_precision_on_test} | null, base: {...} | null,
         base_at_adapter_threshold: {threshold, precision, recall, f1} | null,
         adapter_at_base_threshold: {...} | null,
         cache: {base: cache-at-own-threshold | null, adapter: ... | null}, note}
  versions: {python, numpy, torch, transformers, sentence_transformers, peft, matplotlib}
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import platform
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from cache_embed import cache_metrics as cm
from cache_embed.cli import PipelineError, run_main, setup_logging
from cache_embed.files import atomic_output, read_jsonl, read_jsonl_numbered, write_json
from cache_embed.text import comparison_key

LOG = logging.getLogger("evaluate_adapter")
THRESHOLD_NOTE = (
    "Training moves the similarity scale: a threshold tuned for the base model is wrong for the "
    "adapter. Deploy the adapter with its own threshold (recommended_threshold.adapter), and re-tune "
    "it whenever the adapter is retrained."
)
TRUE_LABELS = {"1", "1.0", "true", "yes"}
FALSE_LABELS = {"0", "0.0", "false", "no"}
EXTERNAL_COLUMNS = ("question_1", "question_2", "label")


# ---------------------------------------------------------------- inputs


def load_triplets(path: str | Path) -> list[dict]:
    triplets = []
    for number, record in enumerate(read_jsonl(path), start=1):
        for field in ("anchor", "positive", "negative"):
            value = record.get(field)
            if not isinstance(value, str) or not value.strip():
                raise PipelineError(
                    f"{path}: triplet {number} (id {record.get('id', '?')}) has no text in '{field}';"
                    " regenerate the triplets or remove that record"
                )
        triplets.append(record)
    if not triplets:
        raise PipelineError(f"{path}: no triplets to evaluate; check the generation step's stats")
    return triplets


def _parse_label(value, path, line) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value in (0, 1):
        return int(value)
    text = str(value).strip().casefold()
    if text in TRUE_LABELS:
        return 1
    if text in FALSE_LABELS:
        return 0
    raise PipelineError(
        f"{path}:{line}: label {value!r} is not 1 (same intent) or 0 (different intent); fix that row"
    )


def _check_pair(row: dict, path, line) -> tuple[str, str, int]:
    missing = [column for column in EXTERNAL_COLUMNS if column not in row or row[column] is None]
    if missing:
        raise PipelineError(
            f"{path}:{line}: missing {', '.join(missing)}; each pair needs question_1, question_2 and label"
        )
    texts = []
    for column in ("question_1", "question_2"):
        value = row[column]
        if not isinstance(value, str) or not value.strip():
            raise PipelineError(f"{path}:{line}: '{column}' is empty or not text; fix that row")
        texts.append(value.strip())
    return texts[0], texts[1], _parse_label(row["label"], path, line)


def load_external_pairs(path: str | Path) -> list[tuple[str, str, int]]:
    """Labelled question pairs from CSV (header question_1,question_2,label) or JSONL (one object
    per line with those keys). label: 1 same intent (must hit), 0 different intent (must miss)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: external pair file not found; fix evaluate.external in the config")
    suffix = path.suffix.casefold()
    pairs = []
    if suffix in (".csv", ".tsv"):
        with path.open("r", encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            header = [name.strip() for name in (reader.fieldnames or [])]
            missing = [column for column in EXTERNAL_COLUMNS if column not in header]
            if missing:
                raise PipelineError(
                    f"{path}:1: header lacks column(s) {', '.join(missing)}; the header must name"
                    f" {', '.join(EXTERNAL_COLUMNS)} (found: {', '.join(header) or 'nothing'})"
                )
            reader.fieldnames = header
            for row in reader:
                if not any((value or "").strip() for value in row.values() if isinstance(value, str)):
                    continue
                pairs.append(_check_pair(row, path, reader.line_num))
    elif suffix in (".jsonl", ".ndjson", ".json"):
        for line_number, row in read_jsonl_numbered(path):
            pairs.append(_check_pair(row, path, line_number))
    else:
        raise PipelineError(f"{path}: unknown external pair format '{path.suffix}'; use .csv, .tsv or .jsonl")
    labels = {label for _, _, label in pairs}
    if labels != {0, 1}:
        raise PipelineError(
            f"{path}: needs at least one pair labelled 1 and one labelled 0 (found {len(pairs)} pairs,"
            f" labels {sorted(labels)})"
        )
    return pairs


def calibration_subset(triplets: list[dict], limit: int, seed: int) -> list[dict]:
    """A seeded subset of at most `limit` triplets (0: all), in file order."""
    if limit <= 0 or len(triplets) <= limit:
        return list(triplets)
    rows = np.sort(np.random.default_rng(seed).choice(len(triplets), size=limit, replace=False))
    return [triplets[row] for row in rows]


def parse_external(values: list[str]) -> dict[str, str]:
    external = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise PipelineError(f"--external {value!r}: expected NAME=PATH")
        if name in external:
            raise PipelineError(f"--external: the name '{name}' is given twice")
        external[name] = path
    return external


# ---------------------------------------------------------------- encoding


def encode_all(texts: list[str], base_model: str, adapter: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Encode the texts with the base model, then with the adapter loaded on it."""
    from sentence_transformers import SentenceTransformer

    base_path, adapter_path = Path(base_model), Path(adapter)
    if not (base_path / "modules.json").is_file() and not (base_path / "config.json").is_file():
        raise PipelineError(f"{base_path}: not a sentence-transformers model folder (no modules.json/config.json)")
    if not (adapter_path / "adapter_config.json").is_file():
        raise PipelineError(f"{adapter_path}: not a PEFT adapter folder (no adapter_config.json)")
    LOG.info("loading base model %s", base_path)
    model = SentenceTransformer(str(base_path))
    kwargs = dict(batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=True)
    LOG.info("encoding %d distinct texts with the base model", len(texts))
    base = model.encode(texts, **kwargs)
    LOG.info("loading adapter %s", adapter_path)
    model.load_adapter(str(adapter_path))
    LOG.info("encoding %d distinct texts with the adapter", len(texts))
    tuned = model.encode(texts, **kwargs)
    return np.asarray(base, dtype=np.float32), np.asarray(tuned, dtype=np.float32)


# ---------------------------------------------------------------- figures


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
    delta = {key: _sub(adapter.get(key), base.get(key))
             for key in ("roc_auc", "pr_auc", "mean_pos", "mean_neg", "margin", "triplet_accuracy")
             if key in base or key in adapter}
    delta["at_threshold"] = {
        key: {name: adapter["at_threshold"][key][name] - base["at_threshold"][key][name]
              for name in ("precision", "recall", "f1")}
        for key in base["at_threshold"]
    }
    delta["at_precision"] = {
        key: {"recall": (adapter["at_precision"][key] or {}).get("recall", 0.0)
              - (base["at_precision"][key] or {}).get("recall", 0.0)}
        for key in base["at_precision"]
    }
    delta["best_f1"] = {"f1": _sub((adapter.get("best_f1") or {}).get("f1"), (base.get("best_f1") or {}).get("f1"))}
    if "cache" in base and "cache" in adapter:
        delta["cache"] = {
            "rank1_accuracy": _sub(adapter["cache"]["rank1_accuracy"], base["cache"]["rank1_accuracy"]),
            "at_threshold": {
                key: {name: _sub(adapter["cache"]["at_threshold"][key][name], base["cache"]["at_threshold"][key][name])
                      for name in ("hit_rate", "false_hit_rate", "hit_precision")}
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


def compute_metrics(triplets: list[dict], texts: list[str], embeddings: dict[str, np.ndarray],
                    external: dict[str, dict], thresholds: list[float], targets: list[float],
                    deploy_precision: float, bootstrap: int, seed: int, progress=None,
                    calibration: list[dict] | None = None,
                    calibration_available: int | None = None) -> tuple[dict, dict]:
    """All figures from the embeddings (rows of `texts`). `external`: name -> {file, pairs}.
    `calibration`: triplets (texts among `texts`) on which each model's deploy threshold is chosen;
    None chooses it on the test triplets themselves. Returns (metrics, curves) where curves holds
    the raw scores for plots."""
    index = {text: row for row, text in enumerate(texts)}
    anchor_rows = np.array([index[t["anchor"]] for t in triplets])
    positive_rows = np.array([index[t["positive"]] for t in triplets])
    negative_rows = np.array([index[t["negative"]] for t in triplets])

    # The cache holds each distinct anchor (by comparison key) once.
    anchor_keys, anchor_text_rows, own_anchor = [], [], []
    key_position = {}
    for triplet in triplets:
        key = comparison_key(triplet["anchor"])
        if key not in key_position:
            key_position[key] = len(anchor_keys)
            anchor_keys.append(key)
            anchor_text_rows.append(index[triplet["anchor"]])
        own_anchor.append(key_position[key])
    # The cached question a negative must not be counted against: the one it was drawn from (structure
    # negatives are real questions, often reworded, and may sit in the cache themselves), else its own text.
    anchor_key_of_query = {t["query_id"]: comparison_key(t["anchor"]) for t in triplets if t.get("query_id")}
    negative_keys = [anchor_key_of_query.get(t.get("negative_query_id")) or comparison_key(t["negative"])
                     for t in triplets]

    chosen_on = "test" if calibration is None else "val"
    if calibration is not None:
        if not calibration:
            raise PipelineError("no calibration triplets to choose the threshold on; check the val triplets")
        calibration_rows = tuple(np.array([index[t[field]] for t in calibration])
                                 for field in ("anchor", "positive", "negative"))
    scores = {}
    calibration_scores = {}
    test = {}
    recommended = {}
    for name in ("base", "adapter"):
        emb = embeddings[name]
        pos = _cos(emb, anchor_rows, positive_rows)
        neg = _cos(emb, anchor_rows, negative_rows)
        scores[name] = (pos, neg)
        if calibration is None:
            calibration_scores[name] = (pos, neg)
        else:
            calibration_scores[name] = (_cos(emb, calibration_rows[0], calibration_rows[1]),
                                        _cos(emb, calibration_rows[0], calibration_rows[2]))
        block = cm.triplet_figures(pos, neg, thresholds, targets)
        found = cm.threshold_for_precision(*_pair_arrays(*calibration_scores[name]), deploy_precision)
        recommended[name] = None if found is None else found["threshold"]
        block["cache"] = cm.cache_simulation(
            emb[anchor_text_rows], anchor_keys, emb[positive_rows], own_anchor, emb[negative_rows],
            negative_keys, thresholds,
        )
        test[name] = block
    test["delta"] = delta_block(test["base"], test["adapter"])
    LOG.info("bootstrap: %d paired resamples", bootstrap)
    test["ci"] = cm.bootstrap_deltas(*scores["base"], *scores["adapter"], targets, resamples=bootstrap,
                                     seed=seed, progress=progress)

    for field, out_key in (("qtype", "by_qtype"), ("negative_kind", "by_negative_kind")):
        groups = defaultdict(list)
        for row, triplet in enumerate(triplets):
            groups[str(triplet.get(field) or "unknown")].append(row)
        test[out_key] = {
            group: {
                "triplets": len(rows),
                **{name: group_figures(scores[name][0][rows], scores[name][1][rows], recommended[name])
                   for name in ("base", "adapter")},
            }
            for group, rows in sorted(groups.items())
        }

    # Each model's own threshold (chosen on the calibration pairs, figures on test), and each at the other's.
    rec = {"deploy_precision": deploy_precision, "note": THRESHOLD_NOTE, "cache": {}, "chosen_on": chosen_on,
           "calibration_triplets": len(triplets) if calibration is None else len(calibration),
           "calibration_triplets_available": (len(triplets) if calibration is None
                                              else calibration_available or len(calibration))}
    for name in ("base", "adapter"):
        pair = _pair_arrays(*scores[name])
        rec[name] = _threshold_point(*pair, recommended[name])
        if rec[name] is not None:
            chosen = _threshold_point(*_pair_arrays(*calibration_scores[name]), recommended[name])
            rec[name]["calibration"] = {key: chosen[key] for key in ("precision", "recall", "f1")}
            rec[name]["meets_deploy_precision_on_test"] = bool(rec[name]["precision"] >= deploy_precision - 1e-12)
        emb = embeddings[name]
        rec["cache"][name] = None if recommended[name] is None else cm.cache_simulation(
            emb[anchor_text_rows], anchor_keys, emb[positive_rows], own_anchor, emb[negative_rows],
            negative_keys, [recommended[name]],
        )["at_threshold"].popitem()[1]
    rec["base_at_adapter_threshold"] = _threshold_point(*_pair_arrays(*scores["base"]), recommended["adapter"])
    rec["adapter_at_base_threshold"] = _threshold_point(*_pair_arrays(*scores["adapter"]), recommended["base"])

    external_out = {}
    external_scores = {}
    for name, spec in external.items():
        pairs = spec["pairs"]
        left = np.array([index[a] for a, _, _ in pairs])
        right = np.array([index[b] for _, b, _ in pairs])
        labels = np.array([label for _, _, label in pairs])
        entry = {"file": spec["file"], "pairs": len(pairs), "positives": int(labels.sum()),
                 "negatives": int((labels == 0).sum())}
        external_scores[name] = {}
        for model in ("base", "adapter"):
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
            "anchors": len(anchor_keys),
            "by_negative_kind": dict(sorted(Counter(str(t.get("negative_kind") or "unknown") for t in triplets).items())),
            "by_qtype": dict(sorted(Counter(str(t.get("qtype") or "unknown") for t in triplets).items())),
            "external_pairs": {name: len(spec["pairs"]) for name, spec in external.items()},
        },
        "models": {
            "embedding_dim": int(base_emb.shape[1]) if base_emb.ndim == 2 else None,
            "adapter_changes_embeddings": bool(np.any(np.abs(base_emb - tuned_emb) > 1e-6)),
            "max_abs_embedding_change": float(np.max(np.abs(base_emb - tuned_emb))) if base_emb.size else 0.0,
        },
    }
    curves = {"test": scores, "external": external_scores, "recommended": recommended, "chosen_on": chosen_on}
    return metrics, curves


def versions() -> dict:
    found = {"python": platform.python_version(), "numpy": np.__version__}
    for module in ("torch", "transformers", "sentence_transformers", "peft", "matplotlib"):
        try:
            found[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - a missing optional package is recorded, not fatal
            found[module] = None
    return found


# ---------------------------------------------------------------- plots


def make_plots(curves: dict, deploy_precision: float, plots_dir: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    colours = {"base": "#7f7f7f", "adapter": "#1f77b4"}
    recommended = curves["recommended"]
    chosen_on = curves.get("chosen_on", "test")
    written = []

    def save(figure, name):
        path = plots_dir / name
        with atomic_output(path, "wb") as handle:
            figure.savefig(handle, format="png", dpi=110, bbox_inches="tight")
        plt.close(figure)
        written.append(path)

    # 1. Similarity histograms: hit pairs vs miss pairs, per model.
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    bins = np.linspace(min(min(p.min(), n.min()) for p, n in curves["test"].values()), 1.0, 51)
    for axis, name in zip(axes, ("base", "adapter")):
        pos, neg = curves["test"][name]
        axis.hist(pos, bins=bins, alpha=0.6, label="anchor-positive (must hit)", color="#2ca02c")
        axis.hist(neg, bins=bins, alpha=0.6, label="anchor-negative (must miss)", color="#d62728")
        if recommended[name] is not None:
            axis.axvline(recommended[name], color="black", linestyle="--",
                         label=f"threshold for P>={deploy_precision:g} (chosen on {chosen_on}): {recommended[name]:.3f}")
        axis.set_title(f"{name}")
        axis.set_xlabel("cosine similarity")
        axis.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("pairs")
    figure.suptitle("Similarity of test pairs")
    save(figure, "similarity_histograms.png")

    # 2. Precision-recall curves.
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for name in ("base", "adapter"):
        scores, labels = _pair_arrays(*curves["test"][name])
        curve = cm.precision_recall_curve(scores, labels)
        ap = cm.average_precision(scores, labels)
        axis.step(curve["recall"], curve["precision"], where="post", color=colours[name], label=f"{name} (AP {ap:.3f})")
        if recommended[name] is not None:
            point = cm.at_threshold(scores, labels, recommended[name])
            axis.plot(point["recall"], point["precision"], "o", color=colours[name])
    axis.axhline(deploy_precision, color="black", linestyle=":", linewidth=1, label=f"deploy precision {deploy_precision:g}")
    axis.set_xlabel("recall (hit rate of paraphrases)")
    axis.set_ylabel("precision of hits")
    axis.set_xlim(0, 1.01)
    axis.set_ylim(0, 1.01)
    axis.legend(fontsize=8, loc="lower left")
    axis.set_title("Precision-recall, test triplets")
    save(figure, "precision_recall.png")

    # 3. Precision and hit rate against threshold.
    figure, axis = plt.subplots(figsize=(7.5, 4.5))
    low = min(min(p.min(), n.min()) for p, n in curves["test"].values())
    grid = np.linspace(max(-1.0, math.floor(low * 20) / 20), 1.0, 201)
    for name in ("base", "adapter"):
        sweep = cm.threshold_sweep(*_pair_arrays(*curves["test"][name]), grid)
        axis.plot(grid, sweep["precision"], color=colours[name], label=f"{name} precision")
        axis.plot(grid, sweep["recall"], color=colours[name], linestyle="--", label=f"{name} hit rate (recall)")
        if recommended[name] is not None:
            axis.axvline(recommended[name], color=colours[name], linestyle=":", linewidth=1.5,
                         label=f"{name} threshold {recommended[name]:.3f} (chosen on {chosen_on})")
    axis.axhline(deploy_precision, color="black", linestyle=":", linewidth=1)
    axis.set_xlabel("threshold (cosine similarity)")
    axis.set_ylabel("rate")
    axis.set_ylim(0, 1.02)
    axis.legend(fontsize=8, loc="lower left")
    axis.set_title("The threshold moves: each model needs its own")
    save(figure, "threshold_sweep.png")
    return written


# ---------------------------------------------------------------- markdown


def _fmt(value, digits=3):
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ci(ci: dict, key: str) -> str:
    entry = ci.get(key)
    if not entry or entry.get("low") is None:
        return "n/a"
    return f"[{entry['low']:+.3f}, {entry['high']:+.3f}]"


def threshold_provenance(rec: dict) -> list[str]:
    """Sentences saying where the threshold was chosen and where its figures are measured."""
    if rec.get("chosen_on") == "val":
        return [f"Each threshold was CHOSEN on {rec.get('calibration_triplets')} validation triplets (the lowest threshold"
                " reaching the deploy precision there) and its precision/recall/F1 are MEASURED on the test triplets,"
                " which share no focus with validation: that is what a user would get."]
    return ["Each threshold was chosen on the test triplets themselves (no calibration triplets given), so the"
            " test recall at it is optimistic; pass --calibration-triplets (the val triplets) to choose it elsewhere."]


def precision_warnings(rec: dict) -> list[str]:
    """One warning per model whose test precision at its chosen threshold is under the deploy precision."""
    target = rec.get("deploy_precision")
    warnings = []
    for name in ("adapter", "base"):
        point = rec.get(name)
        if not point or target is None or point.get("precision") is None:
            continue
        if point["precision"] < target - 1e-12:
            warnings.append(f"the {name}'s threshold {_fmt(point['threshold'], 4)} reaches precision"
                            f" {_fmt((point.get('calibration') or {}).get('precision'))} on the set it was chosen on but only"
                            f" {_fmt(point['precision'])} on test, under the deploy precision {target}: expect more wrong hits"
                            " than planned, or raise the threshold.")
    return warnings


def render_markdown(metrics: dict) -> str:
    test = metrics["test"]
    base, adapter, delta, ci = test["base"], test["adapter"], test["delta"], test["ci"]
    rec = metrics["recommended_threshold"]
    lines = ["# Metrics: adapter vs base model as a semantic cache", ""]
    lines += [f"Test triplets: {metrics['counts']['triplets']}, distinct cached anchors: {metrics['counts']['anchors']}.", ""]
    lines += ["## Summary (test split)", "", "| figure | base | adapter | delta | 95% CI of delta |", "|---|---|---|---|---|"]
    for key in ("roc_auc", "pr_auc", "triplet_accuracy", "mean_pos", "mean_neg", "margin"):
        lines.append(f"| {key} | {_fmt(base.get(key))} | {_fmt(adapter.get(key))} | {_fmt(delta.get(key))} | {_ci(ci, key)} |")
    for key in base["at_precision"]:
        b, a = base["at_precision"][key], adapter["at_precision"][key]
        lines.append(
            f"| recall at precision {key} | {_fmt((b or {}).get('recall'))} (t={_fmt((b or {}).get('threshold'))})"
            f" | {_fmt((a or {}).get('recall'))} (t={_fmt((a or {}).get('threshold'))})"
            f" | {_fmt(delta['at_precision'][key]['recall'])} | {_ci(ci, f'recall_at_precision_{key}')} |"
        )
    lines += ["", "## Recommended threshold", "", f"> {rec['note']}", ""]
    lines += [f"Deploy precision: {rec['deploy_precision']}", ""] + threshold_provenance(rec) + [""]
    lines += ["| | threshold | chosen-on precision | chosen-on recall | TEST precision | TEST recall | TEST F1 |",
              "|---|---|---|---|---|---|---|"]
    for label, key in (("adapter (its own threshold)", "adapter"), ("base (its own threshold)", "base"),
                       ("base at the adapter's threshold", "base_at_adapter_threshold"),
                       ("adapter at the base's threshold", "adapter_at_base_threshold")):
        point = rec.get(key)
        if point is None:
            lines.append(f"| {label} | unreachable | | | | | |")
        else:
            chosen = point.get("calibration") or {}
            lines.append(f"| {label} | {_fmt(point['threshold'], 4)} | {_fmt(chosen.get('precision'))} | {_fmt(chosen.get('recall'))}"
                         f" | {_fmt(point['precision'])} | {_fmt(point['recall'])} | {_fmt(point['f1'])} |")
    warnings = precision_warnings(rec)
    if warnings:
        for warning in warnings:
            lines += ["", f"> **WARNING:** {warning}"]
    lines += ["", "## At fixed thresholds", "", "| threshold | base P | base R | adapter P | adapter R | base cache hit rate | adapter cache hit rate | base false-hit rate | adapter false-hit rate |", "|---|---|---|---|---|---|---|---|---|"]
    for key in base["at_threshold"]:
        b, a = base["at_threshold"][key], adapter["at_threshold"][key]
        bc, ac = base["cache"]["at_threshold"][key], adapter["cache"]["at_threshold"][key]
        lines.append(f"| {key} | {_fmt(b['precision'])} | {_fmt(b['recall'])} | {_fmt(a['precision'])} | {_fmt(a['recall'])}"
                     f" | {_fmt(bc['hit_rate'])} | {_fmt(ac['hit_rate'])} | {_fmt(bc['false_hit_rate'])} | {_fmt(ac['false_hit_rate'])} |")
    lines += ["", f"Cache rank-1 accuracy (paraphrase finds its own anchor first): base {_fmt(base['cache']['rank1_accuracy'])},"
              f" adapter {_fmt(adapter['cache']['rank1_accuracy'])}.", ""]
    for key, title in (("by_negative_kind", "By negative kind"), ("by_qtype", "By question type")):
        lines += [f"## {title}", "", "| group | triplets | base ROC-AUC | adapter ROC-AUC | base triplet acc. | adapter triplet acc. | base margin | adapter margin |", "|---|---|---|---|---|---|---|---|"]
        for group, entry in test[key].items():
            lines.append(f"| {group} | {entry['triplets']} | {_fmt(entry['base']['roc_auc'])} | {_fmt(entry['adapter']['roc_auc'])}"
                         f" | {_fmt(entry['base']['triplet_accuracy'])} | {_fmt(entry['adapter']['triplet_accuracy'])}"
                         f" | {_fmt(entry['base']['margin'])} | {_fmt(entry['adapter']['margin'])} |")
        lines.append("")
    if metrics["external"]:
        lines += ["## External labelled pairs", "", "| set | pairs | base ROC-AUC | adapter ROC-AUC | base PR-AUC | adapter PR-AUC | base P/R at own threshold | adapter P/R at own threshold |", "|---|---|---|---|---|---|---|---|"]
        for name, entry in metrics["external"].items():
            b, a = entry["base"]["at_recommended_threshold"], entry["adapter"]["at_recommended_threshold"]
            lines.append(f"| {name} | {entry['pairs']} | {_fmt(entry['base']['roc_auc'])} | {_fmt(entry['adapter']['roc_auc'])}"
                         f" | {_fmt(entry['base']['pr_auc'])} | {_fmt(entry['adapter']['pr_auc'])}"
                         f" | {_fmt((b or {}).get('precision'))}/{_fmt((b or {}).get('recall'))}"
                         f" | {_fmt((a or {}).get('precision'))}/{_fmt((a or {}).get('recall'))} |")
        lines.append("")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- CLI


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triplets", required=True, help="test triplets JSONL")
    parser.add_argument("--base-model", required=True, help="sentence-transformers model folder")
    parser.add_argument("--adapter", required=True, help="PEFT LoRA adapter folder")
    parser.add_argument("--output-json", required=True)
    parser.add_argument("--output-md", required=True)
    parser.add_argument("--plots-dir", required=True)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.8, 0.85, 0.9])
    parser.add_argument("--target-precisions", type=float, nargs="+", default=[0.95, 0.99])
    parser.add_argument("--deploy-precision", type=float, default=0.95)
    parser.add_argument("--bootstrap", type=int, default=1000, help="paired resamples for the CIs; 0 skips them")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--external", nargs="*", default=[], metavar="NAME=PATH",
                        help="labelled pair files (CSV or JSONL: question_1, question_2, label)")
    parser.add_argument("--calibration-triplets", default=None, metavar="PATH",
                        help="triplets JSONL (the val split) on which each model's deploy threshold is chosen;"
                             " without it the threshold is chosen on the test triplets (optimistic)")
    parser.add_argument("--max-calibration-triplets", type=int, default=3000, metavar="N",
                        help="seeded subset of the calibration triplets (0: all)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    for value in args.target_precisions + [args.deploy_precision]:
        if not 0 < value <= 1:
            parser.error(f"precision {value} is outside (0, 1]")
    if args.bootstrap < 0 or args.batch_size < 1 or args.max_calibration_triplets < 0:
        parser.error("--bootstrap and --max-calibration-triplets must be >= 0 and --batch-size >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    from tqdm import tqdm

    triplets = load_triplets(args.triplets)
    external = {name: {"file": path, "pairs": load_external_pairs(path)} for name, path in parse_external(args.external).items()}
    calibration, available = None, None
    if args.calibration_triplets:
        every = load_triplets(args.calibration_triplets)
        available = len(every)
        calibration = calibration_subset(every, args.max_calibration_triplets, args.seed)
        LOG.info("choosing thresholds on %d of %d calibration triplets from %s", len(calibration), available,
                 args.calibration_triplets)
    else:
        LOG.warning("no --calibration-triplets: the threshold is chosen on the test triplets (optimistic recall)")
    texts = sorted({text for t in triplets + (calibration or []) for text in (t["anchor"], t["positive"], t["negative"])}
                   | {text for spec in external.values() for a, b, _ in spec["pairs"] for text in (a, b)})
    base, tuned = encode_all(texts, args.base_model, args.adapter, args.batch_size)
    if not np.any(np.abs(base - tuned) > 1e-6):
        LOG.warning("the adapter does not change any embedding: is it untrained or not applied?")
    thresholds = sorted(set(args.thresholds))
    targets = sorted(set(args.target_precisions))
    metrics, curves = compute_metrics(
        triplets, texts, {"base": base, "adapter": tuned}, external, thresholds, targets,
        args.deploy_precision, args.bootstrap, args.seed,
        progress=lambda it: tqdm(it, desc="bootstrap", file=sys.stderr, mininterval=2),
        calibration=calibration, calibration_available=available,
    )
    adapter_config = Path(args.adapter) / "adapter_config.json"
    metrics["models"].update({
        "base": str(args.base_model),
        "adapter": str(args.adapter),
        "adapter_base_model": json.loads(adapter_config.read_text(encoding="utf-8")).get("base_model_name_or_path"),
    })
    metrics["settings"] = {
        "thresholds": thresholds, "target_precisions": targets, "deploy_precision": args.deploy_precision,
        "bootstrap": args.bootstrap, "seed": args.seed, "batch_size": args.batch_size,
        "calibration_triplets": args.calibration_triplets, "max_calibration_triplets": args.max_calibration_triplets,
    }
    metrics["versions"] = versions()
    make_plots(curves, args.deploy_precision, args.plots_dir)
    write_json(args.output_json, metrics)
    with atomic_output(args.output_md) as handle:
        handle.write(render_markdown(metrics))
    test = metrics["test"]
    rec = metrics["recommended_threshold"]
    LOG.info("ROC-AUC base %.4f adapter %.4f; recommended threshold (chosen on %s) base %s adapter %s",
             test["base"]["roc_auc"], test["adapter"]["roc_auc"], rec["chosen_on"],
             _fmt((rec["base"] or {}).get("threshold"), 4), _fmt((rec["adapter"] or {}).get("threshold"), 4))
    for warning in precision_warnings(rec):
        LOG.warning("%s", warning)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
