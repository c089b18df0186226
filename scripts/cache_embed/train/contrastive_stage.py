"""The optional second stage (--contrastive-steps): OnlineContrastiveLoss on labelled question
pairs from the first stage's best checkpoint, kept only where it beats the first stage on the
checkpoint metric."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from cache_embed.common.files import dumps
from cache_embed.train.checkpoints import last_complete_checkpoint, split_history
from cache_embed.train.negative_mining import negative_columns
from cache_embed.train.trainer_setup import trainer_arguments
from cache_embed.train.training_data import contrastive_pairs

LOG = logging.getLogger("train_adapter")
CONTRASTIVE_DIR = "contrastive"


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


def second_stage(args, model, rows: list[dict], evaluator, metric: str, precision, device, callbacks) -> dict:
    """Run the stage on `model` (the first stage's best checkpoint loaded) and keep the better of
    the two by `metric`: where the stage does not beat the first stage, the first stage's adapter
    weights are restored (logged). Its record says which was kept and what the first stage scored."""
    first_stage_metrics = evaluator(model)
    LOG.info("validation after the first stage (best checkpoint loaded): %s", dumps(first_stage_metrics))
    first_stage_weights = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
    contrastive = contrastive_stage(args, model, rows, evaluator, metric, precision, device, callbacks)
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
    return contrastive
