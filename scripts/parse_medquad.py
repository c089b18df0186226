"""parse_medquad: MedQuAD XML documents (read straight from the zip) to one JSONL record per distinct question.

Dedup policy: two questions are the same record when their comparison keys match
(NFC, whitespace collapsed, case and punctuation ignored). The record keeps the text
and annotations of its first occurrence in sorted document order, and lists every
occurrence (collection, document, qid, qtype, focus) under `occurrences`.

Rejects (a document that does not parse, a question with no text, a question with no
qtype) go to the rejects file with their reason; the step fails when they exceed
--max-reject-fraction of all documents plus questions seen.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path
from xml.etree.ElementTree import ParseError

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from cache_embed.common.cli import PipelineError, run_main, setup_logging
from cache_embed.common.files import write_json, write_jsonl
from cache_embed.common.text import comparison_key, normalise_whitespace, stable_id
from cache_embed.data.medquad_archive import (
    COLLECTION_COUNT,
    ContentDigest,
    iter_xml_members,
    open_archive,
    verify_digest,
)

LOG = logging.getLogger("parse_medquad")


# Most documents use <Document>/<Focus>/<FocusAnnotations>/<UMLS>/<CUIs>/<CUI>; a few NINDS files use a
# lower-case <doc> schema and one CDC file a <DiseaseFile> root with <UMLS> directly under it.
# Element names are mapped onto the main schema so one reader serves all three.
_TAG_ALIASES = {
    "doc": "Document",
    "diseasefile": "Document",
    "document": "Document",
    "doctitle-focus": "Focus",
    "focus": "Focus",
    "focusannotations": "FocusAnnotations",
    "umls": "UMLS",
    "cuis": "CUIs",
    "cui": "CUI",
    "semantictypes": "SemanticTypes",
    "semantictype": "SemanticType",
    "semanticgroup": "SemanticGroup",
    "synonyms": "Synonyms",
    "synonym": "Synonym",
    "category": "Category",
    "qapairs": "QAPairs",
    "qapair": "QAPair",
    "pair": "QAPair",
    "question": "Question",
    "answer": "Answer",
}
_ID_ATTRIBUTES = ("id", "docid", "fid")
_SOURCE_ATTRIBUTES = ("source", "corpus")


def _canonical_tags(root) -> None:
    for element in root.iter():
        element.tag = _TAG_ALIASES.get(element.tag.lower(), element.tag)


def _first_attribute(element, names):
    return next((element.get(name) for name in names if element.get(name)), None)


def _texts(element, path: str) -> list[str]:
    return [normalise_whitespace(node.text or "") for node in element.iterfind(path) if (node.text or "").strip()]


def parse_document(name: str, data: bytes) -> tuple[list[dict], list[dict]]:
    """Parse one XML document; return (question occurrences, rejects)."""
    collection = name.split("/", 1)[0] if "/" in name else ""
    try:
        root = SafeET.fromstring(data)
    except UnicodeDecodeError as error:
        return [], [{"file": name, "reason": "not_utf8", "detail": str(error)}]
    except ParseError as error:
        reason = (
            "not_utf8"
            if "encoding" in str(error) or "not well-formed (invalid token)" in str(error) and _not_utf8(data)
            else "xml_parse_error"
        )
        return [], [{"file": name, "reason": reason, "detail": str(error)}]
    except DefusedXmlException as error:
        return [], [{"file": name, "reason": "xml_forbidden_construct", "detail": type(error).__name__}]
    _canonical_tags(root)
    if root.tag != "Document":
        return [], [{"file": name, "reason": "not_a_medquad_document", "detail": f"root element <{root.tag}>"}]
    focus = normalise_whitespace(root.findtext("Focus") or "")
    annotations = root.find("FocusAnnotations")
    cuis: list[str] = []
    semantic_types: list[str] = []
    synonyms: list[str] = []
    semantic_group = category = None
    if annotations is None and root.find("UMLS") is not None:
        annotations = root
    if annotations is not None:
        cuis = _texts(annotations, "UMLS/CUIs/CUI") or _texts(annotations, "UMLS/CUI")
        semantic_types = _texts(annotations, "UMLS/SemanticTypes/SemanticType") or _texts(
            annotations, "UMLS/SemanticType"
        )
        semantic_group = normalise_whitespace(annotations.findtext("UMLS/SemanticGroup") or "") or None
        synonyms = _texts(annotations, "Synonyms/Synonym")
        category = normalise_whitespace(annotations.findtext("Category") or "") or None
    document_id = _first_attribute(root, _ID_ATTRIBUTES) or Path(name).stem
    source = _first_attribute(root, _SOURCE_ATTRIBUTES) or collection
    occurrences, rejects = [], []
    for pair in root.iterfind("QAPairs/QAPair"):
        question = pair.find("Question")
        qid = question.get("qid") if question is not None else None
        where = {"file": name, "document_id": document_id, "qid": qid}
        text = normalise_whitespace(question.text or "") if question is not None else ""
        if not text:
            rejects.append({**where, "reason": "empty_question"})
            continue
        qtype = normalise_whitespace(question.get("qtype") or "")
        if not qtype:
            rejects.append({**where, "reason": "missing_qtype", "query": text})
            continue
        answer = pair.find("Answer")
        occurrences.append(
            {
                "query": text,
                "qtype": qtype,
                "focus": focus,
                "collection": collection,
                "source": source,
                "document_id": document_id,
                "qid": qid or f"{document_id}-{pair.get('pid')}",
                "cuis": cuis,
                "semantic_types": semantic_types,
                "semantic_group": semantic_group,
                "synonyms": synonyms,
                "category": category,
                "has_answer": bool(answer is not None and (answer.text or "").strip()),
            }
        )
    return occurrences, rejects


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def merge_occurrences(occurrences: list[dict]) -> list[dict]:
    """One record per comparison key, in first-seen order; all occurrences kept."""
    records: dict[str, dict] = {}
    for occ in occurrences:
        key = comparison_key(occ["query"])
        where = {k: occ[k] for k in ("collection", "document_id", "qid", "qtype", "focus")}
        if key in records:
            records[key]["occurrences"].append(where)
            continue
        records[key] = {"id": stable_id("mq", key), **occ, "occurrences": [where]}
    return list(records.values())


def parse_archive(archive: Path, max_unpacked_bytes: int, expected_digest: str | None):
    digest = ContentDigest()
    occurrences, rejects = [], []
    with open_archive(archive) as zf:
        for name, data in iter_xml_members(zf, archive, max_unpacked_bytes):
            digest.update(name, data)
            found, bad = parse_document(name, data)
            occurrences.extend(found)
            rejects.extend(bad)
    verify_digest(archive, digest.hexdigest(), expected_digest)
    if digest.documents == 0:
        raise PipelineError(f"{archive}: holds no XML documents; it is not a MedQuAD archive")
    return occurrences, rejects, digest


def build_stats(records, occurrences, rejects, digest) -> dict:
    return {
        "documents": digest.documents,
        "content_sha256": digest.hexdigest(),
        "questions_seen": len(occurrences) + sum(1 for r in rejects if r.get("qid") is not None),
        "records": len(records),
        "duplicates_merged": len(occurrences) - len(records),
        "rejects": len(rejects),
        "rejects_by_reason": dict(sorted(Counter(r["reason"] for r in rejects).items())),
        "records_by_collection": dict(sorted(Counter(r["collection"] for r in records).items())),
        "records_by_qtype": dict(sorted(Counter(r["qtype"] for r in records).items())),
        "records_with_answer": sum(r["has_answer"] for r in records),
    }


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path, help="queries JSONL")
    parser.add_argument("--rejects", required=True, type=Path)
    parser.add_argument("--stats", required=True, type=Path)
    parser.add_argument(
        "--content-sha256", required=True, help="pinned digest of the XML content; empty skips the check"
    )
    parser.add_argument("--max-unpacked-mb", type=float, required=True)
    parser.add_argument("--max-reject-fraction", type=float, required=True)
    parser.add_argument("--min-collections", type=int, default=COLLECTION_COUNT)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    setup_logging()
    occurrences, rejects, digest = parse_archive(
        args.archive, int(args.max_unpacked_mb * 1024 * 1024), args.content_sha256 or None
    )
    records = merge_occurrences(occurrences)
    stats = build_stats(records, occurrences, rejects, digest)
    write_jsonl(args.rejects, rejects)
    write_json(args.stats, stats)
    seen = digest.documents + stats["questions_seen"]
    fraction = len(rejects) / max(seen, 1)
    LOG.info(
        "%d documents, %d questions, %d records, %d duplicates merged, %d rejects (%.3f%%)",
        digest.documents,
        len(occurrences),
        len(records),
        stats["duplicates_merged"],
        len(rejects),
        100 * fraction,
    )
    if fraction > args.max_reject_fraction:
        raise PipelineError(
            f"{args.archive}: {len(rejects)} rejects ({fraction:.2%}) exceed max_reject_fraction "
            f"{args.max_reject_fraction:.2%}; see {args.rejects} for each file and reason"
        )
    collections = len(stats["records_by_collection"])
    if collections < args.min_collections:
        raise PipelineError(
            f"{args.archive}: questions from {collections} collections, expected {args.min_collections}; "
            "the archive is incomplete"
        )
    write_jsonl(args.output, records)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
