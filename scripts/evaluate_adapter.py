"""Evaluate a LoRA adapter against its base model as a semantic cache (the step script).

Every distinct text (test triplets, calibration triplets and external pairs) is encoded once per
model, base first, then with the adapter loaded, as L2-normalised embeddings; similarity is cosine.
The library does the rest: cache_embed.evaluate.inputs (inputs), cache_embed.data.equivalence (the same
question), cache_embed.evaluate.simulation (the cache as operated), cache_embed.evaluate.metrics (metrics.json),
cache_embed.evaluate.plots and cache_embed.evaluate.markdown.

The deploy threshold is CHOSEN on the validation cache simulation (--calibration-triplets: the
calibration half of the val split) as the lowest threshold whose one-sided 95% Clopper-Pearson
upper bound on the wrong share of served answers is at most --max-wrong-share, and MEASURED on test.

metrics.json shape (keys sorted; thresholds and precisions keyed as "0.80", "0.95"):

  settings: {thresholds, target_precisions, deploy_precision, max_wrong_share, repeat_share, equivalence,
             bootstrap, seed, batch_size, calibration_triplets (path | null), max_calibration_triplets}
  models: {base, adapter, adapter_base_model, embedding_dim, adapter_changes_embeddings, max_abs_embedding_change}
  counts: {triplets, distinct_texts, anchors, focus_groups, cache: {cached_entries, repeat_lookups, novel_lookups,
           repeats_with_equivalent_entries, novel_lookups_with_entries_left_out,
           novel_lookups_with_equivalents_left_out, entries_left_out}, by_negative_kind, by_qtype, external_pairs}
  test:
    base | adapter: {triplets, pairs, positives, negatives, roc_auc, pr_auc, mean_pos, mean_neg, margin,
      triplet_accuracy, at_threshold: {t: {threshold, precision, recall, f1, tp, fp, fn}},
      at_precision: {p: {threshold, recall, precision} | null}, best_f1: {threshold, f1, precision, recall},
      cache: {<counts as above>, repeat_share, rank1_correct, rank1_identity,
              at_threshold: {t: {threshold, repeat_hit_rate, repeat_wrong_rate, novel_false_hit_rate,
                                 served_share, wrong_share, wrong_share_upper, correct_hits,
                                 correct_by_equivalence, wrong_hits, false_hits}},
              p_chr: {auc, points: [[threshold, served_share, precision], ...]}}}
    delta: adapter minus base (pair figures; cache: rank1_correct, p_chr_auc, at_threshold.{repeat_hit_rate,
           novel_false_hit_rate, wrong_share})
    ci: paired bootstrap over focus groups: {roc_auc | pr_auc | triplet_accuracy | margin:
        {delta, low, high, level, resamples, unit}} ({} with --bootstrap 0)
    by_qtype | by_negative_kind: {value: {triplets, base: G, adapter: G}}, G = {roc_auc, pr_auc, mean_pos,
        mean_neg, margin, triplet_accuracy, at_recommended_threshold: {threshold, precision, recall, f1} | null}
  external: {name: {file, pairs, positives, negatives, base: P, adapter: P, delta}}
  recommended_threshold: {rule, max_wrong_share, repeat_share, level, chosen_on ("val" | "test"), equivalence,
      calibration_triplets, calibration_triplets_available, calibration_cache, test_cache, note, verdict,
      adapter | base: {threshold, bound_met_on_val,
          val: {wrong_share, wrong_share_upper, repeat_hit_rate, repeat_wrong_rate, novel_false_hit_rate, served_share},
          test: {<the same>, wrong_share_ci, repeat_hit_rate_ci, novel_false_hit_rate_ci: {low, high} (group
                 bootstrap), wrong_share_cp: {low, high, n_effective}, bound_held, pair: {threshold, precision,
                 recall, f1}}} | null,
      delta: {figure: {delta, low, high}} (adapter at its threshold minus base at its threshold),
      bootstrap: {unit, groups, resamples, level},
      base_at_adapter_threshold | adapter_at_base_threshold: cache figures at the other's threshold,
      pair_threshold: {deploy_precision, chosen_on, note, adapter | base: {threshold, precision, recall, f1,
          calibration, meets_deploy_precision_on_test, cache} | null, base_at_adapter_threshold,
          adapter_at_base_threshold}}
  versions: {python, numpy, scipy, torch, transformers, sentence-transformers, peft, matplotlib}
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from cache_embed.common.cli import PipelineError, run_main, setup_logging
from cache_embed.common.files import atomic_output, write_json
from cache_embed.common.numbers import fmt, pct
from cache_embed.common.paths import shareable_path
from cache_embed.common.text import comparison_key
from cache_embed.data.equivalence import MODES
from cache_embed.evaluate.inputs import (
    calibration_distractors,
    calibration_subset,
    check_triplets_match_records,
    load_external_pairs,
    load_query_records,
    load_triplets,
    parse_external,
)
from cache_embed.evaluate.markdown import render_markdown
from cache_embed.evaluate.metrics import compute_metrics, versions
from cache_embed.evaluate.plots import make_plots
from cache_embed.evaluate.simulation import cached_entry_count

LOG = logging.getLogger("evaluate_adapter")


# ---------------------------------------------------------------- encoding


def encode_all(texts: list[str], base_model: str, adapter: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Encode the texts with the base model, then with the adapter loaded on it."""
    from sentence_transformers import SentenceTransformer

    base_path, adapter_path = Path(base_model), Path(adapter)
    if not (base_path / "modules.json").is_file() and not (base_path / "config.json").is_file():
        raise PipelineError(f"{base_path}: not a sentence-transformers model folder (no modules.json/config.json)")
    if not (adapter_path / "adapter_config.json").is_file():
        raise PipelineError(f"{adapter_path}: not a PEFT adapter folder (no adapter_config.json)")
    LOG.info("loading base model %s", base_path)
    model = SentenceTransformer(str(base_path))
    kwargs = {
        "batch_size": batch_size,
        "normalize_embeddings": True,
        "convert_to_numpy": True,
        "show_progress_bar": True,
    }
    LOG.info("encoding %d distinct texts with the base model", len(texts))
    base = model.encode(texts, **kwargs)
    LOG.info("loading adapter %s", adapter_path)
    model.load_adapter(str(adapter_path))
    LOG.info("encoding %d distinct texts with the adapter", len(texts))
    tuned = model.encode(texts, **kwargs)
    return np.asarray(base, dtype=np.float32), np.asarray(tuned, dtype=np.float32)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triplets", required=True, help="test triplets JSONL")
    parser.add_argument("--queries", default=None, help="the test split's query records (equivalence, focus groups)")
    parser.add_argument("--base-model", required=True, help="sentence-transformers model folder")
    parser.add_argument("--adapter", required=True, help="PEFT LoRA adapter folder")
    parser.add_argument("--output-json", required=True)
    parser.add_argument("--output-md", required=True)
    parser.add_argument("--plots-dir", required=True)
    parser.add_argument("--thresholds", type=float, nargs="+", required=True)
    parser.add_argument("--target-precisions", type=float, nargs="+", required=True)
    parser.add_argument("--deploy-precision", type=float, required=True, help="for the secondary pair-based threshold")
    parser.add_argument(
        "--max-wrong-share",
        type=float,
        required=True,
        help="error budget: the deploy threshold's 95%% upper bound on the wrong share",
    )
    parser.add_argument("--repeat-share", type=float, required=True, help="share of repeats in the traffic mix")
    parser.add_argument("--equivalence", choices=MODES, required=True, help="definition of the same question")
    parser.add_argument("--bootstrap", type=int, required=True, help="paired resamples over focus groups; 0 skips")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument(
        "--external",
        nargs="*",
        required=True,
        metavar="NAME=PATH",
        help="labelled pair files (CSV or JSONL: question_1, question_2, label)",
    )
    parser.add_argument(
        "--calibration-triplets",
        default=None,
        metavar="PATH",
        help="triplets JSONL (the val calibration half) on which each model's deploy threshold is"
        " chosen; without it the threshold is chosen on the test triplets (optimistic)",
    )
    parser.add_argument(
        "--calibration-distractors",
        metavar="PATH",
        help="query records of other focus groups (the train split): the calibration cache is padded with"
        " them to the test cache's size, so the threshold is chosen where a lookup has as many wrong"
        " neighbours as on test",
    )
    parser.add_argument(
        "--calibration-queries",
        default=None,
        metavar="PATH",
        help="the val split's query records (equivalence and groups of the calibration triplets)",
    )
    parser.add_argument(
        "--max-calibration-triplets",
        type=int,
        default=3000,
        metavar="N",
        help="seeded subset of the calibration triplets, whole focus groups (0: all)",
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    for value in args.target_precisions + [args.deploy_precision]:
        if not 0 < value <= 1:
            parser.error(f"precision {value} is outside (0, 1]")
    if not 0 < args.max_wrong_share < 1 or not 0 < args.repeat_share < 1:
        parser.error("--max-wrong-share and --repeat-share must be in (0, 1)")
    if args.bootstrap < 0 or args.batch_size < 1 or args.max_calibration_triplets < 0:
        parser.error("--bootstrap and --max-calibration-triplets must be >= 0 and --batch-size >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    from tqdm import tqdm

    triplets = load_triplets(args.triplets)
    test_records = load_query_records(args.queries)
    if test_records is not None:
        check_triplets_match_records(triplets, test_records, args.triplets)
    else:
        LOG.warning("no --queries: cache hits are judged by identity only, intervals resample anchors")
    external = {
        name: {"file": shareable_path(path), "pairs": load_external_pairs(path)}
        for name, path in parse_external(args.external).items()
    }
    calibration, available, calibration_records = None, None, None
    if args.calibration_triplets:
        every = load_triplets(args.calibration_triplets)
        available = len(every)
        calibration_records = load_query_records(args.calibration_queries)
        calibration = calibration_subset(every, args.max_calibration_triplets, args.seed, calibration_records)
        if calibration_records is not None:
            check_triplets_match_records(calibration, calibration_records, args.calibration_triplets)
        LOG.info(
            "choosing thresholds on %d of %d calibration triplets from %s",
            len(calibration),
            available,
            args.calibration_triplets,
        )
    else:
        LOG.warning("no --calibration-triplets: the threshold is chosen on the test triplets (optimistic)")
    distractors = []
    if calibration is not None:
        padding = cached_entry_count(triplets) - cached_entry_count(calibration)
        taken = {
            comparison_key(t[field]) for t in triplets + calibration for field in ("anchor", "positive", "negative")
        }
        distractors = calibration_distractors(args.calibration_distractors, padding, args.seed, taken)
        LOG.info(
            "calibration cache padded with %d questions of other focus groups to the test cache's size",
            len(distractors),
        )
    texts = sorted(
        set(distractors)
        | {text for t in triplets + (calibration or []) for text in (t["anchor"], t["positive"], t["negative"])}
        | {text for spec in external.values() for a, b, _ in spec["pairs"] for text in (a, b)}
    )
    base, tuned = encode_all(texts, args.base_model, args.adapter, args.batch_size)
    if not np.any(np.abs(base - tuned) > 1e-6):
        LOG.warning("the adapter does not change any embedding: is it untrained or not applied?")
    thresholds = sorted(set(args.thresholds))
    targets = sorted(set(args.target_precisions))
    metrics, curves = compute_metrics(
        triplets,
        texts,
        {"base": base, "adapter": tuned},
        external,
        thresholds,
        targets,
        args.deploy_precision,
        args.bootstrap,
        args.seed,
        progress=lambda it: tqdm(it, desc="bootstrap", file=sys.stderr, mininterval=2),
        calibration=calibration,
        calibration_available=available,
        test_records=test_records,
        calibration_records=calibration_records,
        calibration_distractors=distractors,
        equivalence_mode=args.equivalence,
        repeat_share=args.repeat_share,
        max_wrong_share=args.max_wrong_share,
    )
    adapter_config = Path(args.adapter) / "adapter_config.json"
    metrics["models"].update(
        {
            "base": shareable_path(args.base_model),
            "adapter": shareable_path(args.adapter),
            "adapter_base_model": shareable_path(
                json.loads(adapter_config.read_text(encoding="utf-8")).get("base_model_name_or_path")
            ),
        }
    )
    metrics["settings"] = {
        "thresholds": thresholds,
        "target_precisions": targets,
        "deploy_precision": args.deploy_precision,
        "max_wrong_share": args.max_wrong_share,
        "repeat_share": args.repeat_share,
        "equivalence": args.equivalence,
        "bootstrap": args.bootstrap,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "calibration_triplets": shareable_path(args.calibration_triplets),
        "calibration_distractors": shareable_path(args.calibration_distractors),
        "max_calibration_triplets": args.max_calibration_triplets,
    }
    metrics["versions"] = versions()
    make_plots(curves, args.deploy_precision, args.plots_dir)
    write_json(args.output_json, metrics)
    with atomic_output(args.output_md) as handle:
        handle.write(render_markdown(metrics))
    rec = metrics["recommended_threshold"]
    for name in ("adapter", "base"):
        entry = rec.get(name)
        if entry:
            LOG.info(
                "%s: deploy threshold %s (bound met on val: %s); test wrong share %s, repeat hit rate %s,"
                " bound held: %s",
                name,
                fmt(entry["threshold"], 4),
                entry["bound_met_on_val"],
                pct(entry["test"]["wrong_share"]),
                pct(entry["test"]["repeat_hit_rate"]),
                entry["test"]["bound_held"],
            )
    LOG.info("verdict: %s", rec["verdict"])
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
