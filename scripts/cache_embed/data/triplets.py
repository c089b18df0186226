"""Reading triplet files (results/{domain}/triplets/*.jsonl): the one place that checks a record has
its three texts, so every step that reads triplets names a bad record the same way."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from cache_embed.common.cli import PipelineError
from cache_embed.common.files import read_jsonl_numbered

TRIPLET_FIELDS = ("anchor", "positive", "negative")


def read_triplets(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield (triplet number, record); a record without a text in anchor, positive or negative is a
    PipelineError naming the file, the triplet and its id."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: triplet file not found; run the generation step first")
    for number, (_, record) in enumerate(read_jsonl_numbered(path), start=1):
        for field in TRIPLET_FIELDS:
            value = record.get(field)
            if not isinstance(value, str) or not value.strip():
                raise PipelineError(
                    f"{path}: triplet {number} (id {record.get('id', '?')}) has no text in '{field}';"
                    " regenerate the triplets or remove that record"
                )
        yield number, record
