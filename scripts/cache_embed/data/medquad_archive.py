"""Safe reading of the MedQuAD zip archive: member checks, size bounds, content digest.

The digest covers the XML documents' names (relative to the archive's top folder, sorted)
and their bytes, so a re-packed zip of the same commit verifies while the zip's own bytes may differ.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from cache_embed.common.cli import PipelineError

COLLECTION_COUNT = 12


def _check_member_name(archive: Path, name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise PipelineError(f"{archive}: refusing absolute path entry {name!r}; the archive is not a MedQuAD release")
    if ".." in path.parts or "\\" in name:
        raise PipelineError(f"{archive}: refusing entry {name!r} that points outside the archive (zip-slip)")
    return path


def open_archive(archive: str | Path) -> zipfile.ZipFile:
    archive = Path(archive)
    if not archive.exists():
        raise PipelineError(f"{archive}: archive not found; run the download_medquad rule or seed that path")
    try:
        return zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as error:
        raise PipelineError(
            f"{archive}: not a readable zip archive ({error}); delete it and download or seed it again"
        ) from None


def iter_xml_members(zf: zipfile.ZipFile, archive: Path, max_unpacked_bytes: int) -> Iterator[tuple[str, bytes]]:
    """Yield (relative name, bytes) of every XML document in sorted order.

    Every entry's name is checked (no absolute paths, no '..'), and the total
    unpacked size is bounded both by the declared sizes and by what is read.
    """
    infos = zf.infolist()
    declared = 0
    documents = []
    for info in infos:
        path = _check_member_name(archive, info.filename)
        declared += info.file_size
        if info.is_dir() or path.suffix.lower() != ".xml":
            continue
        relative = PurePosixPath(*path.parts[1:]) if len(path.parts) > 1 else path
        documents.append((str(relative), info))
    if declared > max_unpacked_bytes:
        raise PipelineError(
            f"{archive}: declares {declared:,} unpacked bytes, over the bound of {max_unpacked_bytes:,}; "
            "raise medquad.max_unpacked_mb if this archive is trusted"
        )
    documents.sort(key=lambda item: item[0])
    read_total = 0
    for relative, info in documents:
        try:
            with zf.open(info) as handle:
                data = handle.read(max_unpacked_bytes - read_total + 1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
            raise PipelineError(
                f"{archive}: entry {info.filename!r} cannot be read ({error}); the archive is truncated or "
                "corrupt: delete it and download or seed it again"
            ) from None
        read_total += len(data)
        if read_total > max_unpacked_bytes:
            raise PipelineError(f"{archive}: unpacks to more than {max_unpacked_bytes:,} bytes; refusing to continue")
        yield relative, data


class ContentDigest:
    """Running sha256 over (name, size, bytes) of each XML document, fed in sorted order."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.documents = 0

    def update(self, name: str, data: bytes) -> None:
        self._hash.update(name.encode("utf-8") + b"\0" + str(len(data)).encode() + b"\0")
        self._hash.update(data)
        self.documents += 1

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def verify_digest(archive: Path, actual: str, expected: str | None) -> None:
    if expected and actual != expected:
        raise PipelineError(
            f"{archive}: content digest {actual} does not match the pinned medquad.content_sha256 {expected}. "
            "The archive is not the pinned MedQuAD commit: delete it and download or seed the right one, "
            "or, if you changed medquad.commit on purpose, update medquad.content_sha256 to the new digest."
        )


def archive_digest(archive: str | Path, max_unpacked_bytes: int) -> tuple[str, int]:
    archive = Path(archive)
    digest = ContentDigest()
    with open_archive(archive) as zf:
        for name, data in iter_xml_members(zf, archive, max_unpacked_bytes):
            digest.update(name, data)
    return digest.hexdigest(), digest.documents
