"""The trainer's parts: the base model (its hub id, device precision, the local folder), the LoRA
config, the loss, the validation evaluator, the training arguments and the logging callback."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cache_embed.common.cli import PipelineError
from cache_embed.common.files import dumps, read_json
from cache_embed.train.checkpoint_evaluator import BEST_METRICS, make_cache_evaluator

LOG = logging.getLogger("train_adapter")
LOSSES = ("mnrl", "cached_mnrl", "gist")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
HARDNESS_MODES = ("none", "in_batch_negatives", "hard_negatives", "all_negatives")
DIRECTIONS = ("query_to_doc", "doc_to_query", "query_to_query", "doc_to_doc")
EVALUATOR_NAME = "val"
CACHE_EVALUATOR_NAME = "val_cache"


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


def log_callback():
    """A trainer callback that logs each of the trainer's log entries (loss, learning rate, evaluation)."""
    from transformers import TrainerCallback

    class LogToStderr(TrainerCallback):
        def on_log(self, _args, state, _control, logs=None, **_kwargs):
            LOG.info("step %d: %s", state.global_step, dumps({k: v for k, v in (logs or {}).items()}))

    return LogToStderr()
