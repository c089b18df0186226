"""The cache replayed through a real vector database (Milvus) at growing cache sizes.

The cache holds questions embedded with a model (the base, or the exported merged model) in a
Milvus collection (Milvus Lite from a local file; the same client code reaches a Milvus server by
URI), metric COSINE, with each index type (FLAT: exact; HNSW: approximate). Two kinds of lookups
are replayed against it:

- repeats: the test paraphrases. A hit is correct when the served cached question is equivalent to
  the paraphrased one (cache_embed.data.equivalence), wrong otherwise;
- novel questions: the test negatives, with their own source question and its equivalents left
  out of the cache. Any hit is a false hit.

The cache grows in tiers, each adding to the one before: the evaluated cache sizes (the test
questions padded as the evaluation pads them, cache_embed.evaluate.cache_sizes, so the replay's
caches are the evaluation's), then every question outside the test focus groups, then the training
paraphrases. Each tier is read at the threshold chosen for its size (past the largest evaluated
size, the largest size's), and at the smallest size's threshold: what happens when a cache grows
after deployment. The figures come from the same cache simulation as the evaluation's
(cache_embed.evaluate.simulation), with intervals over focus groups, and the threshold the
replay's own lookups would keep the bound at comes from the one threshold rule
(cache_embed.evaluate.threshold), a descriptive figure, not a validated choice.
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from cache_embed.common.cli import PipelineError
from cache_embed.common.files import read_json, read_jsonl
from cache_embed.common.nearest import exact_nearest
from cache_embed.common.text import comparison_key
from cache_embed.data.equivalence import EquivalenceIndex
from cache_embed.deploy.vector_cache import IndexSpec, MilvusVectorCache
from cache_embed.evaluate.cache_sizes import padding_order
from cache_embed.evaluate.simulation import Lookups, Sweep
from cache_embed.evaluate.threshold import choose_threshold, reading

LOG = logging.getLogger("replay_cache")
SIZE_TIERS = ("evaluated", "medquad", "train_paraphrases")
TIER_LABELS = {
    "medquad": "+ all questions outside the test focus groups",
    "train_paraphrases": "+ training paraphrases",
}
MODELS = ("base", "adapter")
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


def evaluated_sizes(metrics_path: str) -> dict:
    """The evaluation's sizes and thresholds: {max_wrong_share, padding_seed, sizes: [{cache_size,
    label, thresholds: {model: threshold | None}}]} from metrics.json."""
    metrics = read_json(metrics_path)
    rec = metrics.get("recommended_threshold")
    if not isinstance(rec, dict) or not isinstance(rec.get("sizes"), list) or not rec["sizes"]:
        raise PipelineError(f"{metrics_path}: no recommended_threshold.sizes; rerun evaluate_adapter")
    sizes = []
    for block in rec["sizes"]:
        thresholds = {model: (block.get(model) or {}).get("threshold") for model in MODELS}
        for model, threshold in thresholds.items():
            if threshold is None:
                LOG.warning(
                    "%s: no %s threshold keeps the bound at %s questions; that size is replayed without it",
                    metrics_path,
                    model,
                    block["label"],
                )
        sizes.append({"cache_size": block["cache_size"], "label": block["label"], "thresholds": thresholds})
    return {
        "max_wrong_share": rec["max_wrong_share"],
        "padding_seed": (metrics.get("settings") or {}).get("seed"),
        "sizes": sizes,
    }


def build_entries(
    test_triplets: list[dict],
    records: list[dict],
    test_ids: set[str],
    train_triplets: list[dict],
    tiers: list[str],
    evaluated: list[int],
    padding_seed: int,
) -> tuple[list[dict], list[dict]]:
    """Cached questions in tier order (each tier adds to the one before), distinct by comparison key:
    the test anchors padded to each evaluated size with questions outside the test focus groups in
    the evaluation's order, then all of those questions, then the training paraphrases. Returns
    (entries with text, query_id, tier; one summary per size)."""
    anchors = sorted({(t["query_id"], t["anchor"]) for t in test_triplets})
    test_keys = {comparison_key(t[field]) for t in test_triplets for field in ("anchor", "positive", "negative")}
    outside = padding_order([r for r in records if r["id"] not in test_ids], padding_seed, test_keys)
    padding = [(record["id"], record["query"]) for record in outside]
    entries, summaries, seen = [], [], set()
    cursor = 0  # the next padding question

    def add(tier: str, candidates, upto: int | None = None) -> tuple[int, int]:
        nonlocal cursor
        added = duplicates = 0
        for query_id, text in candidates:
            if upto is not None and len(entries) >= upto:
                break
            if tier == "padding":
                cursor += 1
            key = comparison_key(text)
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            entries.append({"text": text, "query_id": query_id, "tier": tier})
            added += 1
        return added, duplicates

    def summary(name: str, label: str, added: int, duplicates: int, calibrated_for: int | None) -> None:
        summaries.append(
            {
                "name": name,
                "label": label,
                "entries": len(entries),
                "added": added,
                "duplicates_dropped": duplicates,
                "calibrated_for": calibrated_for,
            }
        )

    added, duplicates = add("test_anchors", anchors)
    if "evaluated" in tiers:
        if len(entries) > min(evaluated):
            raise PipelineError(
                f"the test triplets hold {len(entries):,} distinct questions but the smallest evaluated size is"
                f" {min(evaluated):,}: the replay's inputs and the evaluation's differ; rerun evaluate_adapter"
            )
        for size in sorted(evaluated):
            more, dropped = add("padding", padding[cursor:], size)
            if len(entries) != size:
                raise PipelineError(
                    f"only {len(entries):,} questions to fill the evaluated size {size:,}; the replay's --queries"
                    " are not the splits the evaluation padded from"
                )
            summary(f"evaluated_{size}", f"{size:,} (evaluated)", added + more, duplicates + dropped, size)
            added = duplicates = 0
    else:
        summary("test_anchors", "test anchors", added, duplicates, None)
    largest = max(evaluated) if evaluated else None
    if "medquad" in tiers:
        summary("medquad", TIER_LABELS["medquad"], *add("padding", padding[cursor:]), largest)
    if "train_paraphrases" in tiers:
        paraphrases = sorted({(t["query_id"], t["positive"]) for t in train_triplets})
        summary("train_paraphrases", TIER_LABELS["train_paraphrases"], *add("train_paraphrases", paraphrases), largest)
    return entries, summaries


def build_lookups(test_triplets: list[dict], max_lookups: int, seed: int, group_of: dict) -> dict[str, list[dict]]:
    """Distinct repeats (paraphrase, its question) and novel questions (negative, its source), each
    a seeded sample of at most `max_lookups` (0 = all), in a stable order; each with the focus
    group of the triplet's anchor (the bound's independent units, as in the evaluation)."""
    repeats, novel = {}, {}
    for t in test_triplets:
        group = group_of.get(t["query_id"], t["query_id"])
        repeats.setdefault((t["positive"], t["query_id"]), group)
        novel.setdefault((t["negative"], t.get("negative_query_id") or ""), group)
    out = {}
    for kind, items in (("repeats", repeats), ("novel", novel)):
        keys = sorted(items)
        if max_lookups and len(keys) > max_lookups:
            keys = sorted(random.Random(f"{seed}-{kind}").sample(keys, max_lookups))
        out[kind] = [
            {"text": text, "query_id": query_id or None, "group": items[(text, query_id)]} for text, query_id in keys
        ]
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


def outcome_lookups(repeat_ids, repeat_scores, novel_scores, lookups, entries, equivalence) -> Lookups:
    """The replay's nearest entries as the cache simulation's Lookups: similarity, and for repeats
    whether the served entry is correct (equivalent) and whether it is the question itself."""
    correct = np.zeros(len(repeat_ids), dtype=bool)
    identity = np.zeros(len(repeat_ids), dtype=bool)
    for row, (entry_row, lookup) in enumerate(zip(repeat_ids, lookups["repeats"], strict=True)):
        if entry_row < 0:
            continue
        served = entries[entry_row]["query_id"]
        correct[row] = equivalence.equivalent(served, lookup["query_id"])
        identity[row] = served == lookup["query_id"]
    return Lookups(
        np.asarray(repeat_scores, dtype=np.float64), correct, identity, np.asarray(novel_scores, dtype=np.float64)
    )


def lookup_groups(lookups: dict) -> tuple[list, list]:
    return [lookup["group"] for lookup in lookups["repeats"]], [lookup["group"] for lookup in lookups["novel"]]


def figures_at(outcomes: Lookups, groups, threshold: float, repeat_share: float, budget: float) -> dict:
    """The cache figures at one threshold, with the wrong share's 95% interval over focus groups and
    its reading against the budget, and the counts behind them."""
    sweep = Sweep(outcomes, repeat_share, groups=groups)
    point = sweep.at(threshold)
    interval = sweep.interval(threshold)
    served = outcomes.repeat_score >= threshold
    return {
        **point,
        "wrong_share_interval": {"low": interval["low"], "high": interval["high"]},
        "reading": reading(interval["low"], interval["high"], budget) if point["wrong_share"] is not None else None,
        "repeats": int(outcomes.repeat_score.size),
        "correct_hits": int(np.sum(served & outcomes.repeat_correct)),
        "correct_through_equivalence": int(np.sum(served & outcomes.repeat_correct & ~outcomes.repeat_identity)),
        "wrong_hits": int(np.sum(served & ~outcomes.repeat_correct)),
        "novel": int(outcomes.novel_score.size),
        "false_hits": int(np.sum(outcomes.novel_score >= threshold)),
    }


def threshold_for_bound(outcomes: Lookups, groups, bound: float, repeat_share: float) -> dict:
    """The threshold the one rule takes on the replay's own lookups (descriptive: an oracle's choice,
    not a validated one); threshold None when none keeps the bound."""
    choice = choose_threshold(Sweep(outcomes, repeat_share, groups=groups), bound)
    return {"bound": bound, "met": choice["bound_met"], **choice}


def sweep_points(outcomes: Lookups, groups, repeat_share: float, grid) -> list[dict]:
    sweep = Sweep(outcomes, repeat_share, groups=groups)
    keys = ("threshold", "repeat_hit_rate", "wrong_share", "novel_false_hit_rate")
    return [{key: sweep.at(t)[key] for key in keys} for t in grid]


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


def tier_thresholds(evaluated: dict, summary: dict, model: str) -> dict:
    """The thresholds a tier is read at: `own`, chosen for the tier's size (past the largest evaluated
    size, the largest one's), and `smallest`, the smallest size's: {name: (calibrated_for, threshold)}."""
    by_size = {size["cache_size"]: size["thresholds"][model] for size in evaluated["sizes"]}
    out = {}
    if summary["calibrated_for"] is not None and by_size.get(summary["calibrated_for"]) is not None:
        out["own"] = (summary["calibrated_for"], by_size[summary["calibrated_for"]])
    smallest = min(by_size)
    if by_size[smallest] is not None and summary["calibrated_for"] != smallest:
        out["smallest"] = (smallest, by_size[smallest])
    return out


def replay_model(
    model_name: str,
    model_path: str,
    entries: list[dict],
    sizes: list[dict],
    lookups: dict,
    exclusions: list[np.ndarray],
    equivalence: EquivalenceIndex,
    evaluated: dict,
    args,
    client,
    timings: dict,
    embed_seconds: np.ndarray,
) -> dict:
    """Encode, insert tier by tier into each index type, look every lookup up, and judge: the
    model's block of the replay's metrics.json."""
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

    groups = lookup_groups(lookups)
    grid = np.round(np.arange(0.30, 0.9951, 0.01), 3)
    for size in sizes:
        found = per_index[size["name"]]
        thresholds = tier_thresholds(evaluated, size, model_name)
        own = thresholds.get("own", (None, None))[1]
        block = {"entries": size["entries"], "thresholds": thresholds, "index": {}, "approx_vs_exact": {}}
        for index_type, raw in found.items():
            raw["outcomes"] = outcome_lookups(
                raw["repeat_ids"], raw["repeat_scores"], raw["novel_scores"], lookups, entries, equivalence
            )
            block["index"][index_type] = {
                "index": raw["index"],
                "at_threshold": {
                    name: {
                        "calibrated_for": calibrated_for,
                        **figures_at(raw["outcomes"], groups, threshold, args.repeat_share, args.max_wrong_share),
                    }
                    for name, (calibrated_for, threshold) in thresholds.items()
                },
                "search_latency_ms": raw["search_latency_ms"],
                "insert_seconds": raw["insert_seconds"],
                "batched_search_seconds": raw["batched_search_seconds"],
                "novel_resolved_by_filtered_search": raw["unresolved_novel"],
            }
        exact = found["FLAT"]
        # Milvus FLAT against numpy on the same embeddings: the replay's own exactness check.
        numpy_ids, numpy_scores = exact_nearest(repeat_vectors, entry_vectors[: size["entries"]], limit=1)
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
            exact["outcomes"], groups, args.max_wrong_share, args.repeat_share
        )
        block["sweep"] = sweep_points(exact["outcomes"], groups, args.repeat_share, grid)
        for index_type, raw in found.items():
            if index_type != "FLAT":
                block["approx_vs_exact"][index_type] = approx_difference(exact, raw, own)
        results["sizes"][size["name"]] = block
    return results


def approx_difference(exact: dict, approx: dict, threshold: float | None) -> dict:
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
        served_e = np.concatenate([e.repeat_score, e.novel_score]) >= threshold
        served_a = np.concatenate([a.repeat_score, a.novel_score]) >= threshold
        ok_e = np.concatenate([e.repeat_correct, np.zeros(e.novel_score.size, bool)])
        ok_a = np.concatenate([a.repeat_correct, np.zeros(a.novel_score.size, bool)])
        changed = (served_e != served_a) | (served_e & (ok_e != ok_a))
        out["outcome_differs_at_deploy_threshold"] = int(changed.sum())
    return out
