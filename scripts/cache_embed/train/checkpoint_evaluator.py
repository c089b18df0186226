"""The cache figures as a training evaluator: checkpoints are selected on what the deploy decision
measures, not on triplet accuracy alone.

`CacheEvaluator` caches the distinct anchors of validation triplets (the val select half: the
deploy threshold is calibrated on the other half), looks every paraphrase and hard negative up
against all of them (cache_embed.evaluate.simulation, "the same question" from cache_embed.data.equivalence), and
returns, prefixed with its name:

- `p_chr_auc`: area under precision against cache hit ratio over every threshold;
- `rank1_correct`: the share of repeats whose nearest entry is a correct answer;
- with a wrong-share budget: `repeat_hit_rate_at_bound`, the repeat hit rate at the lowest
  threshold whose 95% upper bound on the wrong share is within the budget (0 when no threshold
  meets it), `threshold_at_bound` and `bound_met`.
"""

from __future__ import annotations

import logging

import numpy as np

from cache_embed.data.equivalence import EquivalenceIndex
from cache_embed.evaluate.inputs import attach_groups
from cache_embed.evaluate.simulation import Sweep, build_plan, simulate
from cache_embed.evaluate.threshold import choose_threshold

LOG = logging.getLogger("cache_evaluator")

# train --best-metric name -> the evaluator's metric it selects on
BEST_METRICS = {"cache_p_chr_auc": "p_chr_auc", "cache_repeat_hit_rate": "repeat_hit_rate_at_bound"}


def cache_figures(plan, embeddings_of, repeat_share: float, max_wrong_share: float | None = None) -> dict:
    """The evaluator's figures for one model, given `embeddings_of(texts)` (L2-normalised rows);
    the figures at the bound only with a budget."""
    lookups = simulate(plan, embeddings_of)
    sweep = Sweep(lookups, repeat_share, groups=plan.lookup_groups)
    figures = {
        "p_chr_auc": sweep.p_chr_auc(),
        "rank1_correct": float(np.mean(lookups.repeat_correct)) if lookups.repeat_correct.size else 0.0,
    }
    if max_wrong_share is not None:
        chosen = choose_threshold(sweep, max_wrong_share)
        met = bool(chosen["bound_met"])
        figures.update(
            {
                "repeat_hit_rate_at_bound": float(chosen["repeat_hit_rate"]) if met else 0.0,
                "threshold_at_bound": float(chosen["threshold"]) if met else 1.0,
                "bound_met": float(met),
            }
        )
    return figures


def _evaluator_base():
    # Imported late: the library stays importable without sentence-transformers (report, tests).
    from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

    return SentenceEvaluator


def make_cache_evaluator(
    triplets: list[dict],
    records: list[dict] | None,
    equivalence_mode: str,
    repeat_share: float,
    max_wrong_share: float | None,
    primary: str = "p_chr_auc",
    name: str = "val_cache",
    batch_size: int = 64,
):
    """A sentence-transformers evaluator of the cache figures on `triplets` (see the module doc)."""
    index = EquivalenceIndex(records, equivalence_mode) if records else None
    # Focus groups are the independent units of the bound on the wrong share, as at evaluation.
    plan = build_plan(attach_groups(triplets, records)[0], index)
    texts = sorted(set(plan.entry_text) | set(plan.repeat_text) | set(plan.novel_text))
    position = {text: row for row, text in enumerate(texts)}

    class CacheEvaluator(_evaluator_base()):
        def __init__(self):
            super().__init__()
            self.name = name
            self.primary_metric = primary
            self.greater_is_better = True

        def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict:
            embeddings = np.asarray(
                model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True),
                dtype=np.float32,
            )
            figures = cache_figures(
                plan,
                lambda batch: embeddings[[position[text] for text in batch]],
                repeat_share,
                max_wrong_share,
            )
            LOG.info("cache figures on %d entries (step %d): %s", len(plan.entry_text), steps, figures)
            metrics = self.prefix_name_to_metrics(figures, self.name)
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
            return metrics

    return CacheEvaluator()
