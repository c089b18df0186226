"""Throughput of the `structure` triplet backend on a full split (default: the train split).

    .venv/bin/python tests/benchmarks/bench_generate_structure.py --input results/medical/splits/train.jsonl

Prints triplets/s of generate_triplets (one process, one shard) and, as a baseline measured in the
same run, the time to only read the split and write as many JSON lines (the I/O floor), with the
ratio between the two. Not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

import generate_triplets  # noqa: E402

from cache_embed.common.files import read_json, read_jsonl, write_jsonl  # noqa: E402
from conftest import STRUCTURE, step_argv  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=str(ROOT / "results/medical/splits/train.jsonl"))
    parser.add_argument("--split", default="train", choices=("train", "val", "test"))
    parser.add_argument("--forms", default=str(ROOT / "resources/domains/medical_forms.yaml"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not Path(args.input).exists():
        parser.error(f"{args.input} not found: run the split step first (snakemake results/medical/splits/stats.json)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        best_gen = best_io = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            assert (
                generate_triplets.main(
                    [
                        "--input",
                        args.input,
                        "--output",
                        str(out / "t.jsonl"),
                        "--stats",
                        str(out / "s.json"),
                        "--split",
                        args.split,
                        "--domain",
                        "medical",
                        "--forms",
                        args.forms,
                        *step_argv("generate", "medical", **STRUCTURE),
                    ]
                )
                == 0
            )
            best_gen = min(best_gen, time.perf_counter() - start)
            stats = read_json(out / "s.json")
            start = time.perf_counter()
            records = list(read_jsonl(args.input))
            write_jsonl(out / "io.jsonl", (records[i % len(records)] for i in range(stats["triplets"])))
            best_io = min(best_io, time.perf_counter() - start)
    print(f"split: {args.input} ({stats['queries']} queries, yield {stats['yield']:.4f})")
    print(
        f"structure backend: {stats['triplets']} triplets in {best_gen:.2f} s = {stats['triplets'] / best_gen:,.0f} triplets/s "
        f"({stats['queries'] / best_gen:,.0f} queries/s)"
    )
    print(f"baseline (read split + write as many lines): {best_io:.2f} s = {stats['triplets'] / best_io:,.0f} lines/s")
    print(f"ratio generate / I/O floor: {best_gen / best_io:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
