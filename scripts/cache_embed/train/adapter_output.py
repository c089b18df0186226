"""The adapter folder a training run writes: the PEFT adapter naming its hub base, the model card,
training_info.json (with the hyperparameters as recorded), moved into place only when complete."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from cache_embed.common.cli import PipelineError
from cache_embed.common.files import make_readable, read_json, write_json


def hyperparameters(args) -> dict:
    """The settings of the run as training_info.json records them; a setting of an option that is
    off (qtype balance at 1, no second stage, no mining, not cached_mnrl) is left out."""
    return {
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
    }


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
