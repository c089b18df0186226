"""Focus groups: records that may be about the same entity, chained with union-find.

Used by split_queries (whole groups go to one split, so no entity crosses splits), by the split
of the validation triplets into select/calibrate halves, and by the evaluation's bootstrap (a
group and all its triplets are resampled together).

A record's entities are its focus CUIs, the normalised focus text of the record and of every
occurrence (a merged record can come from documents with different foci), and its synonyms.
Synonyms that are bare abbreviations ("MS", "AT III") or shorter than MIN_LINK_CHARS characters
are left out: they name several unrelated conditions and would chain them into one group.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

from cache_embed.common.text import comparison_key

MIN_LINK_CHARS = 5
_BARE_ABBREVIATION = re.compile(r"^[^a-z]{1,8}$")


def usable_link(text) -> str:
    """The comparison key of a synonym-like string, or "" when it is too short or a bare abbreviation."""
    if not isinstance(text, str):
        return ""
    stripped = text.strip()
    key = comparison_key(stripped)
    if len(key) < MIN_LINK_CHARS or _BARE_ABBREVIATION.match(stripped):
        return ""
    return key


def focus_keys(record: dict) -> set[str]:
    """Normalised focus texts of the record and of each of its occurrences."""
    foci = {record.get("focus") or ""} | {(occ or {}).get("focus") or "" for occ in record.get("occurrences") or []}
    return {key for key in (comparison_key(focus) for focus in foci if isinstance(focus, str)) if key}


def synonym_keys(record: dict) -> set[str]:
    """Normalised synonyms usable as links (see usable_link)."""
    return {key for key in (usable_link(s) for s in record.get("synonyms") or []) if key}


def focus_entities(record: dict) -> set[str]:
    """The entities that must not cross splits. Focus texts and synonyms share one namespace, so
    one record's synonym equal to another's focus links them."""
    entities = {f"cui:{cui}" for cui in record.get("cuis") or []}
    entities |= {f"focus:{key}" for key in focus_keys(record) | synonym_keys(record)}
    return entities or {f"record:{record['id']}"}


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        self.parent.setdefault(item, item)
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, first: str, second: str) -> None:
        a, b = self.find(first), self.find(second)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def group_records(records: list[dict]) -> dict[str, list[int]]:
    """Group key (the smallest entity of the group) -> indices of the records in it."""
    union_find = UnionFind()
    entities_of = []
    for record in records:
        entities = sorted(focus_entities(record))
        entities_of.append(entities)
        for other in entities[1:]:
            union_find.union(entities[0], other)
    groups: dict[str, list[int]] = defaultdict(list)
    for index, entities in enumerate(entities_of):
        groups[union_find.find(entities[0])].append(index)
    return dict(groups)


def group_of_record(records: Iterable[dict]) -> dict[str, str]:
    """Record id -> its focus group key."""
    records = list(records)
    return {records[index]["id"]: key for key, members in group_records(records).items() for index in members}
