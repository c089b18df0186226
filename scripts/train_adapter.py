"""train_adapter: train a LoRA adapter for a sentence-transformers model on cache triplets.

Each triplet is (anchor = original question, positive = paraphrase that must be a cache hit,
negative = related but different question that must be a miss). The loss is
MultipleNegativesRankingLoss over all three columns, so the hard negative is in every
anchor's softmax next to the in-batch negatives (options: the cached variant for large
batches, and GISTEmbedLoss guided by the frozen base model). Only the LoRA matrices train
(by default on every attention and dense layer); the output folder holds the PEFT adapter
(5.4 MB on L6, 10.7 MB on L12 with the defaults), not model weights.

Checkpoints are selected on the val select half by --best-metric: by default the cache figures the
deploy decision measures (cache_embed.train.checkpoint_evaluator: every anchor cached, each paraphrase and
hard negative looked up against all of them), with triplet accuracy logged beside them.

A killed run resumes from the last checkpoint in --checkpoint-dir when started again with
the same settings; checkpoints of a run with other settings are discarded (logged).

The run is cache_embed.train.training_run (data: training_data; trainer parts: trainer_setup;
resuming: checkpoints; second stage: contrastive_stage), the adapter folder adapter_output.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from cache_embed.common.cli import run_main, setup_logging
from cache_embed.common.files import write_json
from cache_embed.data.equivalence import MODES
from cache_embed.data.triplets import TRIPLET_FIELDS
from cache_embed.settings.cli_help import setting_help
from cache_embed.train.adapter_output import save_adapter
from cache_embed.train.checkpoint_evaluator import BEST_METRICS
from cache_embed.train.checkpoints import prepare_checkpoint_dir
from cache_embed.train.trainer_setup import (
    DIRECTIONS,
    HARDNESS_MODES,
    LOSSES,
    PRECISIONS,
    count_parameters,
    load_base,
    lora_config,
    make_loss,
)
from cache_embed.train.training_data import MINED_NEGATIVES_FILE, load_triplets
from cache_embed.train.training_run import train

# The step's names, and the library's that the tests and benchmarks reach through it (from before they moved).
__all__ = [
    "MINED_NEGATIVES_FILE",
    "TRIPLET_FIELDS",
    "count_parameters",
    "load_base",
    "load_triplets",
    "lora_config",
    "main",
    "make_loss",
    "parse_args",
    "prepare_checkpoint_dir",
]

LOG = logging.getLogger("train_adapter")


def parse_args(argv=None) -> argparse.Namespace:
    """The step's flags; each one that carries a train.* setting is described by the config schema."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-data", required=True, help="train triplets (JSONL: anchor, positive, negative)")
    parser.add_argument("--val-data", required=True, help="validation triplets (JSONL)")
    parser.add_argument(
        "--val-queries",
        default=None,
        help="the val split's query records (the same question, for a cache --best-metric)",
    )
    parser.add_argument("--base-model", required=True, help="local sentence-transformers folder of the base model")
    parser.add_argument(
        "--base-model-id",
        default="",
        help="hub id recorded as the adapter's base "
        "(default: base_model.json in --base-model, written by fetch_base_model.py)",
    )
    parser.add_argument("--output", required=True, help="adapter folder to write (e.g. models/medical/adapter)")
    parser.add_argument("--history", default="", help="JSON file for the training curves")
    parser.add_argument("--checkpoint-dir", default="", help="checkpoints for resuming (default: <output>.checkpoints)")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoints after success")
    parser.add_argument("--epochs", type=float, required=True, help=setting_help("train.epochs"))
    parser.add_argument("--batch-size", type=int, required=True, help=setting_help("train.batch_size"))
    parser.add_argument(
        "--lr", "--learning-rate", dest="lr", type=float, required=True, help=setting_help("train.learning_rate")
    )
    parser.add_argument("--scale", type=float, required=True, help=setting_help("train.scale"))
    parser.add_argument("--warmup-ratio", type=float, required=True, help=setting_help("train.warmup_ratio"))
    parser.add_argument("--scheduler", required=True, help=setting_help("train.scheduler"))
    parser.add_argument("--weight-decay", type=float, required=True, help=setting_help("train.weight_decay"))
    parser.add_argument("--max-grad-norm", type=float, required=True, help=setting_help("train.max_grad_norm"))
    parser.add_argument("--max-examples", type=int, required=True, help=setting_help("train.max_examples"))
    parser.add_argument("--max-val-examples", type=int, required=True, help=setting_help("train.max_val_examples"))
    parser.add_argument("--qtype-balance", type=float, default=1.0, help=setting_help("train.qtype_balance"))
    parser.add_argument("--max-drop-fraction", type=float, required=True, help=setting_help("train.max_drop_fraction"))
    parser.add_argument("--max-seq-length", type=int, required=True, help=setting_help("train.max_seq_length"))
    parser.add_argument("--seed", type=int, required=True, help=setting_help("train.seed"))
    parser.add_argument("--loss", choices=LOSSES, required=True, help=setting_help("train.loss"))
    parser.add_argument("--mini-batch-size", type=int, required=True, help=setting_help("train.mini_batch_size"))
    parser.add_argument(
        "--hardness-mode", choices=HARDNESS_MODES, default="none", help=setting_help("train.hardness.mode")
    )
    parser.add_argument("--hardness-strength", type=float, default=0.0, help=setting_help("train.hardness.strength"))
    parser.add_argument(
        "--directions", nargs="+", choices=DIRECTIONS, default=["query_to_doc"], help=setting_help("train.directions")
    )
    parser.add_argument("--mined-negatives", type=int, default=0, help=setting_help("train.mined_negatives.count"))
    parser.add_argument("--train-queries", default=None, help="the train split's query records (for mining)")
    parser.add_argument("--mine-range-min", type=int, default=0, help=setting_help("train.mined_negatives.range_min"))
    parser.add_argument("--mine-range-max", type=int, default=20, help=setting_help("train.mined_negatives.range_max"))
    parser.add_argument("--mine-margin", type=float, default=None, help=setting_help("train.mined_negatives.margin"))
    parser.add_argument("--lora-r", type=int, required=True, help=setting_help("train.lora.r"))
    parser.add_argument("--lora-alpha", type=float, required=True, help=setting_help("train.lora.alpha"))
    parser.add_argument("--lora-dropout", type=float, required=True, help=setting_help("train.lora.dropout"))
    parser.add_argument(
        "--lora-target-modules", nargs="+", required=True, help=setting_help("train.lora.target_modules")
    )
    parser.add_argument("--precision", choices=PRECISIONS, required=True, help=setting_help("train.precision"))
    parser.add_argument("--eval-steps", type=int, required=True, help=setting_help("train.eval_steps"))
    parser.add_argument("--logging-steps", type=int, default=0, help="log the loss every N steps (0: eval_steps/10)")
    parser.add_argument(
        "--best-metric",
        choices=(*BEST_METRICS, "accuracy", "loss"),
        required=True,
        help=setting_help("train.best_metric"),
    )
    # Passed only with a cache --best-metric (the workflow's settings), so that they rerun training
    # only where they change which checkpoint is kept.
    parser.add_argument(
        "--equivalence", choices=MODES, help="the same question (cache --best-metric, --mined-negatives)"
    )
    parser.add_argument("--repeat-share", type=float, help="traffic mix (cache --best-metric)")
    parser.add_argument("--max-wrong-share", type=float, help="wrong-share budget (cache_repeat_hit_rate)")
    parser.add_argument("--contrastive-steps", type=int, default=0, help=setting_help("train.contrastive.steps"))
    parser.add_argument("--contrastive-margin", type=float, default=0.5, help=setting_help("train.contrastive.margin"))
    parser.add_argument(
        "--contrastive-lr", type=float, default=None, help=setting_help("train.contrastive.learning_rate")
    )
    parser.add_argument("--device", default="", help="torch device (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    parser.add_argument("--domain", default="", help="domain name for the model card")
    parser.add_argument(
        "--domain-spec",
        default=None,
        help="the domain's spec YAML: its card: block gives the card's data, source and licence",
    )
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "lr", "scale", "eval_steps", "max_seq_length", "lora_r"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    if args.batch_size < 2:
        parser.error("--batch-size must be >= 2 (in-batch negatives)")
    if not 0 <= args.warmup_ratio < 1:
        parser.error("--warmup-ratio must be in [0, 1)")
    if args.max_examples < 0 or args.max_val_examples < 0:
        parser.error("--max-examples/--max-val-examples must be >= 0")
    if not 0 <= args.qtype_balance <= 1:
        parser.error("--qtype-balance must be in [0, 1]")
    if args.best_metric in BEST_METRICS:
        needed = ("equivalence", "repeat_share") + (
            ("max_wrong_share",) if args.best_metric == "cache_repeat_hit_rate" else ()
        )
        missing = [f"--{n.replace('_', '-')}" for n in needed if getattr(args, n) is None]
        if missing:
            parser.error(f"--best-metric {args.best_metric} needs {', '.join(missing)}")
        if not 0 < args.repeat_share < 1:
            parser.error("--repeat-share must be in (0, 1)")
        if args.max_wrong_share is not None and not 0 < args.max_wrong_share < 1:
            parser.error("--max-wrong-share must be in (0, 1)")
    elif args.max_wrong_share is not None:
        parser.error("--max-wrong-share is for --best-metric cache_repeat_hit_rate")
    if args.hardness_mode != "none" and args.loss == "gist":
        parser.error("--hardness-mode weights MNRL's negatives: use it with --loss mnrl or cached_mnrl")
    if args.hardness_strength < 0:
        parser.error("--hardness-strength must be >= 0")
    if "query_to_doc" not in args.directions:
        parser.error("--directions must include query_to_doc")
    if args.loss == "gist" and args.directions != ["query_to_doc"]:
        parser.error("--directions is an MNRL option: use it with --loss mnrl")
    if args.loss == "cached_mnrl" and args.directions != ["query_to_doc"]:
        parser.error("--directions is not supported with --loss cached_mnrl; use --loss mnrl")
    if args.mined_negatives < 0:
        parser.error("--mined-negatives must be >= 0")
    if args.mined_negatives and args.loss == "gist":
        # GISTEmbedLoss takes (anchor, positive[, negative]); mined negatives add columns it refuses.
        parser.error("--loss gist takes one negative per row: use --mined-negatives 0 or --loss mnrl")
    if args.contrastive_steps < 0 or not 0 < args.contrastive_margin <= 2:
        parser.error("--contrastive-steps must be >= 0 and --contrastive-margin in (0, 2]")
    if args.contrastive_steps and args.best_metric == "loss":
        parser.error("--contrastive-steps selects its checkpoint by the evaluator: use a --best-metric other than loss")
    if args.mined_negatives:
        missing = [
            f for f, v in (("--train-queries", args.train_queries), ("--equivalence", args.equivalence)) if not v
        ]
        if missing:
            parser.error(f"--mined-negatives needs {', '.join(missing)}")
        if args.mine_range_min < 0 or args.mine_range_max - args.mine_range_min < args.mined_negatives:
            parser.error("--mine-range-min/--mine-range-max must hold at least --mined-negatives candidates")
    if not args.checkpoint_dir:
        args.checkpoint_dir = str(Path(args.output).with_name(Path(args.output).name + ".checkpoints"))
    return args


def main(argv=None) -> int:
    setup_logging()
    args = parse_args(argv)
    outcome = train(args)
    info = outcome["info"]
    save_adapter(outcome["model"], Path(args.output), info, args)
    if args.history:
        write_json(args.history, outcome["history"])
    if not args.keep_checkpoints:
        shutil.rmtree(outcome["checkpoint_dir"], ignore_errors=True)
    LOG.info(
        "adapter written to %s (%d bytes, %d trainable parameters, %d steps, %.1f examples/s)",
        args.output,
        info["adapter_bytes"],
        info["trainable_parameters"],
        info["steps"],
        info["train_examples_per_second"] or 0.0,
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
