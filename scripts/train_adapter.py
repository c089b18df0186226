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
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from cache_embed.common.cli import PipelineError, library_versions, run_main, setup_logging
from cache_embed.common.files import dumps, make_readable, read_json, sha256_file, write_json
from cache_embed.common.paths import shareable_path
from cache_embed.common.text import comparison_key
from cache_embed.data.equivalence import MODES
from cache_embed.data.triplets import TRIPLET_FIELDS, read_triplets
from cache_embed.train.checkpoint_evaluator import BEST_METRICS, make_cache_evaluator
from cache_embed.train.negative_mining import MiningSettings, add_mined_negatives, negative_columns
from cache_embed.train.qtype_balance import balanced_sample

LOG = logging.getLogger("train_adapter")
TRAINING_LIBRARIES = ("torch", "transformers", "peft", "sentence-transformers", "datasets", "accelerate")
LOSSES = ("mnrl", "cached_mnrl", "gist")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
HARDNESS_MODES = ("none", "in_batch_negatives", "hard_negatives", "all_negatives")
DIRECTIONS = ("query_to_doc", "doc_to_query", "query_to_query", "doc_to_doc")
MINED_NEGATIVES_FILE = "mined_train.jsonl"
CONTRASTIVE_DIR = "contrastive"
EVALUATOR_NAME = "val"
CACHE_EVALUATOR_NAME = "val_cache"
RUN_CONFIG = "run_config.json"


def parse_args(argv=None) -> argparse.Namespace:
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
    parser.add_argument("--epochs", type=float, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--lr", "--learning-rate", dest="lr", type=float, required=True)
    parser.add_argument("--scale", type=float, required=True, help="similarity scale of the loss (1 / temperature)")
    parser.add_argument("--warmup-ratio", type=float, required=True)
    parser.add_argument("--scheduler", required=True, help="lr_scheduler_type (linear, cosine, constant, ...)")
    parser.add_argument("--weight-decay", type=float, required=True)
    parser.add_argument("--max-grad-norm", type=float, required=True)
    parser.add_argument(
        "--max-examples", type=int, required=True, help="train on a seeded subset of this size (0 = all)"
    )
    parser.add_argument("--max-val-examples", type=int, required=True, help="validate on a seeded subset (0 = all)")
    parser.add_argument(
        "--qtype-balance",
        type=float,
        default=1.0,
        help="with --max-examples: each qtype's share of the subset proportional to its count ** this (1: as in the file)",
    )
    parser.add_argument(
        "--max-drop-fraction",
        type=float,
        required=True,
        help="fail when more than this fraction of triplets are unusable",
    )
    parser.add_argument("--max-seq-length", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--loss", choices=LOSSES, required=True)
    parser.add_argument("--mini-batch-size", type=int, required=True, help="mini-batch of cached_mnrl")
    parser.add_argument(
        "--hardness-mode",
        choices=HARDNESS_MODES,
        default="none",
        help="MNRL hardness weighting (sentence-transformers 6; mnrl and cached_mnrl)",
    )
    parser.add_argument("--hardness-strength", type=float, default=0.0, help="with --hardness-mode")
    parser.add_argument(
        "--directions",
        nargs="+",
        choices=DIRECTIONS,
        default=["query_to_doc"],
        help="MNRL similarity directions (sentence-transformers 6): doc_to_query ranks each paraphrase "
        "against every anchor in the batch, the cache's own lookup",
    )
    parser.add_argument(
        "--mined-negatives",
        type=int,
        default=0,
        help="hard negatives mined per triplet from the train split's questions (0 = none)",
    )
    parser.add_argument("--train-queries", default=None, help="the train split's query records (for mining)")
    parser.add_argument("--mine-range-min", type=int, default=0, help="skip the base model's nearest N candidates")
    parser.add_argument("--mine-range-max", type=int, default=20, help="consider candidates up to this rank")
    parser.add_argument(
        "--mine-margin",
        type=float,
        default=None,
        help="a mined negative scores at least this much below the anchor's positive (base model; default: no margin)",
    )
    parser.add_argument("--lora-r", type=int, required=True)
    parser.add_argument("--lora-alpha", type=float, required=True)
    parser.add_argument("--lora-dropout", type=float, required=True)
    parser.add_argument("--lora-target-modules", nargs="+", required=True)
    parser.add_argument("--precision", choices=PRECISIONS, required=True)
    parser.add_argument("--eval-steps", type=int, required=True, help="evaluate and checkpoint every N steps")
    parser.add_argument("--logging-steps", type=int, default=0, help="log the loss every N steps (0: eval_steps/10)")
    parser.add_argument(
        "--best-metric",
        choices=(*BEST_METRICS, "accuracy", "loss"),
        required=True,
        help="checkpoint kept at the end: best validation cache figure (cache_*), triplet accuracy,"
        " or lowest validation loss",
    )
    # Passed only with a cache --best-metric (the workflow's settings), so that they rerun training
    # only where they change which checkpoint is kept.
    parser.add_argument(
        "--equivalence", choices=MODES, help="the same question (cache --best-metric, --mined-negatives)"
    )
    parser.add_argument("--repeat-share", type=float, help="traffic mix (cache --best-metric)")
    parser.add_argument("--max-wrong-share", type=float, help="wrong-share budget (cache_repeat_hit_rate)")
    parser.add_argument(
        "--contrastive-steps",
        type=int,
        default=0,
        help="a second stage of OnlineContrastiveLoss on (question, question, same?) pairs from the triplets, "
        "this many steps after the first (0 = none)",
    )
    parser.add_argument("--contrastive-margin", type=float, default=0.5, help="cosine-distance margin of the stage")
    parser.add_argument("--contrastive-lr", type=float, default=None, help="learning rate of the stage (default: --lr)")
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


# --------------------------------------------------------------------------- data


def load_triplets(
    path: str, max_examples: int, seed: int, max_drop_fraction: float, qtype_balance: float = 1.0
) -> tuple[list[dict], dict]:
    """Read triplets; a record without the three texts is a user error (file and line named).
    Degenerate triplets (negative equal to anchor or positive, positive equal to nothing new)
    are dropped and counted; more than max_drop_fraction of them fails the run. A subset of
    max_examples is a seeded uniform sample, or with qtype_balance below 1 a sample whose qtype
    shares are flattened (cache_embed.train.qtype_balance)."""
    path = Path(path)
    kept, qtypes, dropped, total = [], [], {}, 0
    for _, record in read_triplets(path):
        total += 1
        keys = {field: comparison_key(record[field]) for field in TRIPLET_FIELDS}
        reason = None
        if keys["negative"] in (keys["anchor"], keys["positive"]):
            reason = "negative_equals_anchor_or_positive"
        if reason:
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        # The ids stay with the texts: the cache evaluator's equivalence needs them.
        kept.append({key: record[key] for key in (*TRIPLET_FIELDS, "query_id", "negative_query_id") if key in record})
        qtypes.append(str(record.get("qtype") or "unknown"))
    if total == 0:
        raise PipelineError(f"{path}: no triplets; check the generate step's stats")
    n_dropped = sum(dropped.values())
    if n_dropped > max_drop_fraction * total:
        raise PipelineError(
            f"{path}: {n_dropped} of {total} triplets unusable ({dropped}), more than the allowed "
            f"fraction {max_drop_fraction}; fix the generator or raise --max-drop-fraction"
        )
    if not kept:
        raise PipelineError(f"{path}: every triplet was unusable ({dropped})")
    available = len(kept)
    if max_examples and max_examples < len(kept):
        if qtype_balance < 1:
            chosen = balanced_sample(qtypes, max_examples, qtype_balance, seed)
        else:
            chosen = sorted(random.Random(seed).sample(range(len(kept)), max_examples))
        kept, qtypes = [kept[index] for index in chosen], [qtypes[index] for index in chosen]
    stats = {"file": shareable_path(path), "records": total, "usable": available, "used": len(kept), "dropped": dropped}
    if qtype_balance < 1:
        stats["qtype_balance"] = qtype_balance
        stats["qtypes_used"] = dict(Counter(qtypes).most_common())
    return kept, stats


def contrastive_pairs(rows: list[dict], negative_fields: list[str], count: int, seed: int) -> dict[str, list]:
    """`count` labelled question pairs from the triplets, shuffled: (anchor, paraphrase, 1) and
    (anchor, each of its negatives, 0), so that the stage sees what the cache decides by threshold."""
    pairs = []
    for row in rows:
        pairs.append((row["anchor"], row["positive"], 1))
        pairs += [(row["anchor"], row[field], 0) for field in negative_fields]
    random.Random(seed).shuffle(pairs)
    pairs = pairs[:count]
    return {"sentence1": [p[0] for p in pairs], "sentence2": [p[1] for p in pairs], "label": [p[2] for p in pairs]}


def mined_rows(args, rows: list[dict], base_model, checkpoint_dir: Path) -> tuple[list[dict], dict]:
    """The rows with --mined-negatives mined negatives each (by the frozen base model, before the
    adapter is added). Kept in the checkpoint folder, whose settings fingerprint covers the mining,
    so a resumed run trains on the same rows without mining again."""
    from cache_embed.evaluate.inputs import load_query_records

    saved = checkpoint_dir / MINED_NEGATIVES_FILE
    if saved.exists():
        payload = read_json(saved)
        LOG.info("mined negatives: reusing %s", saved)
        return payload["rows"], payload["stats"]
    settings = MiningSettings(
        count=args.mined_negatives,
        range_min=args.mine_range_min,
        range_max=args.mine_range_max,
        absolute_margin=args.mine_margin,
        batch_size=max(args.batch_size, 64),
    )
    started = time.monotonic()
    rows, stats = add_mined_negatives(
        rows, load_query_records(args.train_queries), base_model, settings, args.equivalence, args.max_drop_fraction
    )
    stats["seconds"] = round(time.monotonic() - started, 1)
    write_json(saved, {"rows": rows, "stats": stats})
    return rows, stats


# --------------------------------------------------------------------------- model


def resolve_base_model_id(base_model: str, base_model_id: str) -> tuple[str, str]:
    """The hub id (and revision) recorded as the adapter's base; never a local path."""
    info_path = Path(base_model) / "base_model.json"
    info = read_json(info_path) if info_path.exists() else {}
    hub_id = base_model_id or info.get("name", "")
    if not hub_id:
        raise PipelineError(
            f"no hub id for the base model in {base_model}: pass --base-model-id (e.g. "
            "sentence-transformers/all-MiniLM-L6-v2) or fetch it with scripts/fetch_base_model.py"
        )
    if os.path.isabs(hub_id) or hub_id.startswith(".") or hub_id.count("/") != 1:
        raise PipelineError(f"--base-model-id {hub_id!r} is not a hub id of the form owner/name")
    return hub_id, info.get("revision", "") if info.get("name", hub_id) == hub_id else ""


def choose_precision(precision: str, device: str) -> str:
    import torch

    cuda = device.startswith("cuda")
    if precision == "auto":
        if cuda and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp16" if cuda else "fp32"
    if precision == "fp16" and not cuda:
        raise PipelineError("--precision fp16 needs a CUDA device; use auto or fp32 on this machine")
    if precision == "bf16" and not (cuda and torch.cuda.is_bf16_supported()):
        raise PipelineError("--precision bf16 needs a CUDA device with bf16 support; use auto or fp32 here")
    return precision


def load_base(base_model: str, device: str, max_seq_length: int):
    from sentence_transformers import SentenceTransformer

    if not (Path(base_model) / "modules.json").exists():
        raise PipelineError(
            f"{base_model}: not a sentence-transformers folder (no modules.json); fetch it with "
            "scripts/fetch_base_model.py or point --base-model at a seeded copy"
        )
    model = SentenceTransformer(str(base_model), device=device, local_files_only=True)
    model.max_seq_length = max_seq_length
    return model


def lora_config(args):
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.FEATURE_EXTRACTION,
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=list(args.lora_target_modules),
    )


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def make_loss(args, model):
    from sentence_transformers.sentence_transformer import losses

    hardness = {}
    if args.hardness_mode != "none":
        hardness = {"hardness_mode": args.hardness_mode, "hardness_strength": args.hardness_strength}
    if args.loss == "mnrl":
        return losses.MultipleNegativesRankingLoss(
            model, scale=args.scale, directions=tuple(args.directions), **hardness
        )
    if args.loss == "cached_mnrl":
        return losses.CachedMultipleNegativesRankingLoss(
            model, scale=args.scale, mini_batch_size=args.mini_batch_size, **hardness
        )
    # GIST: the guide is the frozen base model (a separate copy without the adapter); in-batch
    # candidates that the guide scores above the positive are masked out as likely false negatives.
    guide = load_base(args.base_model, str(model.device), args.max_seq_length)
    guide.requires_grad_(False)
    guide.eval()
    return losses.GISTEmbedLoss(model, guide=guide, temperature=1.0 / args.scale)


def make_evaluator(args, val_rows: list[dict], val_columns: dict):
    """The validation evaluator (triplet accuracy, and the cache figures with a cache --best-metric)
    and the trainer's name of the metric that selects the checkpoint."""
    from sentence_transformers.sentence_transformer.evaluation import SequentialEvaluator, TripletEvaluator

    from cache_embed.evaluate.inputs import check_triplets_match_records, load_query_records

    batch_size = max(args.batch_size, 64)
    triplet_evaluator = TripletEvaluator(
        anchors=val_columns["anchor"],
        positives=val_columns["positive"],
        negatives=val_columns["negative"],
        name=EVALUATOR_NAME,
        batch_size=batch_size,
        write_csv=False,
    )
    if args.best_metric == "loss":
        return triplet_evaluator, "eval_loss"
    if args.best_metric == "accuracy":
        return triplet_evaluator, f"eval_{EVALUATOR_NAME}_cosine_accuracy"
    records = load_query_records(args.val_queries)
    if records is None:
        LOG.warning("no --val-queries: the cache evaluator judges hits by identity and equal text only")
    else:
        check_triplets_match_records(val_rows, records, args.val_data)
    primary = BEST_METRICS[args.best_metric]
    cache_evaluator = make_cache_evaluator(
        val_rows,
        records,
        args.equivalence,
        args.repeat_share,
        args.max_wrong_share,
        primary=primary,
        name=CACHE_EVALUATOR_NAME,
        batch_size=batch_size,
    )
    evaluator = SequentialEvaluator([triplet_evaluator, cache_evaluator])
    return evaluator, f"eval_{CACHE_EVALUATOR_NAME}_{primary}"


# --------------------------------------------------------------------------- checkpoints


def run_fingerprint(args, train_sha: str, val_sha: str) -> dict:
    """Everything that makes a checkpoint resumable by this run."""
    keys = (
        "epochs",
        "batch_size",
        "lr",
        "scale",
        "warmup_ratio",
        "scheduler",
        "weight_decay",
        "max_grad_norm",
        "max_examples",
        "max_val_examples",
        "max_seq_length",
        "seed",
        "loss",
        "mini_batch_size",
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "lora_target_modules",
        "eval_steps",
        "best_metric",
        "hardness_mode",
        "hardness_strength",
        "equivalence",
        "repeat_share",
        "max_wrong_share",
        "directions",
        "mined_negatives",
        "mine_range_min",
        "mine_range_max",
        "mine_margin",
        "contrastive_steps",
        "contrastive_margin",
        "contrastive_lr",
    )
    config = {key: getattr(args, key) for key in keys}
    if args.qtype_balance < 1:  # absent at 1, so runs from before the option keep their fingerprint
        config["qtype_balance"] = args.qtype_balance
    if args.mined_negatives:
        config["train_queries_sha256"] = sha256_file(args.train_queries)
    config.update(train_sha256=train_sha, val_sha256=val_sha, base_model=str(Path(args.base_model).resolve()))
    return config


def last_complete_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest checkpoint-N folder with a trainer state (a kill during saving leaves one without)."""
    candidates = []
    for folder in checkpoint_dir.glob("checkpoint-*"):
        suffix = folder.name.rsplit("-", 1)[-1]
        if folder.is_dir() and suffix.isdigit() and (folder / "trainer_state.json").exists():
            candidates.append((int(suffix), folder))
    return max(candidates)[1] if candidates else None


def prepare_checkpoint_dir(checkpoint_dir: Path, fingerprint: dict) -> Path | None:
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    marker = checkpoint_dir / RUN_CONFIG
    if marker.exists():
        previous = read_json(marker)
        current = json.loads(dumps(fingerprint))  # as it would read back from the marker file
        if previous != current:
            changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
            LOG.warning(
                "checkpoints in %s are from a run with other settings (%s): discarding them",
                checkpoint_dir,
                ", ".join(changed),
            )
            shutil.rmtree(checkpoint_dir)
            checkpoint_dir.mkdir(parents=True)
    elif any(checkpoint_dir.glob("checkpoint-*")):
        LOG.warning("checkpoints in %s have no %s: discarding them", checkpoint_dir, RUN_CONFIG)
        shutil.rmtree(checkpoint_dir)
        checkpoint_dir.mkdir(parents=True)
    write_json(marker, fingerprint)
    return last_complete_checkpoint(checkpoint_dir)


# --------------------------------------------------------------------------- outputs


def split_history(log_history: list[dict]) -> dict:
    train, evaluation = [], []
    for entry in log_history:
        entry = {key: value for key, value in entry.items() if isinstance(value, (int, float, str))}
        if "loss" in entry:
            train.append(entry)
        elif any(key.startswith("eval_") for key in entry):
            evaluation.append(entry)
    summary = [e for e in log_history if "train_runtime" in e]
    return {"train": train, "eval": evaluation, "summary": summary[-1] if summary else {}}


def rewrite_adapter_config(adapter_dir: Path, hub_id: str, revision: str) -> None:
    path = adapter_dir / "adapter_config.json"
    config = read_json(path)
    config["base_model_name_or_path"] = hub_id
    if revision:
        config["revision"] = revision
    write_json(path, config)


def model_card(args, info: dict) -> str:
    """The card written with the adapter (not evaluated yet); the model_card step rewrites it with
    the measured figures after evaluation."""
    from cache_embed.report.model_card import load_card_spec, render_card

    return render_card(args.domain or "medical", info, load_card_spec(args.domain_spec))


# --------------------------------------------------------------------------- main


def trainer_arguments(args, output_dir: Path, metric: str, precision: str, device: str, **overrides):
    """The trainer's settings: evaluate and checkpoint every --eval-steps, keep the best by `metric`."""
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    settings = dict(
        output_dir=str(output_dir),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=max(args.batch_size, 64),
        learning_rate=args.lr,
        warmup_steps=args.warmup_ratio,
        lr_scheduler_type=args.scheduler,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        seed=args.seed,
        data_seed=args.seed,
        fp16=precision == "fp16",
        bf16=precision == "bf16",
        use_cpu=device == "cpu",
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        eval_strategy="steps",
        eval_steps=args.eval_steps,
        save_strategy="steps",
        save_steps=args.eval_steps,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=args.best_metric != "loss",
        logging_steps=args.logging_steps or max(1, args.eval_steps // 10),
        logging_first_step=True,
        report_to="none",
        disable_tqdm=False,
        dataloader_num_workers=0,
    )
    settings.update(overrides)
    return SentenceTransformerTrainingArguments(**settings)


def contrastive_stage(args, model, rows: list[dict], evaluator, metric: str, precision, device, callbacks) -> dict:
    """The second stage: OnlineContrastiveLoss (hard pairs only: positives farther than the closest
    negative, negatives nearer than the farthest positive) on --contrastive-steps batches of
    labelled pairs, from the first stage's best checkpoint; its own checkpoints, resumable. The
    caller keeps its result only where it beats the first stage on the checkpoint metric."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer import losses

    fields = negative_columns(args.mined_negatives) if args.mined_negatives else ["negative"]
    pairs = Dataset.from_dict(contrastive_pairs(rows, fields, args.contrastive_steps * args.batch_size, args.seed))
    output_dir = Path(args.checkpoint_dir) / CONTRASTIVE_DIR
    output_dir.mkdir(parents=True, exist_ok=True)
    resume = last_complete_checkpoint(output_dir)
    stage_args = trainer_arguments(
        args,
        output_dir,
        metric,
        precision,
        device,
        max_steps=args.contrastive_steps,
        learning_rate=args.contrastive_lr or args.lr,
        eval_steps=min(args.eval_steps, args.contrastive_steps),
        save_steps=min(args.eval_steps, args.contrastive_steps),
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=stage_args,
        train_dataset=pairs,
        loss=losses.OnlineContrastiveLoss(model, margin=args.contrastive_margin),
        evaluator=evaluator,
        callbacks=callbacks,
    )
    LOG.info(
        "contrastive stage: %d pairs (%d same question), %d steps%s",
        len(pairs),
        sum(pairs["label"]),
        args.contrastive_steps,
        f", resuming from {resume}" if resume else "",
    )
    started = time.monotonic()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    state = trainer.state
    return {
        "pairs": len(pairs),
        "same_question_pairs": sum(pairs["label"]),
        "steps": state.global_step,
        "best_checkpoint": Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None,
        "best_metric": state.best_metric,
        "seconds": round(time.monotonic() - started, 2),
        "history": split_history(state.log_history),
    }


def train(args) -> dict:
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer
    from transformers import TrainerCallback, set_seed

    started = time.monotonic()
    if args.threads:
        torch.set_num_threads(args.threads)
    hub_id, revision = resolve_base_model_id(args.base_model, args.base_model_id)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    precision = choose_precision(args.precision, device)
    train_rows, train_stats = load_triplets(
        args.train_data, args.max_examples, args.seed, args.max_drop_fraction, args.qtype_balance
    )
    val_rows, val_stats = load_triplets(args.val_data, args.max_val_examples, args.seed, args.max_drop_fraction)
    if len(train_rows) < args.batch_size:
        raise PipelineError(
            f"{args.train_data}: {len(train_rows)} usable triplets, fewer than one batch ({args.batch_size}); "
            "generate more triplets or lower --batch-size"
        )
    LOG.info("train triplets: %s; val triplets: %s", train_stats, val_stats)

    checkpoint_dir = Path(args.checkpoint_dir)
    fingerprint = run_fingerprint(args, sha256_file(args.train_data), sha256_file(args.val_data))
    resume = prepare_checkpoint_dir(checkpoint_dir, fingerprint)

    set_seed(args.seed)
    model = load_base(args.base_model, device, args.max_seq_length)
    mining_stats = None
    if args.mined_negatives:
        train_rows, mining_stats = mined_rows(args, train_rows, model, checkpoint_dir)
    model.add_adapter(lora_config(args))
    trainable, total = count_parameters(model)
    LOG.info(
        "LoRA r=%d alpha=%g on %s: %d trainable of %d parameters (%.3f%%)",
        args.lora_r,
        args.lora_alpha,
        ",".join(args.lora_target_modules),
        trainable,
        total,
        100 * trainable / total,
    )
    loss = make_loss(args, model)

    train_fields = negative_columns(args.mined_negatives)[1:] if args.mined_negatives else []
    columns = {field: [row[field] for row in train_rows] for field in (*TRIPLET_FIELDS, *train_fields)}
    train_dataset = Dataset.from_dict(columns)
    val_columns = {field: [row[field] for row in val_rows] for field in TRIPLET_FIELDS}
    val_dataset = Dataset.from_dict(val_columns)
    evaluator, metric = make_evaluator(args, val_rows, val_columns)
    training_args = trainer_arguments(args, checkpoint_dir, metric, precision, device)

    class LogToStderr(TrainerCallback):
        def on_log(self, _args, state, _control, logs=None, **_kwargs):
            LOG.info("step %d: %s", state.global_step, dumps({k: v for k, v in (logs or {}).items()}))

    trainer = SentenceTransformerTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=val_dataset,
        loss=loss,
        evaluator=evaluator,
        callbacks=[LogToStderr()],
    )
    if resume is not None:
        state = read_json(resume / "trainer_state.json")
        LOG.info("resuming from checkpoint %s (global step %d)", resume, state.get("global_step", -1))
    else:
        LOG.info("no checkpoint in %s: starting a new run", checkpoint_dir)
    base_metrics_path = checkpoint_dir / "base_metrics.json"
    if resume is not None and base_metrics_path.exists():
        base_metrics = read_json(base_metrics_path)
    else:
        base_metrics = evaluator(model)  # the adapter starts as the identity (lora_B = 0)
        write_json(base_metrics_path, base_metrics)
    LOG.info("validation before training (base model): %s", dumps(base_metrics))
    train_started = time.monotonic()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_seconds = time.monotonic() - train_started
    contrastive = None
    if args.contrastive_steps:
        first_stage_metrics = evaluator(model)
        LOG.info("validation after the first stage (best checkpoint loaded): %s", dumps(first_stage_metrics))
        first_stage_weights = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
        contrastive = contrastive_stage(args, model, train_rows, evaluator, metric, precision, device, [LogToStderr()])
        contrastive["val_metrics_before"] = first_stage_metrics
        first_score = first_stage_metrics[metric.removeprefix("eval_")]
        # The stage competes with the first stage's result on the same metric; it is kept only if better.
        contrastive["kept"] = "contrastive" if contrastive["best_metric"] > first_score else "first_stage"
        if contrastive["kept"] == "first_stage":
            model.load_state_dict(first_stage_weights, strict=False)
            LOG.warning(
                "contrastive stage: best %s %.4f is not above the first stage's %.4f: keeping the first stage",
                metric,
                contrastive["best_metric"],
                first_score,
            )
        train_seconds += contrastive["seconds"]
    final_metrics = evaluator(model)
    LOG.info("validation after training (best checkpoint loaded): %s", dumps(final_metrics))

    state = trainer.state
    history = split_history(state.log_history)
    examples_per_second = result.metrics.get("train_samples_per_second")
    info = {
        "base_model": {"name": hub_id, "revision": revision, "local_path": shareable_path(args.base_model)},
        "hyperparameters": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "scale": args.scale,
            "temperature": 1.0 / args.scale,
            "warmup_ratio": args.warmup_ratio,
            "scheduler": args.scheduler,
            "weight_decay": args.weight_decay,
            "max_grad_norm": args.max_grad_norm,
            "max_examples": args.max_examples,
            "max_val_examples": args.max_val_examples,
            **({"qtype_balance": args.qtype_balance} if args.qtype_balance < 1 else {}),
            "max_seq_length": args.max_seq_length,
            "seed": args.seed,
            "loss": args.loss,
            "lora_r": args.lora_r,
            "lora_alpha": args.lora_alpha,
            "lora_dropout": args.lora_dropout,
            "lora_target_modules": list(args.lora_target_modules),
            "eval_steps": args.eval_steps,
            "best_metric": args.best_metric,
            "hardness_mode": args.hardness_mode,
            "hardness_strength": args.hardness_strength if args.hardness_mode != "none" else None,
            "directions": list(args.directions),
            "contrastive_steps": args.contrastive_steps,
            **(
                {"contrastive_margin": args.contrastive_margin, "contrastive_lr": args.contrastive_lr or args.lr}
                if args.contrastive_steps
                else {}
            ),
            "mined_negatives": args.mined_negatives,
            **(
                {
                    "mine_range_min": args.mine_range_min,
                    "mine_range_max": args.mine_range_max,
                    "mine_margin": args.mine_margin,
                }
                if args.mined_negatives
                else {}
            ),
            "batch_sampler": "no_duplicates",
            **({"mini_batch_size": args.mini_batch_size} if args.loss == "cached_mnrl" else {}),
        },
        "loss": args.loss,
        "guide_model": hub_id if args.loss == "gist" else None,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "train": train_stats,
        "val": val_stats,
        "mined_negatives": mining_stats,
        "train_columns": train_dataset.column_names,
        "contrastive_stage": contrastive,
        "examples": len(train_rows) * args.epochs,
        "steps": state.global_step,
        "max_steps": state.max_steps,
        "epochs_done": round(state.epoch or 0.0, 4),
        "resumed_from": str(resume) if resume else None,
        "best_checkpoint": Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None,
        "best_metric": state.best_metric,
        "metric_for_best_model": metric,
        "val_metrics_base": base_metrics,
        "val_metrics_final": final_metrics,
        "device": device,
        "precision": precision,
        "durations_s": {
            "total": round(time.monotonic() - started, 2),
            "train": round(train_seconds, 2),
            "trainer_runtime": result.metrics.get("train_runtime"),
        },
        "train_examples_per_second": examples_per_second,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": library_versions(TRAINING_LIBRARIES),
    }
    history.update(base=base_metrics, final=final_metrics, metric_for_best_model=metric)
    if contrastive is not None:
        history["contrastive"] = contrastive.pop("history")
    return {"model": model, "info": info, "history": history, "checkpoint_dir": checkpoint_dir}


def save_adapter(model, output: Path, info: dict, args) -> None:
    """Write the adapter folder next to the destination and move it into place when complete."""
    partial = output.with_name(f".{output.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    model.save(str(partial))
    if not (partial / "adapter_config.json").exists() or (partial / "model.safetensors").exists():
        raise PipelineError(f"{partial}: saving did not produce a PEFT adapter; check the peft/transformers versions")
    rewrite_adapter_config(partial, info["base_model"]["name"], info["base_model"]["revision"])
    info["adapter_bytes"] = (partial / "adapter_model.safetensors").stat().st_size
    (partial / "README.md").write_text(model_card(args, info), encoding="utf-8")
    write_json(partial / "training_info.json", info)
    if output.exists():
        shutil.rmtree(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    make_readable(partial)
    os.replace(partial, output)


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
