"""Which questions count as "the same question" (a minimal stand-in with the issue-11 API).

NOTE for the merge: the issue-11 branch owns this module; this copy exists only so that the replay
(issue 13) can be built and tested against the agreed interface:

- `EquivalenceIndex(records, mode="medquad")`: records are query records (`id`, `query`, `qtype`,
  `focus`, `cuis`, `synonyms`, `occurrences`).
- `equivalent(id_a, id_b) -> bool`, `equivalents(id) -> set[str]` (the id itself included).
- `records_equivalent(a, b, mode) -> bool`.

MedQuAD mode: the same qtype and a direct focus link (a shared CUI, the same normalised focus text,
occurrence foci included, or one's focus among the other's synonyms). Text mode (other domains):
the same normalised question text.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from shared import comparison_key

MODES = ("medquad", "text")


def _foci(record: dict) -> set[str]:
    foci = {comparison_key(record.get("focus") or "")}
    foci.update(comparison_key(occ.get("focus") or "") for occ in record.get("occurrences") or [])
    foci.discard("")
    return foci


def _synonyms(record: dict) -> set[str]:
    return {key for key in (comparison_key(s) for s in record.get("synonyms") or []) if key}


def _qtypes(record: dict) -> set[str]:
    qtypes = {str(record.get("qtype") or "")}
    qtypes.update(str(occ.get("qtype") or "") for occ in record.get("occurrences") or [])
    qtypes.discard("")
    return qtypes


def records_equivalent(a: dict, b: dict, mode: str = "medquad") -> bool:
    if mode not in MODES:
        raise ValueError(f"unknown equivalence mode {mode!r}; use one of {MODES}")
    if a.get("id") is not None and a.get("id") == b.get("id"):
        return True
    if mode == "text":
        return comparison_key(a.get("query") or "") == comparison_key(b.get("query") or "")
    if not (_qtypes(a) & _qtypes(b)):
        return False
    if set(a.get("cuis") or []) & set(b.get("cuis") or []):
        return True
    foci_a, foci_b = _foci(a), _foci(b)
    return bool(foci_a & foci_b or foci_a & _synonyms(b) or foci_b & _synonyms(a))


class EquivalenceIndex:
    """Equivalence classes of one set of records, looked up by record id."""

    def __init__(self, records: Iterable[dict], mode: str = "medquad"):
        if mode not in MODES:
            raise ValueError(f"unknown equivalence mode {mode!r}; use one of {MODES}")
        self.mode = mode
        self.records: dict[str, dict] = {}
        self._keys: dict[str, set[tuple]] = {}
        buckets: dict[tuple, set[str]] = defaultdict(set)
        for record in records:
            record_id = str(record["id"])
            self.records[record_id] = record
            keys = self._link_keys(record)
            self._keys[record_id] = keys
            for key in keys:
                buckets[key].add(record_id)
        self._buckets = buckets
        self._cache: dict[str, frozenset[str]] = {}

    def _link_keys(self, record: dict) -> set[tuple]:
        if self.mode == "text":
            return {("text", comparison_key(record.get("query") or ""))}
        keys = set()
        for qtype in _qtypes(record):
            keys.update(("cui", qtype, cui) for cui in record.get("cuis") or [])
            keys.update(("name", qtype, focus) for focus in _foci(record))
            keys.update(("name", qtype, synonym) for synonym in _synonyms(record))
        return keys

    def __contains__(self, record_id: str) -> bool:
        return record_id in self.records

    def equivalents(self, record_id: str) -> set[str]:
        """Every record equivalent to `record_id`, itself included (an unknown id: only itself)."""
        if record_id not in self.records:
            return {record_id}
        if record_id not in self._cache:
            candidates = set().union(*(self._buckets[key] for key in self._keys[record_id])) | {record_id}
            record = self.records[record_id]
            # A shared synonym string alone is not a direct link: check each candidate exactly.
            self._cache[record_id] = frozenset(
                other for other in candidates if records_equivalent(record, self.records[other], self.mode)
            )
        return set(self._cache[record_id])

    def equivalent(self, id_a: str, id_b: str) -> bool:
        if id_a == id_b:
            return True
        if id_a not in self.records or id_b not in self.records:
            return False
        return records_equivalent(self.records[id_a], self.records[id_b], self.mode)
