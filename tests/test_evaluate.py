"""Cache metrics against hand-computed values and scikit-learn; evaluate_adapter end to end on
real MedQuAD test questions with the real L6 model and a small LoRA adapter; external pair files."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from cache_embed import cache_metrics as cm
import evaluate_adapter
from cache_embed.cli import PipelineError
from cache_embed.files import read_jsonl

DATA = Path(__file__).parent / "data"

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
    assert [cm.threshold_key(v) for v in (0.8, 0.85, 0.9, 0.95, 0.995, 1.0)] == ["0.80", "0.85", "0.90", "0.95", "0.995", "1.00"]


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
    weighted = cm._resample_figures(scores, labels, np.concatenate((weights, weights)),
                                    np.argsort(-scores, kind="mergesort"), weights, base_pos, base_neg, [0.9])
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


def test_cache_simulation_by_hand():
    anchors = np.stack([_unit(1, 0, 0), _unit(0, 1, 0)])
    positives = np.stack([_unit(1, 0.2, 0),   # own anchor 0, cos 0.98: correct hit
                          _unit(1, 0.1, 0),   # own anchor 1 but nearest is anchor 0: wrong hit
                          _unit(0, 1, 1)])    # own anchor 1, cos 0.71: correct at rank 1, under 0.9
    negatives = np.stack([_unit(0.2, 1, 0),   # different question near anchor 1: false hit at 0.9
                          _unit(1, 0, 0)])    # the same text as anchor 0: looked up among the others only
    result = cm.cache_simulation(anchors, ["a0", "a1"], positives, [0, 1, 1], negatives, ["n0", "a0"], [0.5, 0.9])
    assert result["anchors"] == 2 and result["negatives_matching_an_anchor"] == 1
    assert result["rank1_accuracy"] == pytest.approx(2 / 3)
    at_09 = result["at_threshold"]["0.90"]
    assert (at_09["correct_hits"], at_09["wrong_hits"], at_09["false_hits"]) == (1, 1, 1)
    assert at_09["hit_rate"] == pytest.approx(1 / 3)
    assert at_09["false_hit_rate"] == pytest.approx(0.5)
    assert at_09["hit_precision"] == pytest.approx(1 / 3)
    at_05 = result["at_threshold"]["0.50"]
    # The second negative (excluded from anchor 0) has cosine 0 with anchor 1: still a miss.
    assert (at_05["correct_hits"], at_05["wrong_hits"], at_05["false_hits"]) == (2, 1, 1)


# ------------------------------------------------------------------ external pair files


def test_external_fixture_files_load():
    csv_pairs = evaluate_adapter.load_external_pairs(DATA / "external_pairs.csv")
    jsonl_pairs = evaluate_adapter.load_external_pairs(DATA / "external_pairs.jsonl")
    assert len(csv_pairs) == 20 and len(jsonl_pairs) == 20
    assert sum(label for *_, label in csv_pairs) == 10
    assert csv_pairs[10] == ("What should I do if I forget a dose of warfarin?", "I missed my warfarin pill, what now?", 1)
    assert jsonl_pairs[12][2] == 1 and jsonl_pairs[13][2] == 0  # JSON true/false


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing_column.csv", "question_1,question_2\na,b\n", r"missing_column\.csv:1: header lacks column\(s\) label"),
        ("bad_label.csv", "question_1,question_2,label\nWhat is gout?,What is gout exactly?,1\nWhat is gout?,How is gout treated?,maybe\n",
         r"bad_label\.csv:3: label 'maybe' is not 1"),
        ("empty_question.csv", "question_1,question_2,label\nWhat is gout?,,1\n", r"empty_question\.csv:2: 'question_2' is empty"),
        ("bad_json.jsonl", '{"question_1": "a", "question_2": "b", "label": 1}\n{"question_1": "a",\n', r"bad_json\.jsonl:2: not valid JSON"),
        ("missing_key.jsonl", '{"question_1": "a", "question_2": "b", "label": 1}\n\n{"question_1": "a", "question_2": "c"}\n',
         r"missing_key\.jsonl:3: missing label"),
        ("label_two.jsonl", '{"question_1": "a", "question_2": "b", "label": 2}\n', r"label_two\.jsonl:1: label 2 is not 1"),
        ("one_class.jsonl", '{"question_1": "a", "question_2": "b", "label": 1}\n', r"one_class\.jsonl: needs at least one pair labelled 1 and one labelled 0"),
        ("pairs.txt", "a\tb\t1\n", r"pairs\.txt: unknown external pair format"),
    ],
)
def test_bad_external_files_name_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PipelineError, match=message):
        evaluate_adapter.load_external_pairs(path)


def test_cli_reports_bad_external_file_before_loading_models(tmp_path, capsys):
    triplets = tmp_path / "t.jsonl"
    triplets.write_text(json.dumps({"anchor": "a", "positive": "b", "negative": "c"}) + "\n", encoding="utf-8")
    bad = tmp_path / "bad.csv"
    bad.write_text("question_1,question_2,label\nx,y,yes please\n", encoding="utf-8")
    rc = evaluate_adapter.run_main(evaluate_adapter.main, [
        "--triplets", str(triplets), "--base-model", str(tmp_path / "none"), "--adapter", str(tmp_path / "none"),
        "--output-json", str(tmp_path / "m.json"), "--output-md", str(tmp_path / "m.md"), "--plots-dir", str(tmp_path / "p"),
        "--external", f"mine={bad}",
    ])
    assert rc == 1
    assert f"{bad}:2: label 'yes please'" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


# ------------------------------------------------------------------ end to end


def build_triplets(records: list[dict], limit: int, seed: int = 0) -> list[dict]:
    """Crude test triplets from real MedQuAD records: the positive is a keyword form of the
    question, the negative another question of the same focus (or, some of the time, of the same qtype)."""
    rng = random.Random(seed)
    by_focus, by_qtype = defaultdict(list), defaultdict(list)
    for record in records:
        by_focus[record["focus"]].append(record)
        by_qtype[record["qtype"]].append(record)
    triplets = []
    for record in records:
        others, kind = [o for o in by_focus[record["focus"]] if o["qtype"] != record["qtype"]], "same_focus_other_qtype"
        if not others or len(triplets) % 3 == 2:
            others, kind = [o for o in by_qtype[record["qtype"]] if o["focus"] != record["focus"]], "same_qtype_other_focus"
        if not others:
            continue
        negative = rng.choice(others)
        triplets.append({
            "id": f"t-{record['id']}", "anchor": record["query"], "positive": f"{record['focus']} {record['qtype']}",
            "negative": negative["query"], "query_id": record["id"], "split": "test", "domain": "medical",
            "backend": "test", "model": "test", "positive_kind": "keyword", "negative_kind": kind,
            "qtype": record["qtype"], "negative_qtype": negative["qtype"], "focus": record["focus"],
        })
        if len(triplets) >= limit:
            break
    return triplets


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory, l6_model_path) -> Path:
    """A LoRA adapter on the real L6 model with random (non-zero) weights: it changes the
    embeddings, which is all the shape tests need; quality is not the point here."""
    import torch
    from peft import LoraConfig
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    model = SentenceTransformer(l6_model_path)
    model.add_adapter(LoraConfig(task_type="FEATURE_EXTRACTION", r=4, lora_alpha=8, target_modules=["query", "value"],
                                 init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def real_test_triplets(tmp_path_factory, medquad_splits) -> Path:
    records = list(read_jsonl(medquad_splits / "test.jsonl"))
    records.sort(key=lambda record: record["id"])
    path = tmp_path_factory.mktemp("triplets") / "test.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for triplet in build_triplets(records[:400], 48):
            handle.write(json.dumps(triplet) + "\n")
    return path


@pytest.fixture(scope="session")
def real_val_triplets(tmp_path_factory, medquad_splits) -> Path:
    """60 triplets from the real val split (focus-disjoint from test) to choose the threshold on."""
    records = sorted(read_jsonl(medquad_splits / "val.jsonl"), key=lambda record: record["id"])
    path = tmp_path_factory.mktemp("triplets") / "val.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for triplet in build_triplets(records[:500], 60, seed=1):
            handle.write(json.dumps({**triplet, "split": "val"}) + "\n")
    return path


@pytest.fixture(scope="session")
def evaluated(tmp_path_factory, real_test_triplets, real_val_triplets, tiny_adapter, l6_model_path) -> Path:
    out = tmp_path_factory.mktemp("eval")
    assert evaluate_adapter.main([
        "--triplets", str(real_test_triplets), "--base-model", l6_model_path, "--adapter", str(tiny_adapter),
        "--output-json", str(out / "metrics.json"), "--output-md", str(out / "metrics.md"), "--plots-dir", str(out / "plots"),
        "--thresholds", "0.8", "0.85", "0.9", "--target-precisions", "0.95", "0.99", "--deploy-precision", "0.9",
        "--bootstrap", "100", "--seed", "7", "--batch-size", "32",
        "--calibration-triplets", str(real_val_triplets), "--max-calibration-triplets", "40",
        "--external", f"csv_set={DATA / 'external_pairs.csv'}", f"jsonl_set={DATA / 'external_pairs.jsonl'}",
    ]) == 0
    return out


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
        assert block["cache"]["anchors"] == len({t["anchor"] for t in triplets})
        assert set(block["cache"]["at_threshold"]) == {"0.80", "0.85", "0.90"}
    assert test["delta"]["roc_auc"] == pytest.approx(test["adapter"]["roc_auc"] - test["base"]["roc_auc"])
    assert set(test["ci"]) == {"roc_auc", "pr_auc", "triplet_accuracy", "margin",
                               "recall_at_precision_0.95", "recall_at_precision_0.99"}
    assert test["ci"]["roc_auc"]["resamples"] == 100
    assert set(test["by_negative_kind"]) == {"same_focus_other_qtype", "same_qtype_other_focus"}
    assert sum(g["triplets"] for g in test["by_qtype"].values()) == 48
    assert set(test["by_qtype"][next(iter(test["by_qtype"]))]) == {"triplets", "base", "adapter"}
    for name in ("csv_set", "jsonl_set"):
        entry = metrics["external"][name]
        assert entry["pairs"] == 20 and entry["positives"] == 10
        assert {"base", "adapter", "delta"} <= set(entry)
        assert 0 <= entry["adapter"]["roc_auc"] <= 1
        assert "at_recommended_threshold" in entry["base"]
    rec = metrics["recommended_threshold"]
    assert rec["deploy_precision"] == 0.9 and "moves the similarity scale" in rec["note"]
    assert (rec["chosen_on"], rec["calibration_triplets"], rec["calibration_triplets_available"]) == ("val", 40, 60)
    assert metrics["settings"]["calibration_triplets"] == str(real_val_triplets)
    assert metrics["settings"]["max_calibration_triplets"] == 40
    assert metrics["counts"]["triplets"] == 48  # calibration triplets are not counted as test triplets
    for key in ("base", "adapter"):
        if rec[key] is not None:
            # Chosen on val: the precision target holds there; the headline figures are on test.
            assert rec[key]["calibration"]["precision"] >= 0.9
            assert rec[key]["meets_deploy_precision_on_test"] == (rec[key]["precision"] >= 0.9)
            assert rec["cache"][key]["threshold"] == rec[key]["threshold"]
    if rec["adapter"] and rec["base"]:
        assert rec["base_at_adapter_threshold"]["threshold"] == rec["adapter"]["threshold"]
        assert rec["adapter_at_base_threshold"]["threshold"] == rec["base"]["threshold"]
    assert metrics["settings"]["bootstrap"] == 100
    assert metrics["versions"]["peft"] and metrics["versions"]["sentence_transformers"]
    markdown = (evaluated / "metrics.md").read_text(encoding="utf-8")
    assert "Training moves the similarity scale" in markdown and "## External labelled pairs" in markdown
    assert "CHOSEN on 40 validation triplets" in markdown and "MEASURED on the test triplets" in markdown
    for plot in ("similarity_histograms", "precision_recall", "threshold_sweep"):
        assert (evaluated / "plots" / f"{plot}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compute_metrics_matches_direct_cosines():
    """compute_metrics on hand-made embeddings agrees with cosine figures computed directly."""
    rng = np.random.default_rng(1)
    triplets = [{"anchor": f"q{i}", "positive": f"p{i}", "negative": f"n{i}", "qtype": "x", "negative_kind": "k"} for i in range(30)]
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
    assert metrics["test"]["by_qtype"]["x"]["adapter"]["roc_auc"] == pytest.approx(metrics["test"]["adapter"]["roc_auc"])
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
        for i, (p, n) in enumerate(zip(pos, neg)):
            texts = {field: f"{name}-{field}-{i}" for field in ("anchor", "positive", "negative")}
            for field, cosine in (("anchor", 1.0), ("positive", p), ("negative", n)):
                vector = np.zeros(dims, dtype=np.float32)
                vector[2 * plane], vector[2 * plane + 1] = cosine, np.sqrt(max(0.0, 1 - cosine ** 2))
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
    triplets, texts, embeddings = planted({"test": (TEST_POS, TEST_NEG),
                                           "val": ([0.80 + 0.01 * i for i in range(20)], [0.75 + 0.01 * i for i in range(20)])})
    external = {"ext": {"file": "x", "pairs": [("test-anchor-0", "test-positive-0", 1), ("test-anchor-0", "test-negative-0", 0)]}}
    metrics, curves = evaluate_adapter.compute_metrics(triplets["test"], texts, embeddings, external, [0.9], [0.99], 0.99, 0, 1,
                                                       calibration=triplets["val"])
    fallback, _ = evaluate_adapter.compute_metrics(triplets["test"], texts, embeddings, external, [0.9], [0.99], 0.99, 0, 1)
    rec, old = metrics["recommended_threshold"], fallback["recommended_threshold"]
    assert (rec["chosen_on"], rec["calibration_triplets"]) == ("val", 20)
    assert (old["chosen_on"], old["calibration_triplets"]) == ("test", 20)
    for name in ("base", "adapter"):
        assert rec[name]["threshold"] == pytest.approx(0.95, abs=1e-6)
        assert old[name]["threshold"] == pytest.approx(0.80, abs=1e-6)
        assert rec[name]["calibration"]["precision"] == 1.0 and rec[name]["calibration"]["recall"] == pytest.approx(5 / 20)
        assert (rec[name]["precision"], rec[name]["recall"]) == (1.0, pytest.approx(5 / 20))  # on test
        assert (old[name]["precision"], old[name]["recall"]) == (1.0, 1.0)  # optimistic: chosen where reported
        assert old[name]["calibration"] == {key: old[name][key] for key in ("precision", "recall", "f1")}
        assert rec[name]["meets_deploy_precision_on_test"] is True
        assert rec["cache"][name]["threshold"] == rec[name]["threshold"]
        assert metrics["test"]["by_qtype"]["x"][name]["at_recommended_threshold"]["threshold"] == rec[name]["threshold"]
        assert metrics["external"]["ext"][name]["at_recommended_threshold"]["threshold"] == rec[name]["threshold"]
    assert curves["recommended"]["adapter"] == rec["adapter"]["threshold"] and curves["chosen_on"] == "val"
    # Everything else is the same with or without calibration.
    assert metrics["test"]["adapter"] == fallback["test"]["adapter"]
    assert set(metrics) == set(fallback) and set(rec) == set(old)
    markdown = evaluate_adapter.render_markdown(metrics)
    assert "CHOSEN on 20 validation triplets" in markdown and "WARNING" not in markdown
    assert "chosen on the test triplets themselves" in evaluate_adapter.render_markdown(fallback)


def test_test_precision_under_the_deploy_precision_is_flagged():
    # Val misses stay under 0.60, so 0.60 is chosen; on test, misses reach 0.79: precision 1/2.
    triplets, texts, embeddings = planted({"test": (TEST_POS, TEST_NEG),
                                           "val": ([0.60 + 0.01 * i for i in range(20)], [0.40 + 0.01 * i for i in range(20)])})
    metrics, _ = evaluate_adapter.compute_metrics(triplets["test"], texts, embeddings, {}, [0.9], [0.99], 0.99, 0, 1,
                                                  calibration=triplets["val"], calibration_available=50)
    rec = metrics["recommended_threshold"]
    assert rec["calibration_triplets_available"] == 50
    assert rec["adapter"]["threshold"] == pytest.approx(0.60, abs=1e-6)
    assert rec["adapter"]["calibration"]["precision"] == 1.0
    assert rec["adapter"]["precision"] == pytest.approx(0.5) and rec["adapter"]["meets_deploy_precision_on_test"] is False
    warnings = evaluate_adapter.precision_warnings(rec)
    assert len(warnings) == 2 and "only 0.500 on test, under the deploy precision 0.99" in warnings[0]
    assert "> **WARNING:** the adapter's threshold 0.6000" in evaluate_adapter.render_markdown(metrics)


def test_calibration_subset_is_seeded_and_in_file_order():
    triplets = [{"id": i} for i in range(100)]
    first = evaluate_adapter.calibration_subset(triplets, 30, seed=7)
    assert first == evaluate_adapter.calibration_subset(triplets, 30, seed=7)
    assert len(first) == 30 and [t["id"] for t in first] == sorted(t["id"] for t in first)
    assert first != evaluate_adapter.calibration_subset(triplets, 30, seed=8)
    assert evaluate_adapter.calibration_subset(triplets, 0, seed=7) == triplets
    assert evaluate_adapter.calibration_subset(triplets, 500, seed=7) == triplets


def test_cli_rejects_bad_calibration_file_before_loading_models(tmp_path, capsys):
    triplets = tmp_path / "t.jsonl"
    triplets.write_text(json.dumps({"anchor": "a", "positive": "b", "negative": "c"}) + "\n", encoding="utf-8")
    val = tmp_path / "val.jsonl"
    val.write_text(json.dumps({"id": "v1", "anchor": "a", "positive": " ", "negative": "c"}) + "\n", encoding="utf-8")
    rc = evaluate_adapter.run_main(evaluate_adapter.main, [
        "--triplets", str(triplets), "--base-model", str(tmp_path / "none"), "--adapter", str(tmp_path / "none"),
        "--output-json", str(tmp_path / "m.json"), "--output-md", str(tmp_path / "m.md"), "--plots-dir", str(tmp_path / "p"),
        "--calibration-triplets", str(val),
    ])
    assert rc == 1
    assert f"{val}: triplet 1 (id v1) has no text in 'positive'" in capsys.readouterr().err
