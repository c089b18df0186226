"""Cache replay through a real Milvus Lite server (started by the test from a local file), checked
against exact numpy search on the same embeddings, with real MedQuAD questions and the real L6 model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import replay_cache

from cache_embed.common.cli import PipelineError
from cache_embed.common.files import read_jsonl, write_json, write_jsonl
from cache_embed.common.nearest import exact_nearest
from cache_embed.common.text import comparison_key
from cache_embed.data.equivalence import EquivalenceIndex
from cache_embed.deploy import replay as replay_cache_library
from cache_embed.deploy.vector_cache import IndexSpec, MilvusVectorCache, open_client
from cache_embed.evaluate.simulation import Lookups
from conftest import keyword_triplet_sources, step_argv


def real_triplets(records: list[dict], limit: int, seed: int) -> list[dict]:
    """Test triplets from real records: positive = '<focus> <qtype>' (a keyword query), negative = a
    real question of the same focus with another qtype (its id as negative_query_id)."""
    return [
        {
            "id": f"t-{record['id']}",
            "anchor": record["query"],
            "positive": f"{record['focus']} {record['qtype']}".lower(),
            "negative": negative["query"],
            "negative_query_id": negative["id"],
            "query_id": record["id"],
            "qtype": record["qtype"],
        }
        for record, negative, _ in keyword_triplet_sources(records, limit, seed)
    ]


@pytest.fixture(scope="module")
def l6(l6_model_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(l6_model_path, device="cpu")


@pytest.fixture(scope="module")
def replay_inputs(medquad_splits, tmp_path_factory) -> dict:
    """A small world: 120 test triplets, 300 other questions (train split), 60 training triplets."""
    out = tmp_path_factory.mktemp("replay-inputs")
    test_records = sorted(read_jsonl(medquad_splits / "test.jsonl"), key=lambda r: r["id"])[:400]
    train_records = sorted(read_jsonl(medquad_splits / "train.jsonl"), key=lambda r: r["id"])[:300]
    files = {
        "test_split": out / "test.jsonl",
        "train_split": out / "train.jsonl",
        "test_triplets": out / "triplets_test.jsonl",
        "train_triplets": out / "triplets_train.jsonl",
    }
    write_jsonl(files["test_split"], test_records)
    write_jsonl(files["train_split"], train_records)
    write_jsonl(files["test_triplets"], real_triplets(test_records, 120, seed=1))
    write_jsonl(files["train_triplets"], real_triplets(train_records, 60, seed=2))
    return files


def test_milvus_flat_and_hnsw_agree_with_exact_numpy_search(replay_inputs, l6, tmp_path):
    """Real Milvus Lite: cached questions in, paraphrase lookups out; FLAT gives exactly numpy's
    nearest neighbours and similarities, so hits and misses at a threshold are numpy's."""
    cached = [t["anchor"] for t in read_jsonl(replay_inputs["test_triplets"])]
    cached += [r["query"] for r in read_jsonl(replay_inputs["train_split"])][:200]
    lookups = [t["positive"] for t in read_jsonl(replay_inputs["test_triplets"])]
    entries = l6.encode(cached, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
    queries = l6.encode(lookups, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
    exact_ids, exact_scores = exact_nearest(queries, entries, limit=1)
    # Independent check of exact_nearest itself.
    assert np.array_equal(exact_ids[:, 0], np.argmax(queries @ entries.T, axis=1))

    client = open_client(str(tmp_path / "cache.db"))
    try:
        results = {}
        for index_type in ("FLAT", "HNSW"):
            cache = MilvusVectorCache(client, f"t_{index_type.lower()}", entries.shape[1], IndexSpec.make(index_type))
            half = len(entries) // 2  # grow in two steps, as the replay does
            cache.insert(np.arange(half), entries[:half])
            cache.insert(np.arange(half, len(entries)), entries[half:])
            assert cache.describe()["index_type"] == index_type
            assert cache.describe()["total_rows"] == len(entries)
            results[index_type] = cache.search(queries, limit=1)
            # A filter that removes the exact nearest neighbour yields numpy's second best.
            row = 0
            ids, scores = cache.search(queries[row : row + 1], limit=1, exclude=[int(exact_ids[row, 0])])
            second = np.argsort(-(entries @ queries[row]))[1]
            assert ids[0, 0] == second
            assert abs(scores[0, 0] - float(entries[second] @ queries[row])) < 1e-5
        flat_ids, flat_scores = results["FLAT"]
        assert np.allclose(flat_scores[:, 0], exact_scores[:, 0], atol=1e-5)
        ties = np.abs(flat_scores[:, 0] - exact_scores[:, 0]) <= 1e-5
        assert np.all((flat_ids[:, 0] == exact_ids[:, 0]) | ties)
        threshold = float(np.median(exact_scores))
        assert np.array_equal(flat_scores[:, 0] >= threshold, exact_scores[:, 0] >= threshold)
        hits = int(np.sum(exact_scores[:, 0] >= threshold))
        assert 0 < hits < len(queries)  # the threshold splits hits from misses
        # HNSW on 320 vectors with ef 64 finds the exact neighbour (its similarity, at least).
        _, hnsw_scores = results["HNSW"]
        assert np.mean(np.abs(hnsw_scores[:, 0] - exact_scores[:, 0]) <= 1e-5) >= 0.98
    finally:
        client.close()


def independent_cache(inputs, evaluated: list[int], seed: int) -> list[tuple[str, str]]:
    """The replay's cached questions rebuilt here: test anchors, then every question outside the test
    focus groups in the order of sha256("d", seed, id) (the evaluation's padding order, recomputed),
    none whose text is a test triplet's, then the training paraphrases; distinct by comparison key."""
    test_triplets = list(read_jsonl(inputs["test_triplets"]))
    test_ids = {r["id"] for r in read_jsonl(inputs["test_split"])}
    taken = {comparison_key(t[f]) for t in test_triplets for f in ("anchor", "positive", "negative")}
    outside = [r for r in read_jsonl(inputs["train_split"]) if r["id"] not in test_ids]
    outside.sort(key=lambda r: hashlib.sha256("\x1f".join(("d", str(seed), r["id"])).encode()).hexdigest()[:16])
    cached, seen = [], set()
    for query_id, text in sorted({(t["query_id"], t["anchor"]) for t in test_triplets}):
        if comparison_key(text) not in seen:
            seen.add(comparison_key(text))
            cached.append((query_id, text))
    for record in outside:
        key = comparison_key(record["query"])
        if key not in seen and key not in taken:
            seen.add(key)
            cached.append((record["id"], record["query"]))
    for query_id, text in sorted({(t["query_id"], t["positive"]) for t in read_jsonl(inputs["train_triplets"])}):
        if comparison_key(text) not in seen:
            seen.add(comparison_key(text))
            cached.append((query_id, text))
    return cached


def independent_counts(inputs, l6, cached, points):
    """Hits and misses of the replay's lookups at each (cache size, threshold) in `points`, computed
    here without the replay's code paths: numpy exact search, equivalence from records, exclusions
    rebuilt from scratch."""
    test_triplets = list(read_jsonl(inputs["test_triplets"]))
    records = list(read_jsonl(inputs["train_split"])) + list(read_jsonl(inputs["test_split"]))
    equivalence = EquivalenceIndex(records)
    entries = l6.encode([text for _, text in cached], normalize_embeddings=True, convert_to_numpy=True)
    repeats = sorted({(t["positive"], t["query_id"]) for t in test_triplets})
    novel = sorted({(t["negative"], t["negative_query_id"]) for t in test_triplets})
    rep_vec = l6.encode([text for text, _ in repeats], normalize_embeddings=True, convert_to_numpy=True)
    nov_vec = l6.encode([text for text, _ in novel], normalize_embeddings=True, convert_to_numpy=True)
    out = []
    for size, threshold in points:
        view = entries[:size]
        sims = rep_vec @ view.T
        best = sims.argmax(axis=1)
        served = sims.max(axis=1) >= threshold
        correct = np.array(
            [equivalence.equivalent(cached[b][0], qid) for b, (_, qid) in zip(best, repeats, strict=True)]
        )
        nsims = nov_vec @ view.T
        for row, (text, source) in enumerate(novel):
            for col, (query_id, cached_text) in enumerate(cached[:size]):
                if query_id in equivalence.equivalents(source) or comparison_key(cached_text) == comparison_key(text):
                    nsims[row, col] = -np.inf
        out.append(
            {
                "correct_hits": int(np.sum(served & correct)),
                "wrong_hits": int(np.sum(served & ~correct)),
                "false_hits": int(np.sum(nsims.max(axis=1) >= threshold)),
            }
        )
    return out


def evaluation_metrics(sizes: dict[int, tuple[float | None, float | None]]) -> dict:
    """The part of an evaluation's metrics.json the replay reads (recommended_threshold.sizes and the
    padding seed), in the evaluator's shape: {cache size: (base threshold, adapter threshold)}."""
    return {
        "settings": {"seed": 7},
        "recommended_threshold": {
            "max_wrong_share": 0.05,
            "sizes": [
                {
                    "cache_size": size,
                    "names": [str(size)],
                    "label": f"{size:,}",
                    "base": {"threshold": base},
                    "adapter": {"threshold": adapter},
                }
                for size, (base, adapter) in sorted(sizes.items())
            ],
        },
    }


def test_replay_cache_end_to_end_matches_independent_exact_counts(replay_inputs, l6, l6_model_path, tmp_path):
    metrics_in = tmp_path / "eval_metrics.json"
    write_json(metrics_in, evaluation_metrics({120: (0.9, 0.75), 250: (0.92, 0.8)}))
    out = tmp_path / "replay"
    assert (
        replay_cache.main(
            [
                "--test-triplets",
                str(replay_inputs["test_triplets"]),
                "--train-triplets",
                str(replay_inputs["train_triplets"]),
                "--queries",
                str(replay_inputs["train_split"]),
                str(replay_inputs["test_split"]),
                "--test-queries",
                str(replay_inputs["test_split"]),
                "--base-model",
                l6_model_path,
                "--adapter-model",
                l6_model_path,
                "--eval-metrics",
                str(metrics_in),
                "--output-json",
                str(out / "metrics.json"),
                "--output-md",
                str(out / "metrics.md"),
                "--plot",
                str(out / "p.png"),
                *step_argv("replay", "medical"),
                "--sizes",
                "evaluated",
                "medquad",
                "train_paraphrases",
                "--max-lookups",
                "0",
                "--latency-samples",
                "5",
                "--threads",
                "2",
                "--workdir",
                str(tmp_path),
                "--models",
                "adapter",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    names = [size["name"] for size in metrics["sizes"]]
    assert names == ["evaluated_120", "evaluated_250", "medquad", "train_paraphrases"]
    sizes = [size["entries"] for size in metrics["sizes"]]
    assert sizes[:2] == [120, 250] and sizes == sorted(sizes) and sizes[2] > 300
    assert [size["calibrated_for"] for size in metrics["sizes"]] == [120, 250, 250, 250]
    assert metrics["milvus"]["pymilvus"] == "3.0.2" and metrics["milvus"]["milvus-lite"] == "3.2.2"
    cached = independent_cache(replay_inputs, [120, 250], seed=7)
    assert len(cached) == sizes[-1]
    # Each size at its own threshold (past the largest evaluated size, the largest one's) and at the
    # smallest size's, against counts computed here.
    own = {120: 0.75, 250: 0.8}
    points = [(size["entries"], own[size["calibrated_for"]]) for size in metrics["sizes"]]
    points += [(size["entries"], 0.75) for size in metrics["sizes"][1:]]
    expected = independent_counts(replay_inputs, l6, cached, points)
    adapter = metrics["results"]["adapter"]
    for (entries, threshold), want in zip(points, expected, strict=True):
        size = next(s for s in metrics["sizes"] if s["entries"] == entries)
        block = adapter["sizes"][size["name"]]
        name = "own" if threshold == own[size["calibrated_for"]] else "smallest"
        at = block["index"]["FLAT"]["at_threshold"][name]
        assert {key: at[key] for key in want} == want, (size["name"], name)
        assert at["threshold"] == threshold and at["repeats"] == metrics["lookups"]["repeats"]
        assert at["wrong_share_interval"]["low"] <= (at["wrong_share"] or 0) <= at["wrong_share_interval"]["high"]
        assert block["flat_vs_numpy"]["nearest_differs"] == 0
        assert block["flat_vs_numpy"]["max_abs_score_difference"] < 1e-5
        assert block["index"]["HNSW"]["index"]["index_type"] == "HNSW"
        assert 0 <= block["approx_vs_exact"]["HNSW"]["nearest_differs_share"] <= 1
        assert block["index"]["HNSW"]["search_latency_ms"]["n"] == 5
        bound = block["threshold_for_bound"]
        assert bound["bound"] == 0.05 and (bound["threshold"] is None) == (not bound["met"])
    assert "smallest" not in adapter["sizes"]["evaluated_120"]["index"]["FLAT"]["at_threshold"]
    assert adapter["embed_latency_ms"]["n"] == 5
    text = (out / "metrics.md").read_text(encoding="utf-8")
    assert "0.750 (120)" in text and "0.800 (250)" in text and metrics["summary"]["adapter"] in text
    assert (out / "p.png").stat().st_size > 10_000


def _lookups(repeat_scores, repeat_correct, novel_scores):
    return Lookups(
        np.array(repeat_scores, float),
        np.array(repeat_correct, bool),
        np.array(repeat_correct, bool),
        np.array(novel_scores, float),
    )


def test_figures_and_bound_threshold_by_hand():
    # 4 repeats: 0.95 correct, 0.90 wrong, 0.85 correct, 0.60 correct; 2 novel: 0.88, 0.40.
    outcomes = _lookups([0.95, 0.90, 0.85, 0.60], [True, False, True, True], [0.88, 0.40])
    at = replay_cache_library.figures_at(outcomes, None, 0.85, repeat_share=0.5, budget=0.05)
    assert (at["correct_hits"], at["wrong_hits"], at["false_hits"]) == (2, 1, 1)
    assert at["repeat_hit_rate"] == 0.5 and at["novel_false_hit_rate"] == 0.5
    # mix 50/50: wrong = .5*.25 + .5*.5 = .375; served = .5*.75 + .5*.5 = .625
    assert at["wrong_share"] == pytest.approx(0.375 / 0.625)
    assert at["reading"] == "missed" and at["wrong_share_interval"]["low"] > 0.05  # 60% wrong of 4 served
    # Six lookups cannot bound a 5% wrong share: the rule answers none, not the top of a grid.
    bound = replay_cache_library.threshold_for_bound(outcomes, None, 0.05, 0.5)
    assert bound["threshold"] is None and bound["met"] is False and bound["evaluated_at"] is not None
    many = _lookups(np.linspace(0.99, 0.5, 400), np.ones(400, bool), np.full(400, 0.1))
    bound = replay_cache_library.threshold_for_bound(many, None, 0.05, 0.5)
    assert bound["met"] and bound["threshold"] == pytest.approx(0.5)


def test_novel_exclusions_follow_equivalence_not_split_groups():
    records = [
        {"id": "a", "query": "What causes gout?", "qtype": "causes", "focus": "Gout", "cuis": ["C1"]},
        {"id": "b", "query": "What causes podagra?", "qtype": "causes", "focus": "Podagra", "cuis": ["C1"]},
        {"id": "c", "query": "How is gout treated?", "qtype": "treatment", "focus": "Gout", "cuis": ["C1"]},
        {"id": "d", "query": "What causes asthma?", "qtype": "causes", "focus": "Asthma", "cuis": ["C2"]},
    ]
    equivalence = EquivalenceIndex(records)
    entries = [{"text": r["query"], "query_id": r["id"]} for r in records]
    entries.append({"text": "gout causes", "query_id": "a"})  # a paraphrase entry of a
    entries.append({"text": "What causes gout", "query_id": "z"})  # same text as the lookup
    lookups = [{"text": "What causes gout?", "query_id": "a"}, {"text": "Unknown?", "query_id": None}]
    excluded = replay_cache_library.novel_exclusions(lookups, entries, equivalence)
    assert excluded[0].tolist() == [0, 1, 4, 5]  # a, b (shared CUI, same qtype), a's paraphrase, same text
    assert excluded[1].tolist() == []


def test_nearest_allowed_skips_excluded_and_flags_exhausted_rows():
    ids = np.array([[3, 5, 7], [1, 2, -1]])
    scores = np.array([[0.9, 0.8, 0.7], [0.6, 0.5, -np.inf]])
    chosen, chosen_scores, unresolved = replay_cache_library.nearest_allowed(
        ids, scores, [np.array([3]), np.array([1, 2])]
    )
    assert chosen.tolist() == [5, -1] and chosen_scores[0] == 0.8 and unresolved.tolist() == [False, True]


def test_metrics_without_sizes_names_file_and_key(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"recommended_threshold": {"base": {"threshold": 0.8}, "adapter": None}})
    with pytest.raises(PipelineError, match=r"metrics.json: no recommended_threshold.sizes; rerun evaluate_adapter"):
        replay_cache_library.evaluated_sizes(str(path))


def test_triplet_without_positive_names_file_and_record(tmp_path):
    path = tmp_path / "t.jsonl"
    write_jsonl(path, [{"id": "x1", "anchor": "a", "positive": "", "negative": "n", "query_id": "q"}])
    with pytest.raises(PipelineError, match=r"t.jsonl: triplet 1 \(id x1\) has no 'positive'"):
        replay_cache_library.read_triplets(str(path))


def test_sizes_are_cumulative_and_distinct_by_comparison_key():
    test_triplets = [{"query_id": "t1", "anchor": "What is X?", "positive": "x", "negative": "n"}]
    records = [
        {"id": "t1", "query": "What is X?"},
        {"id": "r1", "query": "what is x"},  # the anchor's text: never padding
        {"id": "r2", "query": "Y?"},
        {"id": "r3", "query": "Z?"},
    ]
    train = [{"query_id": "r2", "positive": "y info", "anchor": "Y?", "negative": "n"}]
    entries, sizes = replay_cache_library.build_entries(
        test_triplets, records, {"t1"}, train, ["evaluated", "medquad", "train_paraphrases"], [2], 7
    )
    assert entries[0]["text"] == "What is X?" and {e["text"] for e in entries[1:3]} == {"Y?", "Z?"}
    assert entries[3]["text"] == "y info" and len(entries) == 4
    assert [(s["name"], s["entries"], s["added"], s["calibrated_for"]) for s in sizes] == [
        ("evaluated_2", 2, 2, 2),
        ("medquad", 3, 1, 2),
        ("train_paraphrases", 4, 1, 2),
    ]
    with pytest.raises(PipelineError, match="only 3 questions to fill the evaluated size 9"):
        replay_cache_library.build_entries(test_triplets, records, {"t1"}, train, ["evaluated"], [9], 7)


def test_replay_rule_is_wired_with_its_settings(tmp_path):
    """The rule takes the exported model, and each replay setting reaches the script as a flag."""
    from conftest import copy_project, run_snakemake

    project = copy_project(tmp_path / "p")
    (project / "extra.yaml").write_text("replay:\n  sizes: [evaluated]\n  max_lookups: 7\n", encoding="utf-8")
    result = run_snakemake(
        project, "-n", "-p", "results/medical/replay/metrics.json", "--configfile", "config/config.yaml", "extra.yaml"
    )
    shell = next(line for line in result.stdout.splitlines() if "python scripts/replay_cache.py" in line)
    assert "--adapter-model models/medical/deploy/model" in shell
    assert "--sizes evaluated " in shell and "--max-lookups 7 " in shell
    assert "--test-queries results/medical/splits/test.jsonl " in shell
    assert "--hnsw-ef 64 " in shell and "--equivalence medquad" in shell
    assert Path(project / "workflow/report/replay_cache.rst").exists()
