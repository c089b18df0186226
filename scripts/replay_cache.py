"""replay_cache: replay held-out traffic through a real vector database (Milvus) at growing cache sizes.

The cache holds questions embedded with a model (the base, or the exported merged model), in a
Milvus collection (Milvus Lite from a local file; the same client code reaches a Milvus server by
URI) with metric COSINE and each index type (FLAT: exact; HNSW: approximate). Two kinds of lookups
are replayed against it, each at the model's own deploy threshold from metrics.json:

- repeats: the test paraphrases. A hit is correct when the served cached question is equivalent to
  the paraphrased one (cache_embed.data.equivalence), wrong otherwise.
- novel questions: the test negatives, with their own source question and its equivalents left
  out of the cache. Any hit is a false hit.

The cache grows in tiers (test anchors; + every MedQuAD question outside the test focus groups;
+ the training paraphrases), so the figures show what happens to the wrong share when the cache
holds 4k, 43k or 140k entries. Per size: repeat hit rate, wrong share among served hits (at a
stated traffic mix of repeats and novel questions), novel false-hit rate, lookup latency (embedding
and search separately), how often the approximate index's nearest neighbour differs from exact
search, and the lowest threshold that keeps the wrong share under the bound.
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from cache_embed.common.cli import PipelineError, library_versions, run_main, setup_logging
from cache_embed.common.files import atomic_output, read_json, read_jsonl, write_json
from cache_embed.common.text import comparison_key
from cache_embed.data.equivalence import EquivalenceIndex
from cache_embed.deploy.vector_cache import MILVUS_LIBRARIES, IndexSpec, MilvusVectorCache, exact_nearest, open_client

LOG = logging.getLogger("replay_cache")
SIZE_TIERS = ("test_anchors", "medquad", "train_paraphrases")
SIZE_LABELS = {
    "test_anchors": "test anchors",
    "medquad": "+ all questions outside the test focus groups",
    "train_paraphrases": "+ training paraphrases",
}
MODELS = ("base", "adapter")
SWEEP = np.round(np.arange(0.30, 0.9951, 0.005), 3)
SCORE_TIE = 1e-5


# ---------------------------------------------------------------- inputs


def read_records(paths: list[str]) -> list[dict]:
    records = []
    for path in paths:
        records.extend(read_jsonl(path))
    return records


def read_triplets(path: str) -> list[dict]:
    triplets = list(read_jsonl(path))
    for number, triplet in enumerate(triplets, start=1):
        for key in ("anchor", "positive", "negative", "query_id"):
            if not triplet.get(key):
                raise PipelineError(
                    f"{path}: triplet {number} (id {triplet.get('id')}) has no {key!r}; regenerate the triplets"
                )
    return triplets


def deploy_thresholds(metrics_path: str) -> dict[str, float | None]:
    """Each model's deploy threshold: metrics.json recommended_threshold.<model>.threshold."""
    metrics = read_json(metrics_path)
    rec = metrics.get("recommended_threshold")
    if not isinstance(rec, dict):
        raise PipelineError(f"{metrics_path}: no recommended_threshold block; rerun evaluate_adapter")
    out = {}
    for model in MODELS:
        block = rec.get(model)
        out[model] = None if block is None else block.get("threshold")
        if out[model] is None:
            LOG.warning(
                "%s: recommended_threshold.%s has no threshold; only the sweep is reported for it", metrics_path, model
            )
    if out["adapter"] is None:
        raise PipelineError(
            f"{metrics_path}: recommended_threshold.adapter.threshold is missing; "
            "the replay needs the adapter's deploy threshold"
        )
    return out


def build_entries(
    test_triplets: list[dict], records: list[dict], test_ids: set[str], train_triplets: list[dict], sizes: list[str]
) -> tuple[list[dict], list[dict]]:
    """Cached questions in tier order (each tier adds to the one before), distinct by comparison key.
    Returns (entries with text, query_id, tier; one summary per size)."""
    candidates: dict[str, list[tuple[str, str]]] = {
        "test_anchors": sorted({(t["query_id"], t["anchor"]) for t in test_triplets}),
        "medquad": sorted((r["id"], r["query"]) for r in records if r["id"] not in test_ids),
        "train_paraphrases": sorted({(t["query_id"], t["positive"]) for t in train_triplets}),
    }
    entries, summaries, seen = [], [], set()
    for tier in SIZE_TIERS:
        if tier not in sizes:
            continue
        added = duplicates = 0
        for query_id, text in candidates[tier]:
            key = comparison_key(text)
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            entries.append({"text": text, "query_id": query_id, "tier": tier})
            added += 1
        summaries.append(
            {
                "name": tier,
                "label": SIZE_LABELS[tier],
                "entries": len(entries),
                "added": added,
                "duplicates_dropped": duplicates,
            }
        )
    return entries, summaries


def build_lookups(test_triplets: list[dict], max_lookups: int, seed: int) -> dict[str, list[dict]]:
    """Distinct repeats (paraphrase, its question) and novel questions (negative, its source), each
    a seeded sample of at most `max_lookups` (0 = all), in a stable order."""
    repeats = sorted({(t["positive"], t["query_id"]) for t in test_triplets})
    novel = sorted({(t["negative"], t.get("negative_query_id") or "") for t in test_triplets})
    out = {}
    for kind, items in (("repeats", repeats), ("novel", novel)):
        if max_lookups and len(items) > max_lookups:
            items = sorted(random.Random(f"{seed}-{kind}").sample(items, max_lookups))
        out[kind] = [{"text": text, "query_id": query_id or None} for text, query_id in items]
    return out


def novel_exclusions(novel: list[dict], entries: list[dict], equivalence: EquivalenceIndex) -> list[np.ndarray]:
    """Per novel question, the cache rows to leave out: its source question, everything equivalent
    to the source, and any entry with its exact text (a cache holding it would rightly hit)."""
    rows_by_query = defaultdict(list)
    row_by_key = {}
    for row, entry in enumerate(entries):
        rows_by_query[entry["query_id"]].append(row)
        row_by_key[comparison_key(entry["text"])] = row
    out = []
    for lookup in novel:
        rows = set()
        if lookup["query_id"]:
            for query_id in equivalence.equivalents(lookup["query_id"]):
                rows.update(rows_by_query.get(query_id, ()))
        same_text = row_by_key.get(comparison_key(lookup["text"]))
        if same_text is not None:
            rows.add(same_text)
        out.append(np.array(sorted(rows), dtype=np.int64))
    return out


# ---------------------------------------------------------------- encoding


def load_model(path: str):
    from sentence_transformers import SentenceTransformer

    if not (Path(path) / "modules.json").is_file():
        raise PipelineError(f"{path}: not a sentence-transformers model folder (no modules.json)")
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


def encode(model, texts: list[str], batch_size: int) -> np.ndarray:
    embeddings = model.encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.asarray(embeddings, dtype=np.float32)


def percentiles_ms(seconds: np.ndarray) -> dict:
    if len(seconds) == 0:
        return {"p50": None, "p99": None, "mean": None, "n": 0}
    ms = np.asarray(seconds) * 1000.0
    return {
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "mean": float(ms.mean()),
        "n": len(ms),
    }


# ---------------------------------------------------------------- judging


def nearest_allowed(
    ids: np.ndarray, scores: np.ndarray, exclusions: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From top-k results, the first row not excluded; `unresolved` marks rows whose top-k were all
    excluded (to be searched again with a filter)."""
    chosen_ids = np.full(len(ids), -1, dtype=np.int64)
    chosen_scores = np.full(len(ids), -np.inf)
    unresolved = np.zeros(len(ids), dtype=bool)
    for row, excluded in enumerate(exclusions):
        mask = ~np.isin(ids[row], excluded) & (ids[row] >= 0)
        if mask.any():
            column = int(np.argmax(mask))
            chosen_ids[row], chosen_scores[row] = ids[row, column], scores[row, column]
        else:
            unresolved[row] = True
    return chosen_ids, chosen_scores, unresolved


def outcome_arrays(repeat_ids, repeat_scores, novel_scores, lookups, entries, equivalence) -> dict:
    """Per lookup: top-1 similarity, and for repeats whether the served entry is correct (equivalent)
    and whether it is correct through equivalence rather than identity."""
    correct = np.zeros(len(repeat_ids), dtype=bool)
    by_equivalence = np.zeros(len(repeat_ids), dtype=bool)
    for row, (entry_row, lookup) in enumerate(zip(repeat_ids, lookups["repeats"], strict=False)):
        if entry_row < 0:
            continue
        served = entries[entry_row]["query_id"]
        correct[row] = equivalence.equivalent(served, lookup["query_id"])
        by_equivalence[row] = correct[row] and served != lookup["query_id"]
    return {
        "repeat_scores": np.asarray(repeat_scores, dtype=np.float64),
        "repeat_correct": correct,
        "repeat_by_equivalence": by_equivalence,
        "novel_scores": np.asarray(novel_scores, dtype=np.float64),
    }


def figures_at(outcomes: dict, threshold: float, repeat_share: float) -> dict:
    served = outcomes["repeat_scores"] >= threshold
    correct = int(np.sum(served & outcomes["repeat_correct"]))
    wrong = int(np.sum(served & ~outcomes["repeat_correct"]))
    through_equivalence = int(np.sum(served & outcomes["repeat_by_equivalence"]))
    false_hits = int(np.sum(outcomes["novel_scores"] >= threshold))
    n_rep, n_nov = len(outcomes["repeat_scores"]), len(outcomes["novel_scores"])
    hit_rate = correct / n_rep if n_rep else None
    wrong_rate = wrong / n_rep if n_rep else None
    false_rate = false_hits / n_nov if n_nov else None
    mixed_wrong = mixed_served = None
    if n_rep and n_nov:
        mixed_wrong = repeat_share * wrong_rate + (1 - repeat_share) * false_rate
        mixed_served = repeat_share * (correct + wrong) / n_rep + (1 - repeat_share) * false_rate
    served_all = correct + wrong + false_hits
    return {
        "threshold": float(threshold),
        "repeats": n_rep,
        "correct_hits": correct,
        "correct_through_equivalence": through_equivalence,
        "wrong_hits": wrong,
        "repeat_hit_rate": hit_rate,
        "repeat_wrong_hit_rate": wrong_rate,
        "novel": n_nov,
        "false_hits": false_hits,
        "novel_false_hit_rate": false_rate,
        "wrong_share": (mixed_wrong / mixed_served) if mixed_served else None,
        "wrong_share_unweighted": (wrong + false_hits) / served_all if served_all else None,
        "served_share": mixed_served,
    }


def threshold_for_bound(outcomes: dict, bound: float, repeat_share: float) -> dict:
    """The lowest threshold on the sweep grid from which on the wrong share stays at or under
    `bound` (no served hits counts as under), with what it gives; the closest one if none does."""
    shares = []
    for threshold in SWEEP:
        share = figures_at(outcomes, threshold, repeat_share)["wrong_share"]
        shares.append(0.0 if share is None else share)
    shares = np.array(shares)
    ok = shares <= bound + 1e-12
    # Suffix-and: the grid point and every higher one meet the bound.
    stable = np.flip(np.logical_and.accumulate(np.flip(ok)))
    if stable.any():
        threshold = float(SWEEP[int(np.argmax(stable))])
        return {"bound": bound, "met": True, **figures_at(outcomes, threshold, repeat_share)}
    closest = float(SWEEP[int(np.argmin(shares))])
    return {"bound": bound, "met": False, **figures_at(outcomes, closest, repeat_share)}


def sweep(outcomes: dict, repeat_share: float, step: int = 2) -> list[dict]:
    keys = ("threshold", "repeat_hit_rate", "wrong_share", "novel_false_hit_rate")
    return [{key: figures_at(outcomes, t, repeat_share)[key] for key in keys} for t in SWEEP[::step]]


# ---------------------------------------------------------------- the replay


def latency_sample(lookups: dict, args) -> np.ndarray:
    """The seeded lookups (rows of repeats + novel) timed one at a time."""
    count = len(lookups["repeats"]) + len(lookups["novel"])
    return np.random.default_rng(args.seed).choice(count, size=min(args.latency_samples, count), replace=False)


def embed_latencies(paths: dict[str, str], lookups: dict, args) -> dict[str, np.ndarray]:
    """One-question embedding time of each model, the models taking turns question by question, so
    that load from other processes falls on both alike and their latencies compare."""
    texts = [lookup["text"] for lookup in lookups["repeats"] + lookups["novel"]]
    texts = [texts[i] for i in latency_sample(lookups, args)]
    models = {name: load_model(path) for name, path in paths.items()}
    for model in models.values():
        model.encode(texts[:2], normalize_embeddings=True, show_progress_bar=False)  # warm-up
    seconds = {name: np.empty(len(texts)) for name in models}
    for row, text in enumerate(texts):
        for name, model in models.items():
            start = time.perf_counter()
            model.encode([text], normalize_embeddings=True, show_progress_bar=False)
            seconds[name][row] = time.perf_counter() - start
    return seconds


def replay_model(
    model_name: str,
    model_path: str,
    entries: list[dict],
    sizes: list[dict],
    lookups: dict,
    exclusions: list[np.ndarray],
    equivalence: EquivalenceIndex,
    threshold: float | None,
    args,
    client,
    timings: dict,
    embed_seconds: np.ndarray,
) -> dict:
    model = load_model(model_path)
    start = time.perf_counter()
    entry_vectors = encode(model, [entry["text"] for entry in entries], args.batch_size)
    timings[f"{model_name}_encode_cache_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    repeat_vectors = encode(model, [lookup["text"] for lookup in lookups["repeats"]], args.batch_size)
    novel_vectors = encode(model, [lookup["text"] for lookup in lookups["novel"]], args.batch_size)
    timings[f"{model_name}_encode_lookups_seconds"] = time.perf_counter() - start
    sample = latency_sample(lookups, args)
    latency_vectors = np.concatenate([repeat_vectors, novel_vectors])[sample]
    LOG.info(
        "%s: %d cached questions and %d + %d lookups encoded",
        model_name,
        len(entries),
        len(repeat_vectors),
        len(novel_vectors),
    )
    del model

    results = {
        "model_path": str(model_path),
        "deploy_threshold": threshold,
        "embed_latency_ms": percentiles_ms(embed_seconds),
        "encode_throughput_per_s": len(entries) / max(timings[f"{model_name}_encode_cache_seconds"], 1e-9),
        "sizes": {},
    }
    per_index: dict[str, dict[str, dict]] = defaultdict(dict)
    for index_type in args.index_types:
        spec = IndexSpec.make(index_type, args.hnsw_m, args.hnsw_ef_construction, args.hnsw_ef)
        cache = MilvusVectorCache(client, f"replay_{model_name}_{index_type.lower()}", entry_vectors.shape[1], spec)
        begin = 0
        for size in sizes:
            end = size["entries"]
            ids = np.arange(begin, end, dtype=np.int64)
            insert_seconds = cache.insert(ids, entry_vectors[begin:end])
            begin = end
            start = time.perf_counter()
            repeat_ids, repeat_scores = cache.search(repeat_vectors, limit=1)
            novel_top_ids, novel_top_scores = cache.search(novel_vectors, limit=args.search_limit)
            in_cache = [excluded[excluded < end] for excluded in exclusions]
            novel_ids, novel_scores, unresolved = nearest_allowed(novel_top_ids, novel_top_scores, in_cache)
            for row in np.flatnonzero(unresolved):
                ids_row, scores_row = cache.search(
                    novel_vectors[row : row + 1], limit=1, exclude=in_cache[row].tolist()
                )
                novel_ids[row], novel_scores[row] = ids_row[0, 0], scores_row[0, 0]
            search_seconds = time.perf_counter() - start
            latency = cache.timed_single_searches(latency_vectors)
            per_index[size["name"]][index_type] = {
                "repeat_ids": repeat_ids[:, 0],
                "repeat_scores": repeat_scores[:, 0],
                "novel_ids": novel_ids,
                "novel_scores": novel_scores,
                "unresolved_novel": int(unresolved.sum()),
                "search_latency_ms": percentiles_ms(latency),
                "insert_seconds": insert_seconds,
                "batched_search_seconds": search_seconds,
                "index": cache.describe(),
            }
            LOG.info(
                "%s %s at %d entries: insert %.1f s, %d lookups in %.1f s, single-search p50 %.1f ms",
                model_name,
                index_type,
                end,
                insert_seconds,
                len(repeat_ids) + len(novel_ids),
                search_seconds,
                per_index[size["name"]][index_type]["search_latency_ms"]["p50"],
            )
        cache.drop()

    for size in sizes:
        found = per_index[size["name"]]
        entry_view = entry_vectors[: size["entries"]]
        block = {"entries": size["entries"], "index": {}, "approx_vs_exact": {}}
        for index_type, raw in found.items():
            outcomes = outcome_arrays(
                raw["repeat_ids"], raw["repeat_scores"], raw["novel_scores"], lookups, entries, equivalence
            )
            raw["outcomes"] = outcomes
            block["index"][index_type] = {
                "index": raw["index"],
                "at_deploy_threshold": (
                    None if threshold is None else figures_at(outcomes, threshold, args.repeat_share)
                ),
                "search_latency_ms": raw["search_latency_ms"],
                "insert_seconds": raw["insert_seconds"],
                "batched_search_seconds": raw["batched_search_seconds"],
                "novel_resolved_by_filtered_search": raw["unresolved_novel"],
            }
        exact = found.get("FLAT")
        if exact is not None:
            # Milvus FLAT against numpy on the same embeddings: the replay's own exactness check.
            numpy_ids, numpy_scores = exact_nearest(repeat_vectors, entry_view, limit=1)
            block["flat_vs_numpy"] = {
                "repeat_lookups": len(numpy_ids),
                "max_abs_score_difference": float(np.max(np.abs(numpy_scores[:, 0] - exact["repeat_scores"])))
                if len(numpy_ids)
                else 0.0,
                "nearest_differs": int(
                    np.sum(
                        (numpy_ids[:, 0] != exact["repeat_ids"])
                        & (np.abs(numpy_scores[:, 0] - exact["repeat_scores"]) > SCORE_TIE)
                    )
                ),
            }
            block["threshold_for_bound"] = threshold_for_bound(
                exact["outcomes"], args.max_wrong_share, args.repeat_share
            )
            block["sweep"] = sweep(exact["outcomes"], args.repeat_share)
            for index_type, raw in found.items():
                if index_type == "FLAT":
                    continue
                block["approx_vs_exact"][index_type] = approx_difference(exact, raw, threshold, args.repeat_share)
        results["sizes"][size["name"]] = block
    return results


def approx_difference(exact: dict, approx: dict, threshold: float | None, repeat_share: float) -> dict:
    """How often the approximate index's nearest neighbour differs from exact search (ties in
    similarity count as the same), and how often that changes what the cache does at the threshold."""
    ids = np.concatenate([exact["repeat_ids"], exact["novel_ids"]])
    scores = np.concatenate([exact["repeat_scores"], exact["novel_scores"]])
    approx_ids = np.concatenate([approx["repeat_ids"], approx["novel_ids"]])
    approx_scores = np.concatenate([approx["repeat_scores"], approx["novel_scores"]])
    differs = (ids != approx_ids) & (np.abs(scores - approx_scores) > SCORE_TIE)
    out = {
        "lookups": len(ids),
        "nearest_differs": int(differs.sum()),
        "nearest_differs_share": float(differs.mean()) if len(ids) else None,
        "mean_similarity_lost": float(np.mean(scores[differs] - approx_scores[differs])) if differs.any() else 0.0,
    }
    if threshold is not None:
        e, a = exact["outcomes"], approx["outcomes"]
        served_e = np.concatenate([e["repeat_scores"], e["novel_scores"]]) >= threshold
        served_a = np.concatenate([a["repeat_scores"], a["novel_scores"]]) >= threshold
        ok_e = np.concatenate([e["repeat_correct"], np.zeros(len(e["novel_scores"]), bool)])
        ok_a = np.concatenate([a["repeat_correct"], np.zeros(len(a["novel_scores"]), bool)])
        changed = (served_e != served_a) | (served_e & (ok_e != ok_a))
        out["outcome_differs_at_deploy_threshold"] = int(changed.sum())
    return out


# ---------------------------------------------------------------- outputs


def _pct(value, digits=1) -> str:
    if value is None:
        return "n/a"
    if 0 < abs(value) * 100 < 10**-digits:
        return f"{value * 100:.1e}%"
    return f"{value * 100:.{digits}f}%"


def _num(value, digits=3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def trend_sentence(metrics: dict, model: str) -> str:
    """One computed sentence: how the wrong share at the deploy threshold moves with cache size."""
    block = metrics["results"].get(model)
    if not block or block["deploy_threshold"] is None:
        return f"The {model} model has no deploy threshold in metrics.json; see the sweep."
    points = []
    for size in metrics["sizes"]:
        at = block["sizes"][size["name"]]["index"].get("FLAT", {}).get("at_deploy_threshold")
        bound = block["sizes"][size["name"]].get("threshold_for_bound")
        if at:
            points.append((size["entries"], at["wrong_share"], at["repeat_hit_rate"], bound))
    if not points:
        return ""
    first, last = points[0], points[-1]
    if len(points) == 1:
        movement = "is"
    elif first[1] is None or last[1] is None:
        movement = "moves (undefined where nothing is served)"
    elif last[1] > first[1] + 1e-9:
        movement = "grows"
    elif last[1] < first[1] - 1e-9:
        movement = "falls"
    else:
        movement = "stays"
    text = (
        f"At its deploy threshold {block['deploy_threshold']:.3f}, the {model} model's wrong share among served "
        f"hits {movement} from {_pct(first[1])} ({first[0]:,} cached questions) to {_pct(last[1])} "
        f"({last[0]:,}); its repeat hit rate goes from {_pct(first[2])} to {_pct(last[2])}."
    )
    bounds = []
    for entries, _, _, bound in points:
        if bound:
            word = "" if bound["met"] else " (bound not met; closest)"
            bounds.append(f"{bound['threshold']:.3f} at {entries:,}{word}")
    if bounds:
        text += (
            f" The lowest threshold keeping the wrong share at or under {_pct(metrics['max_wrong_share'], 0)}"
            f" on these lookups: " + ", ".join(bounds) + "."
        )
    return text


def render_markdown(metrics: dict) -> str:
    lines = [f"# Cache replay through Milvus: {metrics['domain']}", ""]
    lines.append(
        f"Milvus Lite (pymilvus {metrics['milvus']['pymilvus']}, milvus-lite {metrics['milvus']['milvus-lite']}), "
        f"metric COSINE; {metrics['lookups']['repeats']:,} repeats (test paraphrases) and "
        f"{metrics['lookups']['novel']:,} novel questions (test negatives, their source and its equivalents left "
        f"out); wrong share for a traffic mix of {_pct(metrics['repeat_share'], 0)} repeats. Thresholds chosen "
        "on the replay's own lookups are descriptive (what would have held here), not a validated choice."
    )
    lines.append("")
    for model in MODELS:
        if model in metrics["results"]:
            lines += [trend_sentence(metrics, model), ""]
    header = (
        "| model | cache size | index | threshold | repeat hit rate | wrong share | novel false-hit rate | "
        "embed p50/p99 ms | search p50/p99 ms | ANN ≠ exact | threshold for bound | hit rate there |"
    )
    lines += [header, "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, block in metrics["results"].items():
        embed = block["embed_latency_ms"]
        for size in metrics["sizes"]:
            size_block = block["sizes"][size["name"]]
            bound = size_block.get("threshold_for_bound") or {}
            for index_type, figures in size_block["index"].items():
                at = figures["at_deploy_threshold"] or {}
                search = figures["search_latency_ms"]
                differs = size_block["approx_vs_exact"].get(index_type, {}).get("nearest_differs_share")
                lines.append(
                    f"| {model} | {size['entries']:,} | {index_type} | {_num(block['deploy_threshold'])} | "
                    f"{_pct(at.get('repeat_hit_rate'))} | {_pct(at.get('wrong_share'))} | "
                    f"{_pct(at.get('novel_false_hit_rate'))} | {_num(embed['p50'], 1)}/{_num(embed['p99'], 1)} | "
                    f"{_num(search['p50'], 1)}/{_num(search['p99'], 1)} | "
                    f"{'exact' if index_type == 'FLAT' else _pct(differs, 2)} | "
                    f"{_num(bound.get('threshold'))}{'' if bound.get('met', True) else ' (not met)'} | "
                    f"{_pct(bound.get('repeat_hit_rate'))} |"
                )
    lines += [
        "",
        (
            "Embedding latency: one question at a time, the models taking turns question by question (so the "
            "two compare); search latency: one query per call, measured one model and index after the other. "
            "Milvus Lite is a pure-Python engine in the replay's own process, not a production Milvus server."
        ),
        "",
        f"Runtime: {metrics['runtime_seconds']['total']:.0f} s on {metrics['settings']['threads']} threads.",
        "",
    ]
    return "\n".join(lines)


def make_plot(metrics: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    colours = {"base": "tab:gray", "adapter": "tab:blue"}
    for model, block in metrics["results"].items():
        xs, wrong, hits, bounds = [], [], [], []
        for size in metrics["sizes"]:
            size_block = block["sizes"][size["name"]]
            at = size_block["index"].get("FLAT", {}).get("at_deploy_threshold") or {}
            xs.append(size["entries"])
            wrong.append(np.nan if at.get("wrong_share") is None else at["wrong_share"])
            hits.append(np.nan if at.get("repeat_hit_rate") is None else at["repeat_hit_rate"])
            bound = size_block.get("threshold_for_bound") or {}
            bounds.append(bound.get("threshold", np.nan) if bound.get("met") else np.nan)
        label = f"{model} (τ={_num(block['deploy_threshold'])})"
        axes[0].plot(xs, wrong, "o-", color=colours.get(model), label=label)
        axes[1].plot(xs, hits, "o-", color=colours.get(model), label=label)
        axes[2].plot(xs, bounds, "o-", color=colours.get(model), label=model)
        if block["deploy_threshold"] is not None:
            axes[2].axhline(block["deploy_threshold"], color=colours.get(model), linestyle=":", linewidth=1)
    axes[0].axhline(metrics["max_wrong_share"], color="tab:red", linestyle="--", linewidth=1, label="bound")
    titles = (
        "wrong share among served hits\nat the deploy threshold",
        "repeat hit rate\nat the deploy threshold",
        f"lowest threshold keeping wrong share ≤ {metrics['max_wrong_share']:g}\n(dotted: deploy threshold)",
    )
    for axis, title in zip(axes, titles, strict=False):
        axis.set_xscale("log")
        axis.set_xlabel("cached questions")
        axis.set_title(title, fontsize=10)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"{metrics['domain']}: replay through Milvus (FLAT, exact search)", fontsize=11)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ---------------------------------------------------------------- CLI


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test-triplets", required=True)
    parser.add_argument("--train-triplets", required=True, help="their paraphrases are the largest size tier")
    parser.add_argument("--queries", nargs="+", required=True, help="split files (query records: train val test)")
    parser.add_argument("--test-queries", required=True, help="the test split (its ids are the test focus groups)")
    parser.add_argument("--base-model", required=True, help="sentence-transformers folder of the base model")
    parser.add_argument("--adapter-model", required=True, help="the merged (exported) model folder")
    parser.add_argument("--eval-metrics", required=True, help="metrics.json with recommended_threshold")
    parser.add_argument("--output-json", required=True)
    parser.add_argument("--output-md", required=True)
    parser.add_argument("--plot", required=True)
    parser.add_argument("--sizes", nargs="+", required=True, choices=SIZE_TIERS)
    parser.add_argument("--index-types", nargs="+", required=True, choices=["FLAT", "HNSW"])
    parser.add_argument("--hnsw-m", type=int, required=True)
    parser.add_argument("--hnsw-ef-construction", type=int, required=True)
    parser.add_argument("--hnsw-ef", type=int, required=True)
    parser.add_argument("--max-lookups", type=int, required=True, help="per kind (repeats, novel); 0 = all")
    parser.add_argument("--latency-samples", type=int, required=True)
    parser.add_argument("--search-limit", type=int, required=True, help="top-k fetched per novel lookup")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--max-wrong-share", type=float, required=True)
    parser.add_argument("--repeat-share", type=float, required=True)
    parser.add_argument("--equivalence", required=True, choices=["medquad", "text"])
    parser.add_argument("--domain", default="medical")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="folder for the Milvus Lite file (default: a temp dir)")
    args = parser.parse_args(argv)
    if "FLAT" not in args.index_types:
        parser.error("--index-types must include FLAT (exact search is the reference)")
    if not 0 < args.repeat_share < 1:
        parser.error("--repeat-share must be between 0 and 1")
    args.sizes = [tier for tier in SIZE_TIERS if tier in args.sizes]
    return args


def main(argv=None) -> int:
    setup_logging()
    args = parse_args(argv)
    started = time.perf_counter()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    thresholds = deploy_thresholds(args.eval_metrics)
    test_triplets = read_triplets(args.test_triplets)
    train_triplets = read_triplets(args.train_triplets) if "train_paraphrases" in args.sizes else []
    records = read_records(args.queries)
    test_ids = {record["id"] for record in read_jsonl(args.test_queries)}
    equivalence = EquivalenceIndex(records, mode=args.equivalence)
    entries, sizes = build_entries(test_triplets, records, test_ids, train_triplets, args.sizes)
    if not entries:
        raise PipelineError(f"{args.test_triplets}: no cached questions to replay against")
    lookups = build_lookups(test_triplets, args.max_lookups, args.seed)
    exclusions = novel_exclusions(lookups["novel"], entries, equivalence)
    LOG.info(
        "cache sizes %s; %d repeats, %d novel lookups",
        [s["entries"] for s in sizes],
        len(lookups["repeats"]),
        len(lookups["novel"]),
    )

    workdir = Path(tempfile.mkdtemp(prefix="replay-milvus-", dir=args.workdir))
    timings: dict[str, float] = {}
    results = {}
    try:
        client = open_client(str(workdir / "cache.db"))
        paths = {model: {"base": args.base_model, "adapter": args.adapter_model}[model] for model in args.models}
        embed_seconds = embed_latencies(paths, lookups, args)
        for model in args.models:
            results[model] = replay_model(
                model,
                paths[model],
                entries,
                sizes,
                lookups,
                exclusions,
                equivalence,
                thresholds[model],
                args,
                client,
                timings,
                embed_seconds[model],
            )
        client.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    timings["total"] = time.perf_counter() - started
    metrics = {
        "domain": args.domain,
        "settings": {
            key: getattr(args, key)
            for key in (
                "sizes",
                "index_types",
                "hnsw_m",
                "hnsw_ef_construction",
                "hnsw_ef",
                "max_lookups",
                "latency_samples",
                "search_limit",
                "seed",
                "batch_size",
                "equivalence",
                "models",
                "threads",
            )
        },
        "milvus": {**library_versions(MILVUS_LIBRARIES), "uri": "Milvus Lite (local file)", "metric_type": "COSINE"},
        "thresholds": {**thresholds, "source": "recommended_threshold.<model>.threshold of the evaluation metrics"},
        "max_wrong_share": args.max_wrong_share,
        "repeat_share": args.repeat_share,
        "lookups": {
            "repeats": len(lookups["repeats"]),
            "novel": len(lookups["novel"]),
            "novel_excluded_entries_mean": float(np.mean([len(e) for e in exclusions])) if exclusions else 0.0,
        },
        "sizes": sizes,
        "results": results,
        "runtime_seconds": timings,
    }
    metrics["summary"] = {model: trend_sentence(metrics, model) for model in results}
    write_json(args.output_json, metrics)
    with atomic_output(args.output_md) as handle:
        handle.write(render_markdown(metrics))
    make_plot(metrics, args.plot)
    for model in results:
        LOG.info("%s", metrics["summary"][model])
    LOG.info("replay done in %.0f s", timings["total"])
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
