"""One training run, from triplets to the trained model and its record: the data, the checkpoint
folder (resumed where its fingerprint matches), mining with the frozen base model, the LoRA
adapter, the first stage (MNRL or GIST) and the optional contrastive second stage, the validation
figures before and after, and what training_info.json and the history file hold."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from cache_embed.common.cli import PipelineError, library_versions
from cache_embed.common.files import dumps, read_json, sha256_file, write_json
from cache_embed.common.paths import shareable_path
from cache_embed.data.triplets import TRIPLET_FIELDS
from cache_embed.train.adapter_output import hyperparameters
from cache_embed.train.checkpoints import prepare_checkpoint_dir, run_fingerprint, split_history
from cache_embed.train.contrastive_stage import second_stage
from cache_embed.train.negative_mining import negative_columns
from cache_embed.train.trainer_setup import (
    choose_precision,
    count_parameters,
    load_base,
    log_callback,
    lora_config,
    make_evaluator,
    make_loss,
    resolve_base_model_id,
    trainer_arguments,
)
from cache_embed.train.training_data import load_triplets, mined_rows

LOG = logging.getLogger("train_adapter")
TRAINING_LIBRARIES = ("torch", "transformers", "peft", "sentence-transformers", "datasets", "accelerate")


def train(args) -> dict:
    """Train as the parsed step arguments say; returns the model (best checkpoint loaded), its
    training_info record, the history and the checkpoint folder."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer
    from transformers import set_seed

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

    trainer = SentenceTransformerTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=val_dataset,
        loss=loss,
        evaluator=evaluator,
        callbacks=[log_callback()],
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
        contrastive = second_stage(args, model, train_rows, evaluator, metric, precision, device, [log_callback()])
        train_seconds += contrastive["seconds"]
    final_metrics = evaluator(model)
    LOG.info("validation after training (best checkpoint loaded): %s", dumps(final_metrics))

    state = trainer.state
    history = split_history(state.log_history)
    examples_per_second = result.metrics.get("train_samples_per_second")
    info = {
        "base_model": {"name": hub_id, "revision": revision, "local_path": shareable_path(args.base_model)},
        "hyperparameters": hyperparameters(args),
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
