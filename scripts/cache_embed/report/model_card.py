"""The adapter's model card (README.md): from training_info.json, the domain's spec (`card:` block:
data, source, licence, citation, intended use, limitations) and, once evaluation has run,
metrics.json (the deploy threshold and what it gives on test, base against adapter).

Without metrics the card says the adapter has not been evaluated yet; it never states a figure
the run did not measure.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from cache_embed.common.numbers import fmt, interval, pct

UNKNOWN_CARD = {
    "data": "not described: add a `card:` block (data, source, license, license_text) to the domain spec",
    "source": "unknown",
    "license": "other",
    "license_text": "unknown",
}


def load_card_spec(path) -> dict:
    """The `card:` block of a domain spec (YAML); placeholders saying what is missing without one."""
    if not path:
        return dict(UNKNOWN_CARD)
    spec = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    card = spec.get("card") if isinstance(spec, dict) else None
    return {**UNKNOWN_CARD, **card} if isinstance(card, dict) else dict(UNKNOWN_CARD)


def _evaluation_section(metrics: dict | None) -> str:
    if not metrics:
        return (
            "Not evaluated yet. The workflow's `model_card` step rewrites this card with the measured"
            " figures (`results/<domain>/model_card.md`) once `evaluate_adapter` has run.\n"
        )
    rec = metrics["recommended_threshold"]
    test = metrics["test"]
    lines = [block["verdict"] for block in reversed(rec["sizes"])] + [""]
    lines += [
        "| cache size | model | deploy threshold | test wrong share [95% CI] | reading |"
        " test repeats answered [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for size in reversed(rec["sizes"]):
        for name in ("adapter", "base"):
            entry = size.get(name)
            if not entry:
                lines.append(f"| {size['label']} | {name} | n/a | | | |")
                continue
            t = entry["test"]
            threshold = fmt(entry["threshold"], 4) if entry["threshold"] is not None else "none keeps the bound"
            lines.append(
                f"| {size['label']} | {name} | {threshold}"
                f" | {pct(t['wrong_share'])} {interval(t['wrong_share_cp']['low'], t['wrong_share_cp']['high'], pct)}"
                f" | {t['reading'] or 'n/a'}"
                f" | {pct(t['repeat_hit_rate'])}"
                f" {interval(t['repeat_hit_rate_ci']['low'], t['repeat_hit_rate_ci']['high'], pct)} |"
            )
    largest = rec["sizes"][-1]
    lines += [
        "",
        f"**Deploy threshold:** the one for the cache size you will run (cosine similarity, with the adapter"
        f" loaded); for {largest['label']} cached questions it is"
        f" `{fmt((largest.get('adapter') or {}).get('threshold'), 4)}`. A larger cache serves more wrong answers at"
        " one threshold, and a threshold tuned for the base model does not carry over to the adapter.",
        "",
        f"How it was chosen (max_wrong_share {pct(rec['max_wrong_share'])}): {rec['rule']}; on the calibration half of the"
        f" validation split ({fmt(rec['calibration_triplets'])} triplets) padded to each size, for a traffic mix"
        f" of {pct(rec['repeat_share'])} repeats (reworded questions already in the cache) and the rest novel"
        f" questions. Measured on the held-out test split padded to the same size, with"
        f" {fmt(largest['test_cache']['repeat_lookups'])} repeats and {fmt(largest['test_cache']['novel_lookups'])}"
        f" novel questions; a served answer counts as correct when the cached question is the same question"
        f" ({rec.get('equivalence')} equivalence). Reading of the test wrong share's 95% interval (Clopper-Pearson"
        " over focus groups): held (within the budget), consistent (contains it), missed (above it)."
        f" {rec['novel_traffic']}",
        "",
        "| test figure | base | adapter |",
        "|---|---|---|",
    ]
    for key, label in (
        ("roc_auc", "ROC-AUC (pairs)"),
        ("triplet_accuracy", "triplet accuracy"),
        ("margin", "margin (mean positive - mean negative cosine)"),
    ):
        lines.append(f"| {label} | {fmt(test['base'].get(key))} | {fmt(test['adapter'].get(key))} |")
    lines.append(
        f"| P-CHR AUC (precision against cache hit ratio) | {fmt(test['base']['cache']['p_chr']['auc'])}"
        f" | {fmt(test['adapter']['cache']['p_chr']['auc'])} |"
    )
    lines.append(f"| test triplets | {fmt(metrics['counts']['triplets'])} | |")
    return "\n".join(lines) + "\n"


def _recipe_extras(info: dict) -> str:
    """Sentences on the mined negatives and the contrastive stage, where the run had them."""
    hp, parts = info["hyperparameters"], []
    mined = info.get("mined_negatives")
    if mined:
        parts.append(
            f"Each triplet also carried {hp['mined_negatives']} hard negatives mined from the train split's"
            f" questions by the base model (ranks {hp['mine_range_min']}-{hp['mine_range_max']}; candidates"
            f" asking the same question skipped: {fmt(mined['same_question_skipped'])})."
        )
    if hp.get("qtype_balance") is not None:
        parts.append(
            f"The {fmt(hp['max_examples'])} training triplets were sampled with question types rebalanced"
            f" (each type's share proportional to its triplet count to the power {hp['qtype_balance']:g})."
        )
    stage = info.get("contrastive_stage")
    if stage:
        parts.append(
            f"A second stage of OnlineContrastiveLoss (margin {hp['contrastive_margin']:g}) ran"
            f" {stage['steps']} steps on {fmt(stage['pairs'])} labelled pairs from the triplets; its"
            f" best checkpoint: {stage['best_checkpoint']} ({fmt(stage['best_metric'])}); the adapter is the"
            f" {'second' if stage.get('kept') == 'contrastive' else 'first'} stage's."
        )
    return "\n".join(parts) + ("\n" if parts else "")


def render_card(domain: str, info: dict, card: dict, metrics: dict | None = None) -> str:
    hp = info["hyperparameters"]
    hub_id = info["base_model"]["name"]
    revision = info["base_model"].get("revision") or "main"
    rows = "\n".join(f"| `{key}` | `{value}` |" for key, value in sorted(hp.items()))
    limitations = "\n".join(f"- {item}" for item in card.get("limitations") or [])
    citation = f"\n\nCite: {card['citation']}." if card.get("citation") else ""
    intended = card.get("intended_use") or (
        f"Embedding {domain} questions for a semantic cache: a new question reuses a stored answer when its"
        " cosine similarity to a cached question reaches the deploy threshold."
    )
    val = info.get("val") or {}
    return f"""---
library_name: sentence-transformers
base_model: {hub_id}
pipeline_tag: sentence-similarity
license: {card.get("license") or "other"}
tags:
- sentence-transformers
- peft
- lora
- semantic-cache
---

# LoRA adapter for `{hub_id}`: semantic cache for {domain} questions

A LoRA adapter (PEFT, {info["trainable_parameters"]:,} trainable parameters) for
[`{hub_id}`](https://huggingface.co/{hub_id}) (revision `{revision}`), trained so that a
rephrased question lands close to the original (a cache hit) while a related but different
question lands further away (a miss).

## Intended use

{intended.strip()}

## Loading

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{hub_id}")
model.load_adapter("path/to/this/adapter")  # or a hub repo holding this folder
embeddings = model.encode(["a question"], normalize_embeddings=True)
```

Or with PEFT directly, wrapping the inner transformer:

```python
from peft import PeftModel

model = SentenceTransformer("{hub_id}")
model[0].model = PeftModel.from_pretrained(model[0].model, "path/to/this/adapter")
```

## Evaluation

{_evaluation_section(metrics)}
## Training data

{str(card["data"]).strip()} Source: {card["source"]}. Licence: {card["license_text"]}.{citation}

Triplets (anchor question, paraphrase, hard negative): {fmt(info["train"]["used"])} training triplets
({fmt(info["train"]["records"])} in the file); checkpoints selected on {fmt(val.get("used"))} validation
triplets (the select half of the validation split). Train, validation and test share no focus entity.

## Training

Loss: `{info["loss"]}` (scale {hp["scale"]:g}) over (anchor, positive, negative). {info["steps"]} optimizer
steps, {info["epochs_done"]:g} epoch(s), {info["precision"]} on {info["device"]}; the checkpoint kept is the
best by `{info["metric_for_best_model"]}` on the validation select half ({fmt(info["best_metric"])}).
{_recipe_extras(info)}
| hyperparameter | value |
|---|---|
{rows}

## Limitations

{limitations or "- Evaluated only on the held-out split of the training data source."}
- Paraphrases and hard negatives are generated; their errors become training signal.
- The deploy threshold holds for traffic like the evaluation's; check it on your own cache logs
  (`evaluate.external`) before relying on it.
"""
