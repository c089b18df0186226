"""The data stage on the real MedQuAD archive and on hand-made bad inputs."""

from __future__ import annotations

import json
import re
import unicodedata
import zipfile
from pathlib import Path

import download_medquad
import import_queries
import parse_medquad
import pytest

from cache_embed.common.files import read_jsonl
from conftest import MEDQUAD_COMMIT, run_snakemake, step_argv

TOP = f"MedQuAD-{MEDQUAD_COMMIT}"
GOOD_DOCUMENT = """<?xml version="1.0" encoding="UTF-8"?>
<Document id="0000001" source="GARD" url="https://example.org/">
<Focus>Example Syndrome</Focus>
<FocusAnnotations><UMLS><CUIs><CUI>C0000001</CUI></CUIs><SemanticTypes><SemanticType>T047</SemanticType>
</SemanticTypes><SemanticGroup>Disorders</SemanticGroup></UMLS><Synonyms><Synonym>ES</Synonym></Synonyms>
</FocusAnnotations>
<QAPairs>
<QAPair pid="1"><Question qid="0000001-1" qtype="symptoms">What are the  symptoms of
 Example Syndrome ?</Question><Answer>Fever.</Answer></QAPair>
<QAPair pid="2"><Question qid="0000001-2" qtype="treatment">What are the treatments for Example Syndrome ?</Question>
<Answer></Answer></QAPair>
</QAPairs>
</Document>
"""


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def parse_args(tmp_path: Path, archive: Path, *extra: str) -> list[str]:
    return [
        "--archive",
        str(archive),
        "--output",
        str(tmp_path / "q.jsonl"),
        "--rejects",
        str(tmp_path / "r.jsonl"),
        "--stats",
        str(tmp_path / "s.json"),
        "--min-collections",
        "1",
        # Synthetic archives: the schema's settings, with no pinned content digest.
        *step_argv("parse", medquad={"content_sha256": ""}),
        *extra,
    ]


def twelve_collections(document: bytes = GOOD_DOCUMENT.encode()) -> dict[str, bytes]:
    return {
        f"{TOP}/{i}_Collection/{i:07d}.xml": document.replace(b"0000001", f"{i:07d}".encode()) for i in range(1, 13)
    }


# ---- the real archive -------------------------------------------------------------------------


def test_real_archive_parses_to_distinct_queries(medquad_splits):
    stats = json.loads((medquad_splits / "queries.stats.json").read_text())
    assert stats["records"] >= 43_000
    assert len(stats["records_by_collection"]) == 12
    assert len(stats["records_by_qtype"]) >= 37
    assert stats["rejects"] == 0
    assert stats["documents"] == 11_274
    records = list(read_jsonl(medquad_splits / "queries.jsonl"))
    assert len({r["id"] for r in records}) == len(records)
    required = {
        "id",
        "query",
        "qtype",
        "focus",
        "source",
        "document_id",
        "qid",
        "cuis",
        "semantic_types",
        "semantic_group",
        "synonyms",
        "category",
        "has_answer",
        "occurrences",
    }
    assert all(required <= set(r) for r in records)
    # Questions whose answers were removed upstream (MedlinePlus collections) are kept.
    drugs = [r for r in records if r["collection"] == "11_MPlusDrugs_QA"]
    assert drugs and not any(r["has_answer"] for r in drugs)
    # The few documents in other schemas (lower-case NINDS <doc>, CDC <DiseaseFile>) are read too.
    assert any(r["document_id"] == "0000007" and r["collection"] == "6_NINDS_QA" for r in records)


def _independent_link_strings(record: dict) -> set[str]:
    """What must not cross splits, computed here without split_queries' code: CUIs, and the
    normalised focus, occurrence foci and synonyms of 5+ characters that are not bare
    abbreviations (all capitals, up to 8 characters)."""

    def norm(text):
        return " ".join(re.sub(r"[^\w]+", " ", unicodedata.normalize("NFC", text).casefold()).split())

    strings = {f"cui {cui}" for cui in record.get("cuis") or []}
    texts = [record.get("focus")] + [o.get("focus") for o in record.get("occurrences") or []]
    texts += list(record.get("synonyms") or [])
    for text in texts:
        if not isinstance(text, str):
            continue
        key = norm(text)
        if len(key) >= 5 and not (len(text.strip()) <= 8 and text.strip() == text.strip().upper()):
            strings.add(key)
    return strings


def test_real_archive_splits_are_focus_disjoint(medquad_splits):
    stats = json.loads((medquad_splits / "split.stats.json").read_text())
    assert stats["focus_overlap_total"] == 0
    sizes = stats["sizes"]
    assert sum(sizes.values()) == stats["records"]
    assert 0.7 < sizes["train"] / stats["records"] < 0.9
    assert all(sizes[s] > 2000 for s in ("val", "test"))
    # The leak check measured independently: no val or test record shares a CUI, focus, occurrence
    # focus or synonym string with a record of another split.
    strings = {
        split: [_independent_link_strings(r) for r in read_jsonl(medquad_splits / f"{split}.jsonl")]
        for split in ("train", "val", "test")
    }
    union = {split: set().union(*rows) for split, rows in strings.items()}
    assert len(union["train"]) > 20000 and sum(len(rows) for rows in strings.values()) == stats["records"]
    for split in ("val", "test"):
        others = set().union(*(union[o] for o in union if o != split))
        leaking = sum(1 for row in strings[split] if row & others)
        assert leaking == 0, f"{leaking} {split} records share a focus string with another split"
        assert stats["residual_overlap_share"][split] == 0.0
    # The check can fail: a record whose focus is a train record's synonym is caught.
    donor = next(
        r
        for r in read_jsonl(medquad_splits / "train.jsonl")
        if any(len(s) >= 8 and not s.isupper() for s in r.get("synonyms") or [])
    )
    synonym = next(s for s in donor["synonyms"] if len(s) >= 8 and not s.isupper())
    planted = {"id": "x", "focus": synonym.upper().swapcase(), "cuis": [], "synonyms": [], "occurrences": []}
    assert _independent_link_strings(planted) & union["train"]


def test_snakemake_data_stage_is_byte_identical_across_runs(tmp_path, medquad_archive):
    from conftest import copy_project

    outputs = []
    for name in ("first", "second"):
        project = copy_project(tmp_path / name, medquad_archive)
        run_snakemake(project, "results/medical/splits/test.jsonl")
        files = [
            "queries.jsonl",
            "queries.rejects.jsonl",
            "queries.stats.json",
            "splits/train.jsonl",
            "splits/val.jsonl",
            "splits/test.jsonl",
            "splits/stats.json",
        ]
        outputs.append({f: (project / "results" / "medical" / f).read_bytes() for f in files})
    assert outputs[0] == outputs[1]
    assert (tmp_path / "first" / "logs" / "medical" / "parse_medquad.log").read_text().count("0 rejects") == 1


# ---- bad inputs: each a clear error or a counted reject -------------------------------------------


def test_truncated_zip_is_a_clear_error(tmp_path, medquad_archive, capsys):
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(medquad_archive.read_bytes()[:5_000_000])
    code = _run_main(parse_medquad, parse_args(tmp_path, truncated))
    message = capsys.readouterr().err
    assert code == 1 and "not a readable zip archive" in message and str(truncated) in message
    assert not (tmp_path / "q.jsonl").exists()


def _run_main(module, argv):
    from cache_embed.common.cli import run_main

    return run_main(module.main, argv)


def test_corrupt_member_is_a_clear_error(tmp_path, capsys):
    archive = make_zip(tmp_path / "corrupt.zip", twelve_collections())
    data = bytearray(archive.read_bytes())
    # Flip bytes inside the first member's compressed data (after its local header).
    offset = data.find(b"<?xml")
    data[offset : offset + 40] = b"X" * 40
    archive.write_bytes(bytes(data))
    code = _run_main(parse_medquad, parse_args(tmp_path, archive))
    message = capsys.readouterr().err
    assert code == 1 and "corrupt" in message and "Collection" in message


@pytest.mark.parametrize("name", ["../evil.xml", "/etc/evil.xml", f"{TOP}/../../evil.xml"])
def test_zip_slip_entry_is_refused(tmp_path, capsys, name):
    archive = make_zip(tmp_path / "slip.zip", {**twelve_collections(), name: GOOD_DOCUMENT.encode()})
    code = _run_main(parse_medquad, parse_args(tmp_path, archive))
    message = capsys.readouterr().err
    assert code == 1 and "refusing" in message and name.lstrip("/") in message


def test_unpacked_size_is_bounded(tmp_path, capsys):
    archive = make_zip(tmp_path / "big.zip", twelve_collections())
    code = _run_main(parse_medquad, parse_args(tmp_path, archive, "--max-unpacked-mb", "0.001"))
    assert code == 1 and "over the bound" in capsys.readouterr().err


def test_good_synthetic_archive_normalises_and_merges(tmp_path):
    members = twelve_collections()
    assert parse_medquad.main(parse_args(tmp_path, make_zip(tmp_path / "ok.zip", members))) == 0
    records = list(read_jsonl(tmp_path / "q.jsonl"))
    # The same two questions in 12 documents: two records, each keeping its 12 occurrences.
    assert len(records) == 2
    symptoms = next(r for r in records if r["qtype"] == "symptoms")
    assert symptoms["query"] == "What are the symptoms of Example Syndrome ?"
    assert len(symptoms["occurrences"]) == 12 and symptoms["has_answer"]
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["duplicates_merged"] == 22 and stats["rejects"] == 0


def test_malformed_xml_empty_question_and_non_utf8_are_counted_rejects(tmp_path, capsys):
    members = twelve_collections()
    members[f"{TOP}/1_Collection/bad.xml"] = b"<Document><Focus>broken</Document>"
    members[f"{TOP}/2_Collection/latin1.xml"] = GOOD_DOCUMENT.replace("Example", "Sj\xf6gren").encode("latin-1")
    members[f"{TOP}/3_Collection/empty.xml"] = GOOD_DOCUMENT.replace(
        "What are the treatments for Example Syndrome ?", "  "
    ).encode()
    archive = make_zip(tmp_path / "mixed.zip", members)
    # Three rejects among ~40 documents and questions: over the default bound of 1%, so the step fails...
    code = _run_main(parse_medquad, parse_args(tmp_path, archive))
    assert code == 1 and "exceed max_reject_fraction" in capsys.readouterr().err
    rejects = list(read_jsonl(tmp_path / "r.jsonl"))
    reasons = {r["file"]: r["reason"] for r in rejects}
    assert reasons == {
        "1_Collection/bad.xml": "xml_parse_error",
        "2_Collection/latin1.xml": "not_utf8",
        "3_Collection/empty.xml": "empty_question",
    }
    assert not (tmp_path / "q.jsonl").exists()
    # ...and with a looser bound the rest goes through, with the rejects written down.
    assert parse_medquad.main(parse_args(tmp_path, archive, "--max-reject-fraction", "0.5")) == 0
    assert json.loads((tmp_path / "s.json").read_text())["rejects_by_reason"] == {
        "empty_question": 1,
        "not_utf8": 1,
        "xml_parse_error": 1,
    }


def test_xml_entity_expansion_is_refused(tmp_path):
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
        b"<Document><Focus>&lol2;</Focus></Document>"
    )
    members = {**twelve_collections(), f"{TOP}/1_Collection/bomb.xml": bomb}
    assert (
        parse_medquad.main(parse_args(tmp_path, make_zip(tmp_path / "b.zip", members), "--max-reject-fraction", "0.5"))
        == 0
    )
    rejects = list(read_jsonl(tmp_path / "r.jsonl"))
    assert [r["reason"] for r in rejects] == ["xml_forbidden_construct"]


def test_wrong_content_digest_is_a_clear_error(tmp_path, capsys):
    archive = make_zip(tmp_path / "ok.zip", twelve_collections())
    code = _run_main(parse_medquad, parse_args(tmp_path, archive, "--content-sha256", "0" * 64))
    message = capsys.readouterr().err
    assert code == 1 and "does not match the pinned medquad.content_sha256" in message
    # download_medquad checks the same digest on what it fetched and leaves nothing behind.
    output = tmp_path / "resources" / "medquad" / "MedQuAD-x.zip"
    code = _run_main(
        download_medquad, [*step_argv("download", str(archive)), "--output", str(output), "--content-sha256", "0" * 64]
    )
    assert code == 1 and not output.exists() and not list(output.parent.glob("*download*"))


def test_download_from_local_source_verifies_real_archive(tmp_path, medquad_archive):
    output = tmp_path / "MedQuAD.zip"
    pinned = "a59511ec3c51ebc84321746251b298fa4b48cbf18938fd2dd0ad85323a0c0269"
    assert (
        download_medquad.main(
            [*step_argv("download", str(medquad_archive)), "--output", str(output), "--content-sha256", pinned]
        )
        == 0
    )
    assert output.read_bytes() == medquad_archive.read_bytes()


def test_offline_download_says_how_to_seed(tmp_path, capsys):
    output = tmp_path / "MedQuAD.zip"
    code = _run_main(download_medquad, [*step_argv("download", "http://127.0.0.1:9/none.zip"), "--output", str(output)])
    assert code == 1 and "Seed the archive" in capsys.readouterr().err and not output.exists()


# ---- config validation and other domains ---------------------------------------------------------


@pytest.mark.parametrize(
    "override, path",
    [
        ("split={'train': 1.5}", "train"),
        ("generate={'backend': 'gpt'}", "backend"),
        ("medquad={'content_sha256': 'xyz'}", "content_sha256"),
        ("unknown_key=1", "unknown_key"),
    ],
)
def test_invalid_config_fails_at_parse_time_naming_the_key(project, override, path):
    result = run_snakemake(project, "-n", "results/medical/splits/train.jsonl", "--config", override, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Error validating config" in output or "ValidationError" in output
    assert path in output


def test_import_queries_counts_rejects_and_merges_duplicates(tmp_path, capsys):
    source = tmp_path / "queries.jsonl"
    lines = [
        json.dumps({"query": "How do I reverse a list in Python?", "tag": "py"}),
        json.dumps({"query": "how do i reverse a list in python"}),
        "{not json",
        json.dumps({"question": "wrong field"}),
        json.dumps({"query": "   "}),
    ]
    lines += [json.dumps({"query": f"What does error E{i} mean?"}) for i in range(200)]
    source.write_text("\n".join(lines) + "\n")
    args = [
        "--source",
        str(source),
        "--domain",
        "programming",
        "--output",
        str(tmp_path / "q.jsonl"),
        "--rejects",
        str(tmp_path / "r.jsonl"),
        "--stats",
        str(tmp_path / "s.json"),
        *step_argv("import_queries", "medical"),
    ]
    assert _run_main(import_queries, args) == 1
    assert "3 of 205 lines rejected" in capsys.readouterr().err
    assert import_queries.main(args + ["--max-reject-fraction", "0.05"]) == 0
    records = list(read_jsonl(tmp_path / "q.jsonl"))
    assert len(records) == 201 and records[0]["meta"] == {"tag": "py"}
    assert sorted(r["line"] for r in read_jsonl(tmp_path / "r.jsonl")) == [3, 4, 5]
    text_file = tmp_path / "queries.txt"
    text_file.write_text("# comment\nWhat is a mutex?\n\nWhat is a semaphore?\n")
    assert (
        import_queries.main(
            [
                "--source",
                str(text_file),
                "--domain",
                "programming",
                "--output",
                str(tmp_path / "t.jsonl"),
                "--rejects",
                str(tmp_path / "tr.jsonl"),
                "--stats",
                str(tmp_path / "ts.json"),
                *step_argv("import_queries", "medical"),
            ]
        )
        == 0
    )
    assert [r["query"] for r in read_jsonl(tmp_path / "t.jsonl")] == ["What is a mutex?", "What is a semaphore?"]
