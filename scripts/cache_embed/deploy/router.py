"""The router export: which threshold goes into vLLM Semantic Router's config, and the fragment.

`deploy_choice` reads metrics.json's deploy threshold at the stated cache size and refuses, with
the measured figures and the options, when validation found no threshold that keeps the error
budget there; `render_fragment` writes the router's config keys with a comment that says for which
cache size the threshold holds and how it read on test.
"""

from __future__ import annotations

from cache_embed.common.cli import PipelineError
from cache_embed.common.numbers import fmt, pct
from cache_embed.evaluate.cache_sizes import find_size

FRAGMENT_NAME = "semantic-router.yaml"
# The router config form followed: the canonical v0.3 schema of vLLM Semantic Router, as in its
# reference config/config.yaml (global.stores.response_cache, global.model_catalog.embeddings.semantic,
# per-decision `response_cache` plugin). Looked up in the repository, not checked against a router.
ROUTER_CONFIG = {
    "project": "vllm-project/semantic-router",
    "config_version": "v0.3",
    "reference": "config/config.yaml at commit 006629633a0330574286a28e53e1d88eca812deb",
    "keys": [
        "global.model_catalog.embeddings.semantic.bert_model_path",
        "global.stores.response_cache.{enabled,backend_type,embedding_model,milvus}",
        "routing.decisions[].plugins[type=response_cache].configuration.semantic.similarity_threshold",
    ],
    "confirmed_against_running_router": False,
}


def _interval(entry: dict | None) -> str:
    entry = entry or {}
    low, high = entry.get("low"), entry.get("high")
    return "" if low is None or high is None else f" (95% CI {pct(low)} to {pct(high)})"


def refusal_message(path: str, size: dict, budget: float) -> str:
    """Why nothing is exported, with the measured figures and what the user can do instead."""
    adapter, base = size.get("adapter") or {}, size.get("base") or {}
    lines = [
        f"{path}: no adapter threshold keeps the {pct(budget)} wrong-share budget on validation at"
        f" {size['label']} cached questions, so nothing is exported (deploy.cache_size)."
    ]
    if adapter.get("evaluated_at") is not None:
        lines.append(
            f"  Measured: the closest threshold, {fmt(adapter['evaluated_at'], 4)}, has a 95% upper bound of"
            f" {pct(adapter['val']['wrong_share_upper'])} on validation; on test it serves"
            f" {pct(adapter['test']['wrong_share'])}{_interval(adapter['test'].get('wrong_share_cp'))} wrong"
            f" answers and {pct(adapter['test']['repeat_hit_rate'])} of repeats."
        )
    lines.append("  Options:")
    lines.append("  - a larger budget: evaluate.max_wrong_share (reruns the evaluation);")
    lines.append("  - a smaller cache: deploy.cache_size, one of the other evaluated sizes (evaluate.cache_sizes);")
    if base.get("threshold") is not None:
        lines.append(
            f"  - the base model at its own threshold, {fmt(base['threshold'], 4)}: it keeps the bound on validation"
            f" and answers {pct(base['test']['repeat_hit_rate'])} of repeats on test;"
        )
    else:
        lines.append("  - the base model: it keeps no threshold at this size either;")
    lines.append("  - deploy.allow_over_budget: true exports the closest threshold anyway, saying so in the files.")
    return "\n".join(lines)


def deploy_choice(metrics: dict, path: str, cache_size, allow_over_budget: bool) -> dict:
    """{threshold, size block, over_budget, figures} for the router, or a PipelineError that says why not."""
    rec = metrics.get("recommended_threshold") or {}
    if not isinstance(rec.get("sizes"), list) or not rec["sizes"]:
        raise PipelineError(f"{path}: no recommended_threshold.sizes; rerun evaluate_adapter")
    size = find_size(rec["sizes"], cache_size)
    adapter = size.get("adapter") or {}
    over_budget = adapter.get("threshold") is None
    if over_budget and not allow_over_budget:
        raise PipelineError(refusal_message(path, size, rec["max_wrong_share"]))
    threshold = adapter.get("threshold") if not over_budget else adapter.get("evaluated_at")
    if threshold is None:
        raise PipelineError(
            f"{path}: the adapter has no threshold at {size['label']} questions; rerun evaluate_adapter"
        )
    test = adapter["test"]
    return {
        "threshold": float(threshold),
        "cache_size": size["cache_size"],
        "size_label": size["label"],
        "max_wrong_share": rec["max_wrong_share"],
        "over_budget": over_budget,
        "statement": over_budget_statement(size, rec["max_wrong_share"]) if over_budget else None,
        "measured": {
            "source": f"recommended_threshold.sizes[cache_size={size['cache_size']}].adapter",
            "val_wrong_share_upper": adapter["val"]["wrong_share_upper"],
            "test_wrong_share": test["wrong_share"],
            "test_wrong_share_interval": test.get("wrong_share_cp"),
            "test_reading": test.get("reading"),
            "test_repeat_hit_rate": test["repeat_hit_rate"],
        },
    }


def over_budget_statement(size: dict, budget: float) -> str:
    adapter = size["adapter"]
    return (
        f"OVER BUDGET: no threshold keeps the {pct(budget)} wrong-share budget on validation at {size['label']}"
        f" cached questions; exported anyway (deploy.allow_over_budget) at the closest one,"
        f" {fmt(adapter['evaluated_at'], 4)}, whose 95% upper bound on validation is"
        f" {pct(adapter['val']['wrong_share_upper'])}."
    )


def render_fragment(*, domain: str, category: str, model_path: str, choice: dict, model: dict, hnsw: dict) -> str:
    decision = f"{category.replace(' ', '_')}_cache"
    threshold, measured = choice["threshold"], choice["measured"]
    budget = pct(choice["max_wrong_share"])
    held = (
        f"# {choice['statement']}\n"
        if choice["over_budget"]
        else f"# It keeps the {budget} wrong-share budget (95% upper bound) on validation at this size.\n"
    )
    return f"""# vLLM Semantic Router: semantic cache for the "{category}" category ({domain} domain).
# Written by export_deploy.py. Form followed: the router's canonical config schema {ROUTER_CONFIG["config_version"]}
# ({ROUTER_CONFIG["project"]}, {ROUTER_CONFIG["reference"]});
# the keys were read from that reference config, not checked against a running router.
# Merge these keys into your config.yaml; put the plugin into your existing decision for the category.
#
# Embedding model: {model_path}
# ({model["architecture"]}, saved by sentence-transformers {model.get("saved_by")}, {model["pooling"]} pooling,
# {"L2-normalised" if model["normalize"] else "NOT normalised"}, {model["dimension"]} dimensions, max {model["max_seq_length"]} tokens).
# similarity_threshold {threshold:.4f} (written in full below) is this model's deploy threshold for a cache of
# {choice["size_label"]} questions, chosen on validation ({measured["source"]}).
{held}# On the held-out test cache of that size: wrong share among served answers {pct(measured["test_wrong_share"])}{_interval(measured["test_wrong_share_interval"])}
# ({measured["test_reading"]}), repeats answered {pct(measured["test_repeat_hit_rate"])}. A larger cache serves more
# wrong answers at one threshold: re-evaluate at the size you run (evaluate.cache_sizes, deploy.cache_size).
# The base model's threshold does not carry over: training moves the similarity scale.
global:
  model_catalog:
    embeddings:
      semantic:
        bert_model_path: {model_path}
        use_cpu: true
  stores:
    response_cache:
      enabled: true
      backend_type: milvus
      embedding_model: bert
      milvus:
        collection:
          vector_field:
            dimension: {model["dimension"]}
            metric_type: COSINE
          index:
            type: HNSW
            params:
              M: {hnsw["M"]}
              efConstruction: {hnsw["efConstruction"]}
        search:
          params:
            ef: {hnsw["ef"]}
routing:
  decisions:
    - name: {decision}
      rules:
        operator: AND
        conditions:
          - type: domain
            name: {category}
      plugins:
        - type: response_cache
          configuration:
            enabled: true
            semantic:
              similarity_threshold: {threshold!r}
"""
