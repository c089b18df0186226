"""The `structure` triplet backend on the real MedQuAD splits: the forms bank keeps each qtype's
intent, the full train split yields label-correct triplets, val/test never see a train-only form,
output is deterministic, and the Snakemake rules run end to end (generate + gather)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import generate_triplets
import pytest
import yaml

from cache_embed.common.cli import PipelineError
from cache_embed.common.files import read_json, read_jsonl
from cache_embed.common.text import comparison_key
from cache_embed.generate.structure_generator import SPLIT_FORMS, forms_problems, load_forms, render
from conftest import STRUCTURE, run_snakemake, step_argv

FORMS = Path(__file__).resolve().parents[1] / "resources" / "domains" / "medical_forms.yaml"


def generate(splits_dir: Path, out: Path, split: str, *extra: str) -> tuple[Path, dict]:
    output = out / f"{split}.jsonl"
    assert (
        generate_triplets.main(
            [
                "--input",
                str(splits_dir / f"{split}.jsonl"),
                "--output",
                str(output),
                "--stats",
                str(out / f"{split}.stats.json"),
                "--split",
                split,
                "--domain",
                "medical",
                "--forms",
                str(FORMS),
                *step_argv("generate", "medical", **STRUCTURE),
                *extra,
            ]
        )
        == 0
    )
    return output, read_json(out / f"{split}.stats.json")


@pytest.fixture(scope="module")
def generated(tmp_path_factory, medquad_splits):
    """All three full splits, one shard each."""
    out = tmp_path_factory.mktemp("triplets")
    return {split: generate(medquad_splits, out, split) for split in ("train", "val", "test")}


# ----------------------------------------------------------------------------------- forms bank


def test_forms_bank_covers_every_qtype_and_keeps_intent(medquad_splits):
    bank = load_forms(FORMS)
    assert forms_problems(bank) == []
    qtypes = {r["qtype"] for r in read_jsonl(medquad_splits / "queries.jsonl")}
    assert len(qtypes) == 39 and qtypes <= set(bank["qtypes"])
    for qtype, entry in bank["qtypes"].items():
        assert len(entry["train"]) >= 2 and len(entry["heldout"]) >= 1, qtype
        assert not set(entry["train"]) & set(entry["heldout"]), qtype
        for form in entry["train"] + entry["heldout"]:
            assert form.strip() and "{focus}" in form
    for pair in bank["confusable_qtypes"]:
        assert set(pair) <= qtypes, pair


def test_forms_check_rejects_off_intent_missing_and_repeated_forms():
    bank = {
        "qtypes": {
            "symptoms": {
                "keywords": ["symptom", "sign"],
                "train": ["How is {focus} treated?", "{focus} symptoms", "{focus}  SYMPTOMS"],
                "heldout": ["what are the signs of gout"],
            }
        }
    }
    problems = " | ".join(forms_problems(bank))
    assert "none of the intent keywords" in problems  # treatment wording under symptoms
    assert "repeats another form" in problems
    assert "must contain {focus}" in problems


# ------------------------------------------------------------------------------- the full train


def split_index(path: Path):
    records = list(read_jsonl(path))
    by_id = {r["id"]: r for r in records}
    return records, by_id


def test_train_yield_and_label_correctness(generated, medquad_splits):
    path, stats = generated["train"]
    records, by_id = split_index(medquad_splits / "train.jsonl")
    bank = load_forms(FORMS)
    forms = {q: e["train"] for q, e in bank["qtypes"].items()}
    confusable = {frozenset(pair) for pair in bank["confusable_qtypes"]}
    assert stats["queries"] == len(records)
    assert stats["queries_with_triplets"] >= 0.95 * len(records)
    assert stats["yield"] >= 0.95
    # Every text a record may stand behind (its real question, its forms), by comparison key:
    # records of one focus may spell it with other capitals.
    texts = defaultdict(list)
    for record in records:
        if record["focus"]:
            texts[comparison_key(record["query"])].append(record)
            for form in forms[record["qtype"]]:
                texts[comparison_key(render(form, record["focus"]))].append(record)
    triplets = list(read_jsonl(path))
    assert len(triplets) == stats["triplets"] >= 2.5 * len(records)
    kinds = defaultdict(int)
    for t in triplets:
        anchor = by_id[t["query_id"]]
        assert t["anchor"] == anchor["query"] and t["qtype"] == anchor["qtype"] and t["focus"] == anchor["focus"]
        assert t["backend"] == "structure" and t["model"] is None and t["split"] == "train"
        names = [anchor["focus"], *anchor["synonyms"]]
        # Positive: the anchor's qtype, about its focus or one of its synonyms.
        if t["positive_kind"] == "surface_form":
            assert t["positive"] in {render(f, anchor["focus"]) for f in forms[anchor["qtype"]]}
        elif t["positive_kind"] == "synonym_form":
            assert t["positive"] in {render(f, s) for f in forms[anchor["qtype"]] for s in anchor["synonyms"]}
        else:
            assert t["positive_kind"] == "synonym"
            assert any(comparison_key(s) in comparison_key(t["positive"]) for s in anchor["synonyms"])
        assert any(comparison_key(n) in comparison_key(t["positive"]) for n in names)
        # Negative: a real question (or its re-rendering) of the split, of the declared kind.
        sources = texts[comparison_key(t["negative"])]
        assert sources, t
        if t["negative_kind"] == "same_focus_other_qtype":
            assert t["negative_qtype"] != anchor["qtype"]
            assert frozenset((anchor["qtype"], t["negative_qtype"])) not in confusable, t
            assert any(
                comparison_key(s["focus"]) == comparison_key(anchor["focus"]) and s["qtype"] == t["negative_qtype"]
                for s in sources
            ), t
        else:
            assert t["negative_kind"] == "same_qtype_other_focus" and t["negative_qtype"] == anchor["qtype"]
            assert any(
                s["qtype"] == anchor["qtype"]
                and comparison_key(s["focus"]) != comparison_key(anchor["focus"])
                and (
                    set(s["semantic_types"]) & set(anchor["semantic_types"])
                    if anchor["semantic_types"]
                    else s["category"] == anchor["category"]
                )
                for s in sources
            ), t
        kinds[t["negative_kind"]] += 1
    # Kind 1 (same focus, other qtype) is preferred.
    assert kinds["same_focus_other_qtype"] > 3 * kinds["same_qtype_other_focus"] > 0
    assert set(stats["synonyms_filtered"]) >= {"too_long", "identical_to_focus", "other_focus_in_split"}


def test_val_and_test_use_only_heldout_forms(generated, medquad_splits):
    bank = load_forms(FORMS)["qtypes"]
    assert SPLIT_FORMS == {"train": "train", "val": "heldout", "test": "heldout"}
    for split in ("val", "test"):
        path, stats = generated[split]
        records, by_id = split_index(medquad_splits / f"{split}.jsonl")
        assert stats["yield"] >= 0.95
        names = defaultdict(set)
        for record in records:
            names[comparison_key(record["focus"])].update([record["focus"], *record["synonyms"]])
        train_forms = [f for entry in bank.values() for f in entry["train"]]
        train_renderings = {key: {render(f, n) for n in group for f in train_forms} for key, group in names.items()}
        used_heldout = 0
        for t in read_jsonl(path):
            anchor = by_id[t["query_id"]]
            forbidden = train_renderings[comparison_key(anchor["focus"])]
            assert t["positive"] not in forbidden, t
            assert t["negative"] not in forbidden, t
            if t["positive_kind"] in ("surface_form", "synonym_form"):
                used_heldout += 1
        assert used_heldout > 0


def test_same_seed_same_bytes_other_seed_differs(generated, medquad_splits, tmp_path):
    path, _ = generated["val"]
    again, _ = generate(medquad_splits, tmp_path, "val")
    assert again.read_bytes() == path.read_bytes()
    other = tmp_path / "seed"
    other.mkdir()
    changed, _ = generate(medquad_splits, other, "val", "--seed", "7")
    assert changed.read_bytes() != path.read_bytes()
    # Shards partition the queries: the union of 3 shards is the whole split's triplets.
    shards = tmp_path / "shards"
    shards.mkdir()
    lines = []
    for k in range(3):
        assert (
            generate_triplets.main(
                [
                    "--input",
                    str(medquad_splits / "val.jsonl"),
                    "--output",
                    str(shards / f"{k}.jsonl"),
                    "--stats",
                    str(shards / f"{k}.stats.json"),
                    "--split",
                    "val",
                    "--domain",
                    "medical",
                    "--forms",
                    str(FORMS),
                    "--shard",
                    str(k),
                    "--shards",
                    "3",
                    *step_argv("generate", "medical", **STRUCTURE),
                ]
            )
            == 0
        )
        lines += (shards / f"{k}.jsonl").read_text().splitlines()
    assert sorted(lines) == sorted(path.read_text().splitlines())


def test_yield_under_min_yield_fails_and_writes_nothing(medquad_splits, tmp_path):
    # The real val split yields 99.9%: demanding 100% must fail with a clear error, no output.
    with pytest.raises(PipelineError, match="min-yield"):
        generate(medquad_splits, tmp_path, "val", "--min-yield", "1.0")
    assert not (tmp_path / "val.jsonl").exists() and not (tmp_path / "val.stats.json").exists()


def test_split_without_annotations_is_refused(tmp_path):
    split = tmp_path / "val.jsonl"
    split.write_text("".join(json.dumps({"id": f"q{i}", "query": f"question {i}"}) + "\n" for i in range(5)))
    with pytest.raises(PipelineError, match="needs MedQuAD-style"):
        generate(tmp_path, tmp_path / "out", "val")


# ------------------------------------------------------------------------------------ snakemake


def test_snakemake_generate_and_gather_local_structure(project):
    local = project / "config" / "structure-test.yaml"
    local.write_text(
        yaml.safe_dump(
            {
                "domains": {
                    "medical": {"queries": "medquad", "spec": "resources/domains/medical.yaml", "backend": "structure"}
                },
                "medquad": {"archive": "resources/medquad/MedQuAD-577bd37b96c02d1833b2c9eed2de9f96964e96cb.zip"},
                "generate": {"shards": 2, "max_queries": 1500},
            }
        )
    )
    targets = [f"results/medical/triplets/{s}.jsonl" for s in ("train", "val", "test")]
    run_snakemake(project, "--configfile", str(local), "--", *targets)
    for split in ("train", "val", "test"):
        stats = read_json(project / f"results/medical/triplets/{split}.stats.json")
        lines = (project / f"results/medical/triplets/{split}.jsonl").read_text().splitlines()
        assert stats["shards"] == 2 and stats["queries"] == 1500 and stats["yield"] >= 0.95
        assert stats["triplets"] == len(lines) == len({json.loads(line)["id"] for line in lines})
        assert (project / f"logs/medical/generate_triplets/{split}/1-of-2.log").exists()
        assert (project / f"benchmarks/medical/generate_triplets/{split}/0-of-2.tsv").exists()
    # Nothing left to do on a second run.
    again = run_snakemake(project, "--configfile", str(local), "--dry-run", "--", *targets)
    assert "Nothing to be done" in again.stdout + again.stderr


# ------------------------------------------------------------------- the LLM path through the core


def test_generate_triplets_openai_backend_against_canned_test_server(tmp_path, monkeypatch):
    """The core's LLM path (llm_backends + shared filters + stats) against the canned OpenAI-protocol
    TEST server (not a model): failures are counted by reason and yield is enforced."""
    from openai_test_server import CannedServer

    spec = Path(__file__).resolve().parents[1] / "resources" / "domains" / "medical.yaml"
    openai = {"generate": {"backend": "openai"}}
    markers = ["", "", "", "", "", "[[invalid_json]] ", "[[truncated]] ", ""]
    (tmp_path / "in").mkdir()
    split = tmp_path / "in" / "val.jsonl"
    split.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"q{i}",
                    "query": f"{m}What are the symptoms of condition {i} ?",
                    "qtype": "symptoms",
                    "focus": f"condition {i}",
                }
            )
            + "\n"
            for i, m in enumerate(markers)
        )
    )
    monkeypatch.setenv("CANNED_KEY", "x")
    with CannedServer(delay_s=0.0) as server:
        args = [
            *step_argv("generate", "medical", **openai),
            *step_argv("generate_runtime_options", "medical", 0, **openai),
            "--backend",
            "openai",
            "--spec",
            str(spec),
            "--model",
            "canned",
            "--base-url",
            server.base_url,
            "--api-key-env",
            "CANNED_KEY",
            "--max-retries",
            "0",
            "--batch-size",
            "4",
            "--openai-retries",
            "0",
        ]
        path, stats = generate(tmp_path / "in", tmp_path, "val", *args)
        with pytest.raises(PipelineError, match="min-yield"):
            generate(tmp_path / "in", tmp_path / "strict", "val", *args, "--min-yield", "0.9")
    triplets = list(read_jsonl(path))
    assert stats["queries"] == 8 and stats["queries_with_triplets"] == 6 and stats["yield"] == 0.75
    assert sum(stats["failures"].values()) == 2 and stats["model"] == "canned"
    assert len(triplets) == stats["triplets"] == 6 * 3
    assert {t["positive_kind"] for t in triplets} == {"llm_paraphrase"}
    assert {t["negative_kind"] for t in triplets} == {"llm_hard_negative"}
    assert all(t["backend"] == "openai" and t["model"] == "canned" for t in triplets)
