"""Generate training triplets (anchor, positive = paraphrase, negative = hard negative) for ONE
shard of one split, with the `structure` backend (MedQuAD annotations, no LLM) or an LLM backend
(`vllm`, `openai`; see llm_backends.py). The shared quality filters of triplet_quality.py apply
to every backend. Writes the shard's triplets and stats atomically; re-running overwrites.

A query belongs to shard K of N when int(sha256(id), 16) % N == K. The step fails when fewer
than --min-yield of the shard's queries yield at least one triplet.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from cache_embed.common.cli import PipelineError, run_main, setup_logging
from cache_embed.common.files import dumps, sha256_file, write_json, write_jsonl
from cache_embed.common.names import SPLITS
from cache_embed.generate.shards import candidates_per_batch, read_split, shard_of, subset
from cache_embed.generate.triplet_quality import build_triplets, triplet_record

LOG = logging.getLogger("generate_triplets")

BACKENDS = ("structure", "vllm", "openai")
_LLM_FLAGS = ("spec", "model", "batch_size", "max_retries", "temperature", "top_p", "max_tokens")
# The flags each backend needs (argparse dest names).
BACKEND_FLAGS = {
    "structure": ("forms", "max_synonym_words"),
    "vllm": (*_LLM_FLAGS, "revision", "max_model_len", "dtype", "tensor_parallel", "gpu_memory_utilization"),
    "openai": (*_LLM_FLAGS, "base_url", "api_key_env", "concurrency", "timeout", "openai_retries"),
}
STRUCTURE_PROGRESS_BATCH = 256
# Settings of the run that cannot change the triplets: shards made with different values still belong together.
OPERATIONAL_SETTINGS = (
    "tensor_parallel",
    "gpu_memory_utilization",
    "api_key_env",
    "concurrency",
    "timeout_s",
    "retries",
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = parser.add_argument_group("input and output")
    io.add_argument("--input", required=True, help="split JSONL (results/{domain}/splits/{split}.jsonl)")
    io.add_argument("--output", required=True, help="this shard's triplets JSONL")
    io.add_argument("--stats", required=True, help="this shard's stats JSON")
    io.add_argument("--split", required=True, choices=SPLITS)
    io.add_argument("--domain", required=True)
    io.add_argument("--shard", type=int, default=0, help="this shard's number K, 0 <= K < N")
    io.add_argument("--shards", type=int, default=1, help="number of shards N")
    # No defaults here: the workflow passes every setting from the config schema (the one place for
    # defaults and bounds); a backend's own settings are required only with that backend.
    gen = parser.add_argument_group("generation")
    gen.add_argument("--backend", choices=BACKENDS, required=True)
    gen.add_argument("--paraphrases", type=int, required=True, help="positives per query (at most)")
    gen.add_argument("--negatives", type=int, required=True, help="hard negatives per query (at most)")
    gen.add_argument("--max-queries", type=int, required=True, help="seeded subset of the split; 0 = all")
    gen.add_argument("--seed", type=int, required=True)
    gen.add_argument("--min-yield", type=float, required=True)
    llm = parser.add_argument_group("LLM backends (passed through to llm_backends.make_backend)")
    llm.add_argument("--spec", help="domain prompt spec YAML")
    llm.add_argument("--batch-size", type=int)
    llm.add_argument("--max-retries", type=int, help="LLM re-asks after a bad answer")
    llm.add_argument("--model")
    llm.add_argument("--temperature", type=float)
    llm.add_argument("--top-p", type=float)
    llm.add_argument("--max-tokens", type=int)
    vllm = parser.add_argument_group("vllm backend")
    vllm.add_argument("--revision")
    vllm.add_argument("--max-model-len", type=int)
    vllm.add_argument("--dtype")
    vllm.add_argument("--tensor-parallel", type=int, help="GPUs to spread the model over (the job's GPU count)")
    vllm.add_argument("--gpu-memory-utilization", type=float)
    openai = parser.add_argument_group("openai backend")
    openai.add_argument("--base-url")
    openai.add_argument("--api-key-env")
    openai.add_argument("--concurrency", type=int)
    openai.add_argument("--timeout", type=float, help="seconds per request")
    openai.add_argument("--openai-retries", type=int, help="transport retries per request")
    structure = parser.add_argument_group("structure backend")
    structure.add_argument("--forms", help="question forms bank YAML")
    structure.add_argument("--max-synonym-words", type=int)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.shards < 1 or not 0 <= args.shard < args.shards:
        parser.error(f"--shard {args.shard} must be in [0, --shards {args.shards})")
    for name in BACKEND_FLAGS[args.backend]:
        if getattr(args, name) is None:
            parser.error(f"--backend {args.backend} needs --{name.replace('_', '-')}")
    for name in ("paraphrases", "negatives", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_queries < 0:
        parser.error("--max-queries must be >= 0")
    if not 0 <= args.min_yield <= 1:
        parser.error("--min-yield must be in [0, 1]")
    return args


def llm_settings(args: argparse.Namespace) -> dict:
    """The LLM backend's settings; None (a flag the backend does not take) leaves the library's default."""
    return {
        "model": args.model or None,
        "revision": args.revision,
        "tensor_parallel": args.tensor_parallel,
        "max_model_len": args.max_model_len,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "dtype": args.dtype,
        "seed": args.seed,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_tokens": args.max_tokens,
        "batch_size": args.batch_size,
        "max_retries": args.max_retries,
        "base_url": args.base_url,
        "api_key_env": args.api_key_env,
        "concurrency": args.concurrency,
        "timeout_s": args.timeout,
        "retries": args.openai_retries,
    }


def run_settings(args: argparse.Namespace) -> dict:
    """What defines a run: shards of one split must agree on all of it to be gathered together."""
    settings = {
        "backend": args.backend,
        "domain": args.domain,
        "paraphrases": args.paraphrases,
        "negatives": args.negatives,
        "max_queries": args.max_queries,
        "seed": args.seed,
    }
    if args.backend == "structure":
        from cache_embed.generate.structure_generator import forms_digest

        settings.update(forms_sha256=forms_digest(args.forms), max_synonym_words=args.max_synonym_words)
    else:
        settings.update(
            spec_sha256=sha256_file(args.spec),
            **{k: v for k, v in llm_settings(args).items() if k not in OPERATIONAL_SETTINGS},
        )
    return settings


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    started = time.perf_counter()
    if Path(args.output).resolve() in (Path(args.input).resolve(), Path(args.stats).resolve()):
        raise PipelineError(f"--output {args.output} would overwrite --input or --stats; give it its own path")
    records = read_split(args.input)
    input_sha256 = sha256_file(args.input)
    chosen = subset(records, args.max_queries, args.seed)
    shard = [r for r in chosen if shard_of(r["id"], args.shards) == args.shard]
    LOG.info(
        "%s: %d queries, %d chosen, %d in shard %d of %d",
        args.input,
        len(records),
        len(chosen),
        len(shard),
        args.shard,
        args.shards,
    )

    if args.backend == "structure":
        from cache_embed.generate.structure_generator import StructureBackend, load_forms

        backend = StructureBackend(
            records, args.split, load_forms(args.forms), seed=args.seed, max_synonym_words=args.max_synonym_words
        )
    else:
        from cache_embed.generate.llm_backends import load_spec, make_backend

        backend = make_backend(args.backend, llm_settings(args), load_spec(args.spec))
    model = getattr(backend, "model", None)
    # The weights' revision is known only where this step loads them (vllm); an OpenAI-compatible
    # server serves whatever it loaded, and the structure backend has no model.
    model_revision = args.revision if args.backend == "vllm" else None

    drops: Counter = Counter()
    failures: Counter = Counter()
    attempts: Counter = Counter()
    positive_kinds: Counter = Counter()
    negative_kinds: Counter = Counter()
    triplets: list[dict] = []
    with_triplets = without_negatives = 0
    try:
        with tqdm(
            total=len(shard), desc=f"{args.split} shard {args.shard}", unit="query", file=sys.stderr, mininterval=5
        ) as progress:
            # The structure backend seeds each query on its own, so its batches only pace the progress bar.
            batch_size = args.batch_size or STRUCTURE_PROGRESS_BATCH
            for start in range(0, len(shard), batch_size):
                batch = shard[start : start + batch_size]
                for record, (positives, negatives) in zip(
                    batch,
                    candidates_per_batch(
                        backend, args.backend, batch, args.paraphrases, args.negatives, failures, attempts
                    ),
                    strict=False,
                ):
                    before = drops["positive_without_negative"]
                    pairs = build_triplets(
                        record["query"], positives, negatives, args.paraphrases, args.negatives, drops
                    )
                    if drops["positive_without_negative"] > before:
                        without_negatives += 1
                    if pairs:
                        with_triplets += 1
                    for positive, negative in pairs:
                        positive_kinds[positive.kind] += 1
                        negative_kinds[negative.kind] += 1
                        triplet = triplet_record(
                            record["query"],
                            positive,
                            negative,
                            query=record,
                            split=args.split,
                            domain=args.domain,
                            backend=args.backend,
                            model=model,
                        )
                        triplet["model_revision"] = model_revision
                        triplets.append(triplet)
                progress.update(len(batch))
    finally:
        backend.close()

    settings = run_settings(args)
    stats = {
        "split": args.split,
        "domain": args.domain,
        "shard": args.shard,
        "shards": args.shards,
        "backend": args.backend,
        "model": model,
        "model_revision": model_revision,
        "input_sha256": input_sha256,
        "settings": settings,
        "settings_sha256": hashlib.sha256(dumps(settings).encode("utf-8")).hexdigest(),
        "split_queries": len(records),
        "chosen_queries": len(chosen),
        "queries": len(shard),
        "queries_with_triplets": with_triplets,
        "queries_without_negatives": without_negatives,
        "yield": round(with_triplets / len(shard), 6) if shard else None,
        "triplets": len(triplets),
        "dropped": {k: v for k, v in sorted(drops.items()) if v},
        "failures": dict(sorted(failures.items())),
        "positive_kinds": dict(sorted(positive_kinds.items())),
        "negative_kinds": dict(sorted(negative_kinds.items())),
        "synonyms_filtered": dict(sorted(getattr(backend, "synonyms_filtered", Counter()).items())),
        "skipped_queries": dict(sorted(getattr(backend, "skipped", Counter()).items())),
        "qtypes_without_forms": dict(sorted(getattr(backend, "missing_forms", Counter()).items())),
        "llm_attempts": attempts["attempts"],
    }
    elapsed = time.perf_counter() - started
    LOG.info("stats: %s", dumps(stats))
    LOG.info(
        "%d triplets from %d queries in %.1f s (%.0f triplets/s)",
        len(triplets),
        len(shard),
        elapsed,
        len(triplets) / max(elapsed, 1e-9),
    )
    if shard and with_triplets / len(shard) < args.min_yield:
        raise PipelineError(
            f"{args.input} shard {args.shard}/{args.shards}: only {with_triplets} of {len(shard)} queries "
            f"({with_triplets / len(shard):.1%}) yielded a triplet, under --min-yield {args.min_yield}; "
            f"failures {dict(failures)}, drops {dict(drops)} (see the log); fix the backend or lower generate.min_yield"
        )
    write_jsonl(args.output, triplets)
    write_json(args.stats, stats)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
