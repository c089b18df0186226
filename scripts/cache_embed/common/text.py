"""Text normalisation and stable ids: what makes two texts "the same text"."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")
_NON_WORD = re.compile(r"[^\w]+")


def normalise_whitespace(text: str) -> str:
    """NFC-normalise and collapse runs of whitespace to one space."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def comparison_key(text: str) -> str:
    """A key under which two texts count as the same text: case, spacing and punctuation ignored."""
    return _WHITESPACE.sub(" ", _NON_WORD.sub(" ", normalise_whitespace(text).casefold())).strip()


def stable_id(prefix: str, *parts: str, length: int = 16) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return f"{prefix}-{digest[:length]}"
