"""Smoke throughput of the vLLM backend on the CPU with the tiny random Qwen2 (tests/tiny_qwen.py).

    .venv-vllm/bin/python tests/benchmarks/bench_vllm_cpu.py [--queries split.jsonl] [--prompts 16]

Prints the engine start time and prompts/s of VLLMBackend.generate (real chat template, JSON-schema
structured outputs, medical spec) at batch size 1 (the baseline, measured in the same run) and at
batch size --prompts, with the ratio. A smoke figure: a random 1.5 MB model on 2 CPU cores says
nothing about a 7B model on GPUs, only that batching reaches the engine. Not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", help="JSONL with a 'query' field (default: the medical spec's example questions)")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--model", help="a model folder (default: a tiny random Qwen2 built now)")
    args = parser.parse_args()

    from cache_embed.common.files import read_jsonl
    from cache_embed.generate.llm_backends import load_spec, make_backend

    spec = load_spec(ROOT / "resources/domains/medical.yaml")
    if args.queries:
        texts = [r["query"] for r in read_jsonl(args.queries)]
    else:
        texts = [e["query"] for e in spec["examples"]["good"] + spec["examples"]["bad"]]
    queries = [{"id": f"b{i}", "query": texts[i % len(texts)]} for i in range(args.prompts)]

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if not model:
            from tiny_qwen import build_tiny_qwen

            model = str(build_tiny_qwen(Path(tmp) / "tiny_qwen"))
        settings = {
            "model": model,
            "dtype": "bfloat16",
            "max_model_len": 4096,
            "max_tokens": args.max_tokens,
            "max_retries": 0,
            "seed": 0,
            "batch_size": 1,
        }
        started = time.perf_counter()
        backend = make_backend("vllm", settings, spec)
        engine_start = time.perf_counter() - started
        try:
            backend.generate(queries[:2], 3, 2)  # warm-up
            rates = {}
            for batch_size in (1, args.prompts):
                backend.settings["batch_size"] = batch_size
                started = time.perf_counter()
                results = backend.generate(queries, 3, 2)
                seconds = time.perf_counter() - started
                rates[batch_size] = len(queries) / seconds
                failures = sum(r.failure is not None for r in results)
                print(
                    f"batch size {batch_size:3d}: {len(queries)} prompts in {seconds:.2f} s = "
                    f"{rates[batch_size]:.2f} prompts/s ({failures} counted failures)"
                )
        finally:
            backend.close()
    print(f"engine start: {engine_start:.1f} s (in-process engine core)")
    print(f"batched vs one at a time: {rates[args.prompts] / rates[1]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
