"""Files: deterministic JSON and JSONL, atomic writes (no partial output ever looks finished), digests."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cache_embed.common.cli import PipelineError


def dumps(record: Any) -> str:
    """Deterministic JSON: sorted keys, UTF-8 kept, no trailing spaces."""
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def read_jsonl_numbered(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield (line number, record); a line that is not a JSON object is a PipelineError naming file and line."""
    path = Path(path)
    with path.open("r", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise PipelineError(
                    f"{path}:{line_number}: not valid JSON ({error.msg}); fix or remove that line"
                ) from None
            if not isinstance(record, dict):
                raise PipelineError(f"{path}:{line_number}: expected a JSON object per line")
            yield line_number, record


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Yield records (see read_jsonl_numbered)."""
    for _, record in read_jsonl_numbered(path):
        yield record


@contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Write to a temporary file beside `path` and rename it into place only on success,
    so a killed job never leaves a partial file that looks finished."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        mode,
        dir=path.parent,
        prefix=f".{path.name}.",
        suffix=".partial",
        delete=False,
        **({"encoding": "utf-8"} if "b" not in mode else {}),
    )
    try:
        with handle:
            yield handle
        # NamedTemporaryFile creates 0600 files; give the result the usual umask-based mode.
        os.chmod(handle.name, 0o666 & ~_umask())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def make_readable(folder: str | os.PathLike) -> None:
    """Give every file under `folder` the usual umask-based mode: some writers (safetensors, temporary
    files) create 0600 files, which other users of a shared model folder could not read."""
    mode = 0o666 & ~_umask()
    for path in Path(folder).rglob("*"):
        if path.is_file():
            os.chmod(path, mode)


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    count = 0
    with atomic_output(path) as handle:
        for record in records:
            handle.write(dumps(record) + "\n")
            count += 1
    return count


def write_json(path: str | os.PathLike, data: Any) -> None:
    with atomic_output(path) as handle:
        json.dump(data, handle, sort_keys=True, ensure_ascii=False, indent=2)
        handle.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    with Path(path).open("r", encoding="utf-8") as handle:
        return json.load(handle)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
