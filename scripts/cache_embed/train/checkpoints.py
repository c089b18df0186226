"""Resuming a killed run: the settings fingerprint a checkpoint folder is kept under, the last
complete checkpoint in it, and the trainer's log history split into training and evaluation."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from cache_embed.common.files import dumps, read_json, sha256_file, write_json

LOG = logging.getLogger("train_adapter")
RUN_CONFIG = "run_config.json"
# The settings (argparse names) that make a checkpoint resumable by a run.
FINGERPRINT_KEYS = (
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


def run_fingerprint(args, train_sha: str, val_sha: str) -> dict:
    """Everything that makes a checkpoint resumable by this run."""
    config = {key: getattr(args, key) for key in FINGERPRINT_KEYS}
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
    """The checkpoint to resume from: the folder's checkpoints are kept only when its recorded
    fingerprint is this run's (others are discarded, logged); the fingerprint is written for the next."""
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


def split_history(log_history: list[dict]) -> dict:
    """The trainer's log history as training entries (with a loss), evaluation entries and the
    run's summary, numbers and texts only."""
    train, evaluation = [], []
    for entry in log_history:
        entry = {key: value for key, value in entry.items() if isinstance(value, (int, float, str))}
        if "loss" in entry:
            train.append(entry)
        elif any(key.startswith("eval_") for key in entry):
            evaluation.append(entry)
    summary = [e for e in log_history if "train_runtime" in e]
    return {"train": train, "eval": evaluation, "summary": summary[-1] if summary else {}}
