"""Cache sizes: the deploy threshold is chosen for, and read at, the size the cache will run at.

A larger cache holds more near neighbours of every question, so at one threshold it serves more
wrong answers (a repeat lands on a sibling, a novel question finds something close). The
evaluation therefore builds, at each size N of `evaluate.cache_sizes`:

- the calibration cache (val): the calibrate half's questions, padded to N with questions from
  outside the validation and test focus groups (the train split);
- the test cache: the test questions, padded to N with questions from outside the test focus
  groups (the train and val splits), the construction the replay uses.

Padding questions are cached but never a correct answer: a hit on one is wrong. They come in the
order of a seeded hash of their record ids, so a larger size extends a smaller one and the replay
builds the very same caches (`padding_order`).

Sizes are named in the config as numbers or as two words: `test_cache`, the test split's own
question count, and `largest`, the largest size both caches can reach (the calibration side is
the smaller: the train split plus the calibrate half).
"""

from __future__ import annotations

from dataclasses import dataclass

from cache_embed.common.cli import PipelineError
from cache_embed.common.text import comparison_key, stable_id

SIZE_WORDS = ("test_cache", "largest")


def padding_order(records: list[dict], seed: int, exclude_keys: set[str]) -> list[dict]:
    """The records of distinct questions (by comparison key) whose key is not in `exclude_keys`, in
    the order of a seeded hash of their record ids: the first k pad a cache with k questions."""
    chosen, seen = [], set(exclude_keys)
    for record in sorted(records, key=lambda r: stable_id("d", str(seed), r["id"])):
        key = comparison_key(record.get("query") or "")
        if key and key not in seen:
            seen.add(key)
            chosen.append(record)
    return chosen


@dataclass(frozen=True)
class CacheSize:
    """One evaluated size: `entries` cached questions; `names` the config items that asked for it."""

    entries: int
    names: tuple[str, ...]

    @property
    def label(self) -> str:
        words = [name.replace("_", " ") for name in self.names if name in SIZE_WORDS]
        return f"{self.entries:,}" + (f" ({', '.join(words)})" if words else "")

    def matches(self, requested) -> bool:
        """Whether a config value (a size word or a number) names this size."""
        return str(requested) in self.names or str(requested) == str(self.entries)


def parse_size_items(values: list[str]) -> list[str]:
    """Command-line size items: a size word or a positive whole number, each once."""
    out = []
    for value in values:
        value = str(value).strip()
        if value not in SIZE_WORDS and not (value.isdigit() and int(value) > 0):
            raise PipelineError(f"cache size {value!r}: use a whole number of questions or one of {SIZE_WORDS}")
        if value in out:
            raise PipelineError(f"cache size {value!r} is given twice")
        out.append(value)
    return out


def resolve_sizes(
    requested: list[str], *, test_entries: int, test_padding: int, calibration_entries: int, calibration_padding: int
) -> list[CacheSize]:
    """The sizes asked for, as numbers of cached questions, ascending; sizes named twice (a number
    equal to a word's size) are evaluated once. A size below either cache's own questions or above
    what padding can reach is an error that names the bounds."""
    largest = min(test_entries + test_padding, calibration_entries + calibration_padding)
    smallest = max(test_entries, calibration_entries)
    by_entries: dict[int, list[str]] = {}
    for item in parse_size_items(requested):
        entries = {"test_cache": test_entries, "largest": largest}.get(item) or int(item)
        if not smallest <= entries <= largest:
            raise PipelineError(
                f"evaluate.cache_sizes: {item} ({entries:,} questions) is outside what the data allows:"
                f" at least {smallest:,} (the test cache holds {test_entries:,} questions, the calibration"
                f" cache {calibration_entries:,}) and at most {largest:,} (the test cache can be padded to"
                f" {test_entries + test_padding:,}, the calibration cache to"
                f" {calibration_entries + calibration_padding:,}); pick a size in that range"
            )
        by_entries.setdefault(entries, []).append(item)
    return [CacheSize(entries, tuple(names)) for entries, names in sorted(by_entries.items())]


def find_size(sizes: list[dict], requested) -> dict:
    """The evaluated size block of metrics.json that a config value names (`deploy.cache_size`)."""
    for block in sizes:
        if str(requested) in block["names"] or str(requested) == str(block["cache_size"]):
            return block
    evaluated = ", ".join(f"{block['cache_size']} ({'/'.join(block['names'])})" for block in sizes)
    raise PipelineError(
        f"cache size {requested!r} was not evaluated (evaluated: {evaluated or 'none'}); add it to"
        " evaluate.cache_sizes or pick one of those"
    )


def padding_for_sizes(
    requested: list[str],
    triplets: list[dict],
    calibration: list[dict] | None,
    test_pool: list[dict],
    calibration_pool: list[dict],
    seed: int,
) -> tuple[list[CacheSize], list[str], list[str]]:
    """(sizes, test padding, calibration padding): the padding questions the largest size takes, in
    padding order (a smaller size takes the first of them). The test cache is padded from
    `test_pool` (records outside the test focus groups), the calibration cache from
    `calibration_pool` (outside the val and test groups); neither with a text of the triplets."""
    from cache_embed.evaluate.simulation import cached_entry_count

    def keys(rows):
        return {comparison_key(t[field]) for t in rows for field in ("anchor", "positive", "negative")}

    test_keys = keys(triplets)
    test_padding = [record["query"] for record in padding_order(test_pool, seed, test_keys)]
    calibration_padding = []
    if calibration is not None:
        taken = test_keys | keys(calibration)
        calibration_padding = [record["query"] for record in padding_order(calibration_pool, seed, taken)]
    test_entries = cached_entry_count(triplets)
    calibration_entries = cached_entry_count(calibration) if calibration is not None else test_entries
    sizes = resolve_sizes(
        requested,
        test_entries=test_entries,
        test_padding=len(test_padding),
        calibration_entries=calibration_entries,
        calibration_padding=len(calibration_padding) if calibration is not None else len(test_padding),
    )
    largest = sizes[-1].entries
    return sizes, test_padding[: largest - test_entries], calibration_padding[: max(0, largest - calibration_entries)]
