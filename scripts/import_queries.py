"""import_queries: a user-supplied query file to the workflow's queries JSONL, for domains other than medical.

Accepted input: JSONL with a `query` field per line (other fields are kept under `meta`),
or plain text with one query per line (lines starting with '#' are comments).
Empty queries and lines that are not valid JSON objects are rejects, written with their
line number and reason; the step fails when they exceed --max-reject-fraction.
Duplicates (same comparison key) are merged into the first occurrence.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path

from cache_embed.common.cli import PipelineError, run_main, setup_logging
from cache_embed.common.files import write_json, write_jsonl
from cache_embed.common.text import comparison_key, normalise_whitespace, stable_id

LOG = logging.getLogger("import_queries")


def read_query_lines(path: Path):
    """Yield (line number, query text or None, reject reason or None, extra fields)."""
    is_jsonl = path.suffix.lower() in {".jsonl", ".ndjson", ".json"}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise PipelineError(f"{path}: not UTF-8 text (byte {error.start}); re-encode the file as UTF-8") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or (not is_jsonl and line.lstrip().startswith("#")):
            continue
        if not is_jsonl:
            yield number, normalise_whitespace(line), None, {}
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            yield number, None, f"invalid_json: {error.msg}", {}
            continue
        if not isinstance(record, dict) or not isinstance(record.get("query"), str):
            yield number, None, "missing_query_field", {}
            continue
        extra = {key: value for key, value in record.items() if key != "query"}
        yield number, normalise_whitespace(record["query"]), None, extra


def import_queries(path: Path, domain: str):
    records: dict[str, dict] = {}
    rejects = []
    lines = 0
    for number, query, reason, extra in read_query_lines(path):
        lines += 1
        if reason is None and not query:
            reason = "empty_query"
        if reason:
            rejects.append({"file": str(path), "line": number, "reason": reason.split(":")[0], "detail": reason})
            continue
        key = comparison_key(query)
        if key in records:
            records[key]["occurrences"].append({"line": number})
            continue
        records[key] = {
            "id": stable_id(domain[:8], key),
            "query": query,
            "domain": domain,
            "source": path.name,
            "line": number,
            "meta": extra,
            "occurrences": [{"line": number}],
        }
    return list(records.values()), rejects, lines


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, type=Path)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--rejects", required=True, type=Path)
    parser.add_argument("--stats", required=True, type=Path)
    parser.add_argument("--max-reject-fraction", type=float, required=True)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    setup_logging()
    if not args.source.is_file():
        raise PipelineError(
            f"{args.source}: query file not found; set domains.{args.domain}.queries to an existing file"
        )
    records, rejects, lines = import_queries(args.source, args.domain)
    stats = {
        "source": str(args.source),
        "lines": lines,
        "records": len(records),
        "duplicates_merged": lines - len(rejects) - len(records),
        "rejects": len(rejects),
        "rejects_by_reason": dict(sorted(Counter(r["reason"] for r in rejects).items())),
    }
    write_jsonl(args.rejects, rejects)
    write_json(args.stats, stats)
    fraction = len(rejects) / max(lines, 1)
    if fraction > args.max_reject_fraction:
        raise PipelineError(
            f"{args.source}: {len(rejects)} of {lines} lines rejected ({fraction:.1%}), over max_reject_fraction "
            f"{args.max_reject_fraction:.1%}; see {args.rejects} for each line and reason"
        )
    if not records:
        raise PipelineError(f"{args.source}: no queries found")
    write_jsonl(args.output, records)
    LOG.info("%d lines, %d queries, %d rejects", lines, len(records), len(rejects))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
