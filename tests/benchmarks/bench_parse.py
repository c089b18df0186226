"""Benchmark of the parse step on the whole real archive (interpreter start-up excluded).

Prints the work time of parse_medquad (read + digest + parse + merge) against a
baseline measured in the same run: reading every XML member of the zip and nothing else,
the floor any parser pays. Target: parse under 5 s of work on a 2-core machine.

    python tests/benchmarks/bench_parse.py [ARCHIVE] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import parse_medquad  # noqa: E402

from cache_embed.data.medquad_archive import iter_xml_members, open_archive  # noqa: E402

DEFAULT_ARCHIVE = ROOT.parent / "shared" / "medquad" / "MedQuAD-577bd37b96c02d1833b2c9eed2de9f96964e96cb.zip"
LIMIT = 512 * 1024 * 1024


def read_only(archive: Path) -> int:
    with open_archive(archive) as zf:
        return sum(len(data) for _, data in iter_xml_members(zf, archive, LIMIT))


def parse_all(archive: Path) -> int:
    occurrences, _, _ = parse_medquad.parse_archive(archive, LIMIT, None)
    return len(parse_medquad.merge_occurrences(occurrences))


def best_of(function, archive, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(archive)
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archive", nargs="?", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    read_s, size = best_of(read_only, args.archive, args.repeat)
    parse_s, records = best_of(parse_all, args.archive, args.repeat)
    print(f"baseline (read XML members only): {read_s:.2f} s for {size / 1e6:.1f} MB")
    print(f"parse_medquad work:               {parse_s:.2f} s for {records} records")
    print(f"ratio parse / read-only baseline: {parse_s / read_s:.2f}x")
    print(f"target under 5 s: {'met' if parse_s < 5 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
