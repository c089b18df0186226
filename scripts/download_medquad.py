"""download_medquad: fetch the pinned MedQuAD archive (or a configured local file or URL) and verify its content.

The content digest covers the extracted XML documents, not the zip bytes, so any
faithful packing of the pinned commit verifies. The archive is written atomically:
an interrupted download never leaves a file that looks complete.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from cache_embed.common.cli import PipelineError, run_main, setup_logging
from cache_embed.common.files import atomic_output
from cache_embed.data.medquad_archive import archive_digest, verify_digest

LOG = logging.getLogger("download_medquad")

USER_AGENT = "cache-embeddings-workflow/1 (+https://github.com/abachaa/MedQuAD)"


def fetch(source: str, output: Path, timeout: float = 120) -> None:
    """Copy a local file or download a URL to `output` (atomically)."""
    if "://" not in source or source.startswith("file://"):
        local = Path(source.removeprefix("file://"))
        if not local.is_file():
            raise PipelineError(f"medquad.archive: {local} is not a file; point it at a MedQuAD zip or leave it empty")
        with atomic_output(output, "wb") as handle, local.open("rb") as reader:
            shutil.copyfileobj(reader, handle)
        return
    request = urllib.request.Request(source, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, atomic_output(output, "wb") as handle:
            shutil.copyfileobj(response, handle, length=1 << 20)
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise PipelineError(
            f"could not download {source} ({error}). Offline? Seed the archive instead: copy the MedQuAD zip "
            f"to {output} (see README, 'Offline use')"
        ) from None


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="URL or local path of the archive")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument(
        "--content-sha256", required=True, help="pinned digest of the XML content; empty skips the check"
    )
    parser.add_argument("--max-unpacked-mb", type=float, required=True)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    setup_logging()
    staging = args.output.with_name(args.output.name + ".download")
    LOG.info("fetching %s", args.source)
    fetch(args.source, staging)
    try:
        digest, documents = archive_digest(staging, int(args.max_unpacked_mb * 1024 * 1024))
        verify_digest(Path(args.source), digest, args.content_sha256 or None)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    staging.replace(args.output)
    LOG.info("verified %d XML documents, content sha256 %s", documents, digest)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
