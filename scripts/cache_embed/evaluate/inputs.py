"""Inputs of the evaluation: triplets, labelled external pairs, query records and their focus groups."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from cache_embed.common.cli import PipelineError
from cache_embed.common.files import read_jsonl_numbered
from cache_embed.common.text import comparison_key
from cache_embed.data.focus_groups import group_of_record
from cache_embed.data.triplets import read_triplets

TRUE_LABELS = {"1", "1.0", "true", "yes"}
FALSE_LABELS = {"0", "0.0", "false", "no"}
EXTERNAL_COLUMNS = ("question_1", "question_2", "label")


# ---------------------------------------------------------------- inputs


def load_triplets(path: str | Path) -> list[dict]:
    triplets = [record for _, record in read_triplets(path)]
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
    raise PipelineError(f"{path}:{line}: label {value!r} is not 1 (same intent) or 0 (different intent); fix that row")


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


def _read_pair_rows(path: str | Path) -> list[tuple[tuple[str, str, int], dict]]:
    """(pair, row) for each labelled pair of a CSV, TSV or JSONL file; checks the rows and the labels."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: external pair file not found; fix evaluate.external in the config")
    suffix = path.suffix.casefold()
    rows = []
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
                rows.append((_check_pair(row, path, reader.line_num), row))
    elif suffix in (".jsonl", ".ndjson", ".json"):
        for line_number, row in read_jsonl_numbered(path):
            rows.append((_check_pair(row, path, line_number), row))
    else:
        raise PipelineError(f"{path}: unknown external pair format '{path.suffix}'; use .csv, .tsv or .jsonl")
    labels = {label for (_, _, label), _ in rows}
    if labels != {0, 1}:
        raise PipelineError(
            f"{path}: needs at least one pair labelled 1 and one labelled 0 (found {len(rows)} pairs,"
            f" labels {sorted(labels)})"
        )
    return rows


def load_external_pairs(path: str | Path) -> list[tuple[str, str, int]]:
    """Labelled question pairs from CSV (header question_1,question_2,label) or JSONL (one object
    per line with those keys). label: 1 same intent (must hit), 0 different intent (must miss)."""
    return [pair for pair, _ in _read_pair_rows(path)]


def load_external_set(path: str | Path) -> dict:
    """A labelled pair set with its optional annotations: {pairs, kinds, sources}. `kind` (how the
    pair was made) gives per-kind figures; `source_id` (the record a pair was written from) makes the
    intervals resample sources, as pairs written from one question are not independent. A column
    present on some rows only is an error that names the first row without it."""
    rows = _read_pair_rows(path)
    out = {"pairs": [pair for pair, _ in rows]}
    for column, key in (("kind", "kinds"), ("source_id", "sources")):
        values = [str(row[column]).strip() if row.get(column) not in (None, "") else None for _, row in rows]
        present = [value is not None for value in values]
        if any(present) and not all(present):
            raise PipelineError(
                f"{path}: pair {present.index(False) + 1} has no {column!r} while others do; give every pair one"
            )
        out[key] = values if all(present) else None
    return out


def calibration_subset(triplets: list[dict], limit: int, seed: int, records: list[dict] | None = None) -> list[dict]:
    """A seeded subset of at most `limit` triplets (0: all), in file order, taking whole focus groups
    (every triplet whose anchor is in a chosen group; with no `records`, whole anchors). The test
    cache holds every question of a group, and a group's questions are each other's likeliest wrong
    answers: a subset that cached only some of them would have fewer wrong answers than test at
    every threshold and choose a threshold too low for test.

    Groups are taken in a seeded order until the next one does not fit: skipping a group that does
    not fit and going on would leave out the large groups more often than the small ones."""
    if limit <= 0 or len(triplets) <= limit:
        return list(triplets)
    group_of = group_of_record(records) if records else {}
    by_unit: dict[str, list[int]] = {}
    for row, triplet in enumerate(triplets):
        anchor = triplet.get("query_id") or comparison_key(triplet.get("anchor") or "")
        by_unit.setdefault(group_of.get(triplet.get("query_id")) or f"anchor:{anchor}", []).append(row)
    units = sorted(by_unit)
    np.random.default_rng(seed).shuffle(units)
    rows: list[int] = []
    for unit in units:
        if len(rows) + len(by_unit[unit]) > limit:
            break
        rows += by_unit[unit]
    return [triplets[row] for row in sorted(rows)]


def load_query_records(path: str | Path | None) -> list[dict] | None:
    """The split's query records (for equivalence and focus groups); None without a path."""
    if not path:
        return None
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: query records not found; pass the split JSONL the triplets were made from")
    records = []
    for line, record in read_jsonl_numbered(path):
        if not isinstance(record.get("id"), str) or not record["id"]:
            raise PipelineError(f"{path}:{line}: query record without an id; regenerate the split")
        records.append(record)
    return records


def check_triplets_match_records(triplets: list[dict], records: list[dict], path) -> None:
    """Every triplet's query_id must be a record of the split (else the files are from different runs)."""
    ids = {record["id"] for record in records}
    missing = [t.get("query_id") for t in triplets if t.get("query_id") and t["query_id"] not in ids]
    if missing:
        raise PipelineError(
            f"{path}: {len(missing)} triplet(s) name a query_id that is not in the query records (first:"
            f" {missing[0]!r}); the triplets and the split come from different runs: regenerate the triplets"
        )


def attach_groups(triplets: list[dict], records: list[dict] | None) -> tuple[list[dict], int]:
    """Copies of the triplets with `group`: the focus group of the anchor's record (focus_groups),
    or the anchor's own text without records. Returns (triplets, number of groups)."""
    group_of = group_of_record(records) if records else {}
    out = []
    for triplet in triplets:
        group = group_of.get(triplet.get("query_id")) or f"anchor:{comparison_key(triplet['anchor'])}"
        out.append({**triplet, "group": group})
    return out, len({t["group"] for t in out})


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
