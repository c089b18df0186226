"""One definition of "the same question", used by the negatives, the evaluation and the report.

Two query records ask the same question when:

- they are the same record, or their texts have the same comparison key (case, spacing and
  punctuation ignored), in every mode;
- mode "medquad": they share a question type (the record's `qtype` or an occurrence's) AND their
  focus entities are linked directly: a shared CUI, the same normalised focus text (the record's
  focus or an occurrence's focus), or one's focus among the other's synonyms (synonyms that are
  bare abbreviations or shorter than 5 characters do not link, see focus_groups.usable_link).
  A direct link between the two records, never membership of the same focus group: groups chain
  unrelated diseases through shared CUIs and synonyms.
- mode "text" (domains whose queries come from a file): the same `group` value, when the queries
  file gives one (a `group` field on each JSONL line; import_queries keeps it under `meta`, and a
  top-level `group` is read too). Without groups only equal texts are equivalent.

`EquivalenceIndex` answers `equivalent(id_a, id_b)` and `equivalents(id)` for the records it holds,
through inverted indices (no pairwise scan); `records_equivalent(a, b, mode)` is the same rule on
two records.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from cache_embed.common.text import comparison_key
from cache_embed.data.focus_groups import focus_keys, synonym_keys

MODES = ("medquad", "text")

__all__ = ["MODES", "EquivalenceIndex", "mode_for_domain", "record_group", "record_qtypes", "records_equivalent"]


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown equivalence mode {mode!r}; expected one of {MODES}")
    return mode


def mode_for_domain(queries_source: str) -> str:
    """'medquad' for a domain whose queries are MedQuAD (config `queries: medquad`), else 'text'."""
    return "medquad" if queries_source == "medquad" else "text"


def record_qtypes(record: dict) -> set[str]:
    """The record's question type and those of its occurrences (the same text asked in several documents)."""
    qtypes = {record.get("qtype")} | {(occ or {}).get("qtype") for occ in record.get("occurrences") or []}
    return {q for q in qtypes if isinstance(q, str) and q}


def record_group(record: dict) -> str | None:
    """The user-given equivalence group of a file-domain record (top level or under `meta`)."""
    value = record.get("group")
    if value is None and isinstance(record.get("meta"), dict):
        value = record["meta"].get("group")
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return text or None


def _text_key(record: dict) -> str:
    query = record.get("query")
    return comparison_key(query) if isinstance(query, str) else ""


def records_equivalent(a: dict, b: dict, mode: str = "medquad") -> bool:
    """True when the two query records ask the same question (see the module docstring)."""
    _check_mode(mode)
    if a.get("id") is not None and a.get("id") == b.get("id"):
        return True
    key_a = _text_key(a)
    if key_a and key_a == _text_key(b):
        return True
    if mode == "text":
        group_a = record_group(a)
        return group_a is not None and group_a == record_group(b)
    if not record_qtypes(a) & record_qtypes(b):
        return False
    if set(a.get("cuis") or []) & set(b.get("cuis") or []):
        return True
    focus_a, focus_b = focus_keys(a), focus_keys(b)
    return bool(focus_a & focus_b or focus_a & synonym_keys(b) or focus_b & synonym_keys(a))


class EquivalenceIndex:
    """Equivalence among a set of query records (ids must be unique)."""

    def __init__(self, records: Iterable[dict], mode: str = "medquad"):
        self.mode = _check_mode(mode)
        self.records: dict[str, dict] = {}
        self._postings: dict[tuple, set[str]] = defaultdict(set)
        self._probes: dict[str, list[tuple]] = {}
        for number, record in enumerate(records, start=1):
            record_id = record.get("id")
            if not isinstance(record_id, str) or not record_id:
                raise ValueError(f"query record {number} has no id")
            if record_id in self.records:
                raise ValueError(f"query record id {record_id!r} appears twice")
            self.records[record_id] = record
            posted, probes = self._keys(record)
            for key in posted:
                self._postings[key].add(record_id)
            self._probes[record_id] = probes
        self._cache: dict[str, frozenset[str]] = {}

    def _keys(self, record: dict) -> tuple[list[tuple], list[tuple]]:
        """(keys this record is posted under, keys to look up for its equivalents)."""
        text = _text_key(record)
        posted = [("text", text)] if text else []
        if self.mode == "text":
            group = record_group(record)
            if group is not None:
                posted.append(("group", group))
            return posted, list(posted)
        probes = list(posted)
        foci, synonyms = focus_keys(record), synonym_keys(record)
        for qtype in record_qtypes(record):
            cuis = [("cui", qtype, cui) for cui in record.get("cuis") or []]
            own_foci = [("focus", qtype, key) for key in foci]
            posted += cuis + own_foci + [("synonym", qtype, key) for key in synonyms]
            # Others with a shared CUI or focus, others whose focus is one of my synonyms, others
            # that list my focus among their synonyms.
            probes += cuis + own_foci + [("focus", qtype, key) for key in synonyms]
            probes += [("synonym", qtype, key) for key in foci]
        return posted, probes

    def __contains__(self, record_id: str) -> bool:
        return record_id in self.records

    def __len__(self) -> int:
        return len(self.records)

    def equivalents(self, record_id: str) -> set[str]:
        """Ids of the indexed records equivalent to `record_id`, itself included."""
        if record_id not in self.records:
            raise KeyError(f"query id {record_id!r} is not among the indexed records")
        found = self._cache.get(record_id)
        if found is None:
            ids = {record_id}
            for key in self._probes[record_id]:
                ids |= self._postings.get(key, set())
            found = self._cache[record_id] = frozenset(ids)
        return set(found)

    def equivalent(self, id_a: str, id_b: str) -> bool:
        if id_a == id_b:
            if id_a not in self.records:
                raise KeyError(f"query id {id_a!r} is not among the indexed records")
            return True
        if id_b not in self.records:
            raise KeyError(f"query id {id_b!r} is not among the indexed records")
        return id_b in self.equivalents(id_a)
