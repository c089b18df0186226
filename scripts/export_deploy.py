"""export_deploy: the merged model and a vLLM Semantic Router config fragment, ready for a router.

Writes `models/{domain}/deploy/`:
- `model/`: the merged model as a plain sentence-transformers / Hugging Face folder (safetensors
  weights, tokenizer, `modules.json` with its pooling and normalisation modules), checked by loading
  it with plain sentence-transformers;
- `semantic-router.yaml`: a fragment of the router's config that points its semantic cache's
  embedding model at that folder and sets this domain's category threshold to the measured deploy
  threshold (metrics.json `recommended_threshold.adapter.threshold`), with a comment citing the
  measured wrong share and hit rate;
- `deploy_info.json`: pooling, normalisation, dimension, file digests, the threshold and its source.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from cache_embed.common.cli import PipelineError, run_main, setup_logging
from cache_embed.common.files import atomic_output, make_readable, read_json, write_json

LOG = logging.getLogger("export_deploy")
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
MODEL_FILES_REQUIRED = ("model.safetensors", "config.json", "modules.json", "tokenizer.json")
CHECK_SENTENCES = ["What are the symptoms of Glaucoma ?", "how do you treat high blood pressure"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--merged", required=True, help="merged model folder (merge_adapter.py output)")
    parser.add_argument("--eval-metrics", required=True, help="metrics.json of evaluate_adapter")
    parser.add_argument("--output", required=True, help="deploy folder (e.g. models/medical/deploy)")
    parser.add_argument("--domain", required=True)
    parser.add_argument("--router-category", required=True, help="the router's domain/category for this domain")
    parser.add_argument(
        "--model-path-in-router",
        default="",
        help="the model folder's path as the router sees it (default: <output>/model)",
    )
    parser.add_argument("--hnsw-m", type=int, required=True)
    parser.add_argument("--hnsw-ef-construction", type=int, required=True)
    parser.add_argument("--hnsw-ef", type=int, required=True)
    return parser.parse_args(argv)


def _value(entry):
    """A figure that may be a plain number or a block with a point estimate and an interval."""
    if isinstance(entry, dict):
        for key in ("value", "estimate", "point", "share", "rate"):
            if isinstance(entry.get(key), (int, float)):
                return float(entry[key]), entry
        return None, entry
    return (float(entry), None) if isinstance(entry, (int, float)) else (None, None)


def measured_figures(metrics: dict, model: str = "adapter") -> dict:
    """The test figures at the model's deploy threshold: wrong share among served hits and repeat hit
    rate. Reads the cache-style figures of the deploy threshold where metrics.json has them
    (`recommended_threshold.<model>` [`.test`] `wrong_share` / `repeat_hit_rate`), else the cache
    simulation at that threshold (`recommended_threshold.cache.<model>`: 1 - hit_precision, hit_rate)."""
    rec = metrics.get("recommended_threshold") or {}
    block = rec.get(model) or {}
    for scope in (block.get("test"), block):
        if isinstance(scope, dict) and "wrong_share" in scope:
            wrong, wrong_block = _value(scope["wrong_share"])
            hit, hit_block = _value(scope.get("repeat_hit_rate", scope.get("hit_rate")))
            return {
                "wrong_share": wrong,
                "repeat_hit_rate": hit,
                "wrong_share_block": wrong_block,
                "repeat_hit_rate_block": hit_block,
                "source": f"recommended_threshold.{model}{'.test' if scope is block.get('test') else ''}",
            }
    cache = (rec.get("cache") or {}).get(model)
    if isinstance(cache, dict) and cache.get("hit_precision") is not None:
        return {
            "wrong_share": 1.0 - float(cache["hit_precision"]),
            "repeat_hit_rate": cache.get("hit_rate"),
            "source": f"recommended_threshold.cache.{model} (1 - hit_precision, hit_rate)",
        }
    return {"wrong_share": None, "repeat_hit_rate": None, "source": None}


def deploy_threshold(metrics: dict, path: str) -> float:
    try:
        threshold = metrics["recommended_threshold"]["adapter"]["threshold"]
    except (KeyError, TypeError):
        threshold = None
    if not isinstance(threshold, (int, float)):
        raise PipelineError(
            f"{path}: recommended_threshold.adapter.threshold is missing; "
            "rerun evaluate_adapter (no threshold reached the target on validation?)"
        )
    return float(threshold)


def describe_model(folder: Path) -> dict:
    """Pooling, normalisation and sizes as the sentence-transformers modules state them."""
    missing = [name for name in MODEL_FILES_REQUIRED if not (folder / name).is_file()]
    if missing:
        raise PipelineError(
            f"{folder}: not a plain sentence-transformers folder (missing {', '.join(missing)}); rerun merge_adapter"
        )
    if (folder / "adapter_config.json").exists():
        raise PipelineError(f"{folder}: holds a PEFT adapter, not merged weights; rerun merge_adapter")
    modules = read_json(folder / "modules.json")
    types = [module["type"].rsplit(".", 1)[-1] for module in modules]
    mode, dimension = "unknown", None
    for module in modules:
        if module["type"].endswith("Pooling"):
            config = read_json(folder / module["path"] / "config.json")
            # sentence-transformers 6 writes pooling_mode/embedding_dimension; earlier versions one
            # boolean per mode (pooling_mode_mean_tokens, ...) and word_embedding_dimension.
            if isinstance(config.get("pooling_mode"), str):
                mode = config["pooling_mode"]
            else:
                modes = [
                    key.removeprefix("pooling_mode_").removesuffix("_tokens").removesuffix("_token")
                    for key, value in config.items()
                    if key.startswith("pooling_mode_") and value is True
                ]
                mode = ", ".join(modes) or "unknown"
            dimension = config.get("embedding_dimension", config.get("word_embedding_dimension"))
    bert_config = folder / "sentence_bert_config.json"
    max_seq_length = read_json(bert_config).get("max_seq_length") if bert_config.exists() else None
    return {
        "modules": types,
        "pooling": mode,
        "normalize": "Normalize" in types,
        "dimension": dimension,
        "max_seq_length": max_seq_length,
        "architecture": (read_json(folder / "config.json").get("architectures") or [None])[0],
    }


def check_loads(folder: Path) -> dict:
    """Load with plain sentence-transformers (no peft), encode, and check the vectors are unit length
    when the model states normalisation."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    vectors = model.encode(CHECK_SENTENCES, convert_to_numpy=True, show_progress_bar=False)
    norms = np.linalg.norm(vectors, axis=1)
    return {
        "dimension": int(vectors.shape[1]),
        "max_norm_error": float(np.max(np.abs(norms - 1.0))),
        "max_seq_length": model.max_seq_length,
        "sentence_transformers": _version("sentence-transformers"),
    }


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def sha256_files(folder: Path) -> dict:
    import hashlib

    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        out[str(path.relative_to(folder))] = digest.hexdigest()
    return out


def _fmt_share(value) -> str:
    return "not measured" if value is None else f"{value * 100:.1f}%"


def render_fragment(
    *, domain: str, category: str, model_path: str, threshold: float, figures: dict, model: dict, hnsw: dict
) -> str:
    decision = f"{category.replace(' ', '_')}_cache"
    wrong, hit = figures.get("wrong_share"), figures.get("repeat_hit_rate")
    source = figures.get("source") or "no test figures in metrics.json"
    return f"""# vLLM Semantic Router: semantic cache for the "{category}" category ({domain} domain).
# Written by export_deploy.py. Form followed: the router's canonical config schema {ROUTER_CONFIG["config_version"]}
# ({ROUTER_CONFIG["project"]}, {ROUTER_CONFIG["reference"]});
# the keys were read from that reference config, not checked against a running router.
# Merge these keys into your config.yaml; put the plugin into your existing decision for the category.
#
# Embedding model: {model_path}
# ({model["architecture"]}, saved by sentence-transformers {model.get("saved_by")}, {model["pooling"]} pooling,
# {"L2-normalised" if model["normalize"] else "NOT normalised"}, {model["dimension"]} dimensions, max {model["max_seq_length"]} tokens).
# similarity_threshold {threshold:.4f} (written in full below) is this model's deploy threshold, chosen on validation
# (metrics.json recommended_threshold.adapter.threshold). On the held-out test split at that threshold:
# wrong share among served hits {_fmt_share(wrong)}, repeat hit rate {_fmt_share(hit)}
# (from {source}).
# The base model's threshold does not carry over: training moves the similarity scale.
# results/{domain}/replay/metrics.json shows how the wrong share moves as the cache grows.
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


def main(argv=None) -> int:
    setup_logging()
    args = parse_args(argv)
    merged, output = Path(args.merged), Path(args.output)
    if not merged.is_dir():
        raise PipelineError(f"{merged}: merged model folder not found; run merge_adapter first")
    metrics = read_json(args.eval_metrics)
    threshold = deploy_threshold(metrics, args.eval_metrics)
    figures = measured_figures(metrics)
    describe_model(merged)

    partial = output.with_name(f".{output.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    model_dir = partial / "model"
    shutil.copytree(merged, model_dir, ignore=shutil.ignore_patterns("merge_info.json", ".*"))
    model = describe_model(model_dir)
    loaded = check_loads(model_dir)
    if model["max_seq_length"] is None:
        model["max_seq_length"] = loaded["max_seq_length"]
    if model["dimension"] != loaded["dimension"]:
        raise PipelineError(
            f"{model_dir}: pooling config says {model['dimension']} dimensions, model gives {loaded['dimension']}"
        )
    if model["normalize"] and loaded["max_norm_error"] > 1e-4:
        raise PipelineError(
            f"{model_dir}: states normalisation but vectors deviate from unit length by {loaded['max_norm_error']:.1e}"
        )
    if not model["normalize"]:
        LOG.warning("%s: no Normalize module; the router's cosine still works, but say so to users", model_dir)
    model["saved_by"] = loaded["sentence_transformers"]
    model_path = args.model_path_in_router or str(output / "model")
    hnsw = {"M": args.hnsw_m, "efConstruction": args.hnsw_ef_construction, "ef": args.hnsw_ef}
    fragment = render_fragment(
        domain=args.domain,
        category=args.router_category,
        model_path=model_path,
        threshold=threshold,
        figures=figures,
        model=model,
        hnsw=hnsw,
    )
    with atomic_output(partial / FRAGMENT_NAME) as handle:
        handle.write(fragment)
    merge_info = merged / "merge_info.json"
    write_json(
        partial / "deploy_info.json",
        {
            "domain": args.domain,
            "router_category": args.router_category,
            "threshold": threshold,
            "threshold_source": "recommended_threshold.adapter.threshold",
            "measured": {key: figures.get(key) for key in ("wrong_share", "repeat_hit_rate", "source")},
            "model": {
                **model,
                "path_in_router": model_path,
                "load_check": loaded,
                "files_sha256": sha256_files(model_dir),
            },
            "merge": read_json(merge_info) if merge_info.exists() else None,
            "router_config": ROUTER_CONFIG,
            "hnsw": hnsw,
            "onnx": "not exported: needs optimum + onnxruntime, which are not in the verified environment, and the "
            "router's BERT embedding path loads safetensors",
        },
    )
    if output.exists():
        shutil.rmtree(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    make_readable(partial)
    os.replace(partial, output)
    LOG.info("deploy folder written to %s (threshold %.4f for category %r)", output, threshold, args.router_category)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
