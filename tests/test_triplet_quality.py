"""The shared triplet quality filters (every drop reason) and the shard merge (gather_triplets)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import gather_triplets
import generate_triplets
import pytest

from cache_embed.common.cli import PipelineError
from cache_embed.common.files import read_json
from cache_embed.generate.triplet_quality import Candidate, build_triplets, near_copy
from conftest import STRUCTURE, step_argv

FORMS = Path(__file__).resolve().parents[1] / "resources" / "domains" / "medical_forms.yaml"
ANCHOR = "What are the symptoms of Gout ?"


def pos(text, kind="surface_form"):
    return Candidate(text, kind, "symptoms")


def neg(text, kind="same_focus_other_qtype", qtype="treatment"):
    return Candidate(text, kind, qtype)


def run(positives, negatives, max_positives=3, max_negatives=2):
    drops = Counter()
    return build_triplets(ANCHOR, positives, negatives, max_positives, max_negatives, drops), drops


def test_keeps_good_pairs_and_cycles_negatives():
    pairs, drops = run(
        [pos("gout symptoms"), pos("What are the signs of gout?"), pos("Podagra symptoms", "synonym_form")],
        [neg("What are the treatments for Gout ?"), neg("How to prevent Gout ?")],
    )
    assert [(p.text, n.text) for p, n in pairs] == [
        ("gout symptoms", "What are the treatments for Gout ?"),
        ("What are the signs of gout?", "How to prevent Gout ?"),
        ("Podagra symptoms", "What are the treatments for Gout ?"),
    ]
    assert not drops


def test_empty_items_are_dropped_and_counted():
    pairs, drops = run([pos(""), pos("  ?! "), pos("gout symptoms")], [neg(""), neg("gout treatment")])
    assert len(pairs) == 1
    assert drops == Counter(empty_positive=2, empty_negative=1)


def test_positive_copying_the_anchor_is_dropped():
    pairs, drops = run([pos("what are the SYMPTOMS of gout?"), pos("gout symptoms")], [neg("gout treatment")])
    assert [p.text for p, _ in pairs] == ["gout symptoms"]
    assert drops == Counter(positive_copies_anchor=1)


def test_duplicate_paraphrases_are_dropped():
    pairs, drops = run([pos("gout symptoms"), pos("Gout  symptoms!"), pos("gout signs")], [neg("gout treatment")])
    assert [p.text for p, _ in pairs] == ["gout symptoms", "gout signs"]
    assert drops == Counter(duplicate_positive=1)


def test_negative_equal_or_near_copy_of_anchor_is_dropped():
    near = "What are the symptoms of Gout ??"  # same comparison key
    almost = "What are the symptom of Gout ?"  # one letter off: difflib ratio >= 0.95
    assert near_copy(almost, ANCHOR) and not near_copy("What are the treatments for Gout ?", ANCHOR)
    pairs, drops = run([pos("gout symptoms")], [neg(near), neg(almost), neg("gout treatment")])
    assert [n.text for _, n in pairs] == ["gout treatment"]
    assert drops == Counter(negative_copies_anchor=2)


def test_negative_equal_to_a_positive_or_another_negative_is_dropped():
    pairs, drops = run([pos("gout symptoms")], [neg("Gout symptoms?"), neg("gout treatment"), neg("GOUT treatment")])
    assert [n.text for _, n in pairs] == ["gout treatment"]
    assert drops == Counter(negative_equals_positive=1, duplicate_negative=1)


def test_caps_are_applied_and_counted():
    pairs, drops = run(
        [pos(f"gout symptoms {i}") for i in range(5)],
        [neg(f"gout treatment {i}") for i in range(4)],
        max_positives=3,
        max_negatives=2,
    )
    assert len(pairs) == 3 and len({n.text for _, n in pairs}) == 2
    assert drops == Counter(positive_over_cap=2, negative_over_cap=2)


def test_positives_without_any_usable_negative_yield_nothing_and_are_counted():
    pairs, drops = run([pos("gout symptoms"), pos("gout signs")], [neg(ANCHOR)])
    assert pairs == []
    assert drops == Counter(negative_copies_anchor=1, positive_without_negative=2)


# ------------------------------------------------------------------------------------- gather


@pytest.fixture(scope="module")
def shard_run(tmp_path_factory, medquad_splits):
    """Two shards of a 400-query subset of the real val split (structure backend)."""
    out = tmp_path_factory.mktemp("shards")
    split = out / "val.jsonl"
    shutil.copy(medquad_splits / "val.jsonl", split)
    for shard in range(2):
        make_shard(out, split, shard, 2)
    return out, split


def make_shard(out, split, shard, shards, seed=42):
    assert (
        generate_triplets.main(
            [
                "--input",
                str(split),
                "--output",
                str(out / f"{shard}-of-{shards}.jsonl"),
                "--stats",
                str(out / f"{shard}-of-{shards}.stats.json"),
                "--split",
                "val",
                "--domain",
                "medical",
                *step_argv("generate", "medical", **STRUCTURE),
                "--shard",
                str(shard),
                "--shards",
                str(shards),
                "--max-queries",
                "400",
                "--seed",
                str(seed),
                "--forms",
                str(FORMS),
            ]
        )
        == 0
    )


def gather_args(out, split, shards=2, names=None, target="merged"):
    names = names or [f"{k}-of-{shards}" for k in range(shards)]
    return [
        "--triplets",
        *[str(out / f"{n}.jsonl") for n in names],
        "--shard-stats",
        *[str(out / f"{n}.stats.json") for n in names],
        "--input",
        str(split),
        "--split",
        "val",
        "--shards",
        str(shards),
        "--output",
        str(out / f"{target}.jsonl"),
        "--stats",
        str(out / f"{target}.stats.json"),
    ]


def test_gather_merges_shards_sorted_and_rerun_gives_the_same_bytes(shard_run):
    out, split = shard_run
    assert gather_triplets.main(gather_args(out, split)) == 0
    first = (out / "merged.jsonl").read_bytes()
    lines = first.decode().splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    stats = read_json(out / "merged.stats.json")
    shard_stats = [read_json(out / f"{k}-of-2.stats.json") for k in range(2)]
    assert stats["triplets"] == len(lines) == sum(s["triplets"] for s in shard_stats)
    assert stats["queries"] == 400 and stats["duplicate_triplets_removed"] == 0
    assert sum(stats["negative_kinds"].values()) == sum(stats["positive_kinds"].values()) == len(lines)
    assert stats["per_backend"] == {"structure": len(lines)}
    # Re-running generate and gather overwrites: no duplicates, same bytes.
    make_shard(out, split, 0, 2)
    assert gather_triplets.main(gather_args(out, split)) == 0
    assert (out / "merged.jsonl").read_bytes() == first


def test_gather_removes_duplicate_triplet_ids(shard_run, tmp_path):
    out, split = shard_run
    for path in out.glob("*-of-2*"):
        shutil.copy(path, tmp_path / path.name)
    line = (tmp_path / "0-of-2.jsonl").read_text().splitlines()[0]
    with (tmp_path / "1-of-2.jsonl").open("a") as handle:
        handle.write(line + "\n")
    stats = read_json(tmp_path / "1-of-2.stats.json")
    stats["triplets"] += 1
    (tmp_path / "1-of-2.stats.json").write_text(json.dumps(stats))
    assert gather_triplets.main(gather_args(tmp_path, split)) == 0
    merged = read_json(tmp_path / "merged.stats.json")
    assert merged["duplicate_triplets_removed"] == 1
    assert merged["triplets"] == sum(read_json(out / f"{k}-of-2.stats.json")["triplets"] for k in range(2))


def test_gather_refuses_missing_partial_and_stale_shards(shard_run, tmp_path):
    out, split = shard_run
    for path in out.glob("*-of-2*"):
        shutil.copy(path, tmp_path / path.name)
    with pytest.raises(PipelineError, match="expected 3 shards"):
        gather_triplets.gather(
            [str(tmp_path / f"{k}-of-2.jsonl") for k in range(2)],
            [str(tmp_path / f"{k}-of-2.stats.json") for k in range(2)],
            str(split),
            "val",
            3,
        )
    with pytest.raises(PipelineError, match="given twice"):
        gather_triplets.gather(
            [str(tmp_path / "0-of-2.jsonl")] * 2, [str(tmp_path / "0-of-2.stats.json")] * 2, str(split), "val", 2
        )
    # A shard made with another seed is stale.
    make_shard(tmp_path, split, 1, 2, seed=7)
    with pytest.raises(PipelineError, match="other settings"):
        gather_triplets.gather(
            [str(tmp_path / f"{k}-of-2.jsonl") for k in range(2)],
            [str(tmp_path / f"{k}-of-2.stats.json") for k in range(2)],
            str(split),
            "val",
            2,
        )
    make_shard(tmp_path, split, 1, 2)
    # A truncated shard file is partial.
    lines = (tmp_path / "1-of-2.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "1-of-2.jsonl").write_text("".join(lines[:-3]))
    with pytest.raises(PipelineError, match="partial or stale"):
        gather_triplets.gather(
            [str(tmp_path / f"{k}-of-2.jsonl") for k in range(2)],
            [str(tmp_path / f"{k}-of-2.stats.json") for k in range(2)],
            str(split),
            "val",
            2,
        )
    make_shard(tmp_path, split, 1, 2)
    # Shards of a 3-shard run, or from an older split file, are stale.
    make_shard(tmp_path, split, 2, 3)
    with pytest.raises(PipelineError, match="3-shard run"):
        gather_triplets.gather(
            [str(tmp_path / "0-of-2.jsonl"), str(tmp_path / "2-of-3.jsonl")],
            [str(tmp_path / "0-of-2.stats.json"), str(tmp_path / "2-of-3.stats.json")],
            str(split),
            "val",
            2,
        )
    changed = tmp_path / "val.jsonl"
    changed.write_text("".join(split.read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(PipelineError, match="another version of the split"):
        gather_triplets.gather(
            [str(tmp_path / f"{k}-of-2.jsonl") for k in range(2)],
            [str(tmp_path / f"{k}-of-2.stats.json") for k in range(2)],
            str(changed),
            "val",
            2,
        )
