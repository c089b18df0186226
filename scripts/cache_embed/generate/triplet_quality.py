"""Quality filters shared by every triplet backend (structure, vllm, openai).

Given one anchor query and its candidate positives (paraphrases: cache hits) and negatives
(hard negatives: cache misses), keep the usable ones, count every drop by reason, and pair each
kept positive with a negative. Nothing is dropped silently: the caller adds `drops` to its stats.
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from cache_embed.common.text import comparison_key as _comparison_key
from cache_embed.common.text import normalise_whitespace, stable_id

# Anchors and negatives recur across a split's queries: memoise their keys.
comparison_key = lru_cache(maxsize=1 << 17)(_comparison_key)

# A negative at least this similar (difflib ratio on case-folded text) to the anchor is a near-copy.
NEAR_COPY_RATIO = 0.95

# Drop reasons (keys of the stats' "dropped" object).
EMPTY_POSITIVE = "empty_positive"
EMPTY_NEGATIVE = "empty_negative"
POSITIVE_COPIES_ANCHOR = "positive_copies_anchor"
DUPLICATE_POSITIVE = "duplicate_positive"
NEGATIVE_COPIES_ANCHOR = "negative_copies_anchor"
DUPLICATE_NEGATIVE = "duplicate_negative"
NEGATIVE_EQUALS_POSITIVE = "negative_equals_positive"
POSITIVE_OVER_CAP = "positive_over_cap"
NEGATIVE_OVER_CAP = "negative_over_cap"
NO_USABLE_NEGATIVE = "positive_without_negative"
DROP_REASONS = (
    EMPTY_POSITIVE,
    EMPTY_NEGATIVE,
    POSITIVE_COPIES_ANCHOR,
    DUPLICATE_POSITIVE,
    NEGATIVE_COPIES_ANCHOR,
    DUPLICATE_NEGATIVE,
    NEGATIVE_EQUALS_POSITIVE,
    POSITIVE_OVER_CAP,
    NEGATIVE_OVER_CAP,
    NO_USABLE_NEGATIVE,
)


@dataclass(frozen=True)
class Candidate:
    """A candidate positive or negative text with its provenance."""

    text: str
    kind: str
    qtype: str | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def _empty(text) -> bool:
    return not isinstance(text, str) or not comparison_key(text)


def near_copy(a: str, b: str, ratio: float = NEAR_COPY_RATIO) -> bool:
    """Same comparison key, or a difflib ratio >= `ratio` on case-folded text."""
    if comparison_key(a) == comparison_key(b):
        return True
    if 2 * min(len(a), len(b)) < ratio * (len(a) + len(b)):
        return False  # the length bound of difflib's ratio
    matcher = difflib.SequenceMatcher(None, a.casefold(), b.casefold(), autojunk=False)
    # quick_ratio is an upper bound of ratio: skip the expensive part for clearly different texts.
    return matcher.quick_ratio() >= ratio and matcher.ratio() >= ratio


def filter_positives(anchor: str, positives: list[Candidate], cap: int, drops: Counter) -> list[Candidate]:
    anchor_key = comparison_key(anchor)
    kept: list[Candidate] = []
    seen: set[str] = set()
    for candidate in positives:
        if len(kept) >= cap:
            drops[POSITIVE_OVER_CAP] += 1  # spares beyond the cap are not examined
            continue
        if _empty(candidate.text):
            drops[EMPTY_POSITIVE] += 1
            continue
        text = normalise_whitespace(candidate.text)
        key = comparison_key(text)
        if key == anchor_key:
            drops[POSITIVE_COPIES_ANCHOR] += 1
        elif key in seen:
            drops[DUPLICATE_POSITIVE] += 1
        else:
            seen.add(key)
            kept.append(Candidate(text, candidate.kind, candidate.qtype, candidate.extra))
    return kept


def filter_negatives(
    anchor: str, negatives: list[Candidate], positives: list[Candidate], cap: int, drops: Counter
) -> list[Candidate]:
    positive_keys = {comparison_key(p.text) for p in positives}
    kept: list[Candidate] = []
    seen: set[str] = set()
    for candidate in negatives:
        if len(kept) >= cap:
            drops[NEGATIVE_OVER_CAP] += 1  # spares beyond the cap are not examined
            continue
        if _empty(candidate.text):
            drops[EMPTY_NEGATIVE] += 1
            continue
        text = normalise_whitespace(candidate.text)
        key = comparison_key(text)
        if near_copy(text, anchor):
            drops[NEGATIVE_COPIES_ANCHOR] += 1
        elif key in positive_keys:
            drops[NEGATIVE_EQUALS_POSITIVE] += 1
        elif key in seen:
            drops[DUPLICATE_NEGATIVE] += 1
        else:
            seen.add(key)
            kept.append(Candidate(text, candidate.kind, candidate.qtype, candidate.extra))
    return kept


def build_triplets(
    anchor: str,
    positives: list[Candidate],
    negatives: list[Candidate],
    max_positives: int,
    max_negatives: int,
    drops: Counter,
) -> list[tuple[Candidate, Candidate]]:
    """Filter both lists and pair each kept positive (at most `max_positives`) with a negative,
    cycling through the kept negatives (at most `max_negatives`) in order. Without a usable negative nothing is paired and
    each kept positive is counted as `positive_without_negative`."""
    kept_positives = filter_positives(anchor, positives, max_positives, drops)
    kept_negatives = filter_negatives(anchor, negatives, kept_positives, max_negatives, drops)
    if not kept_negatives:
        drops[NO_USABLE_NEGATIVE] += len(kept_positives)
        return []
    return [(p, kept_negatives[i % len(kept_negatives)]) for i, p in enumerate(kept_positives)]


def triplet_record(
    anchor: str,
    positive: Candidate,
    negative: Candidate,
    *,
    query: dict,
    split: str,
    domain: str,
    backend: str,
    model: str | None,
) -> dict:
    """A triplet in the binding schema read by training and evaluation."""
    anchor = normalise_whitespace(anchor)
    return {
        "id": stable_id("tr", anchor, positive.text, negative.text),
        "anchor": anchor,
        "positive": positive.text,
        "negative": negative.text,
        "query_id": query["id"],
        "split": split,
        "domain": domain,
        "backend": backend,
        "model": model,
        "positive_kind": positive.kind,
        "negative_kind": negative.kind,
        "qtype": query.get("qtype"),
        "negative_qtype": negative.qtype,
        # The real question a structure negative was drawn from (None for LLM negatives): a cache
        # that holds that question rightly hits it, so the cache simulation leaves it out.
        "negative_query_id": negative.extra.get("query_id"),
        "focus": query.get("focus"),
    }
