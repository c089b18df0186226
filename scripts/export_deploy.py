"""export_deploy: the merged model and a vLLM Semantic Router config fragment, ready for a router.

Writes `models/{domain}/deploy/`:
- `model/`: the merged model as a plain sentence-transformers / Hugging Face folder (safetensors
  weights, tokenizer, `modules.json` with its pooling and normalisation modules), checked by loading
  it with plain sentence-transformers;
- `semantic-router.yaml`: a fragment of the router's config that points its semantic cache's
  embedding model at that folder and sets this domain's category threshold to the deploy threshold
  for the cache size --cache-size (metrics.json `recommended_threshold.sizes`), with a comment that
  names that size and the measured wrong share and hit rate;
- `deploy_info.json`: pooling, normalisation, dimension, file digests, the threshold and its source.

When validation found no threshold that keeps the error budget at that size, nothing is written and
the step fails with the measured figures and the options (cache_embed.deploy.router), unless
--allow-over-budget, which exports the closest threshold and says so in both files.
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
from cache_embed.deploy.model_folder import check_loads, describe_model, sha256_files
from cache_embed.deploy.router import FRAGMENT_NAME, ROUTER_CONFIG, deploy_choice, render_fragment

LOG = logging.getLogger("export_deploy")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--merged", required=True, help="merged model folder (merge_adapter.py output)")
    parser.add_argument("--eval-metrics", required=True, help="metrics.json of evaluate_adapter")
    parser.add_argument("--output", required=True, help="deploy folder (e.g. models/medical/deploy)")
    parser.add_argument("--domain", required=True)
    parser.add_argument("--router-category", required=True, help="the router's domain/category for this domain")
    parser.add_argument(
        "--cache-size", required=True, help="the evaluated cache size to deploy for (deploy.cache_size)"
    )
    parser.add_argument(
        "--allow-over-budget",
        action=argparse.BooleanOptionalAction,
        required=True,
        help="export the closest threshold when none keeps the budget at that size",
    )
    parser.add_argument(
        "--model-path-in-router",
        default="",
        help="the model folder's path as the router sees it (default: <output>/model)",
    )
    parser.add_argument("--hnsw-m", type=int, required=True)
    parser.add_argument("--hnsw-ef-construction", type=int, required=True)
    parser.add_argument("--hnsw-ef", type=int, required=True)
    return parser.parse_args(argv)


def checked_model_copy(merged: Path, model_dir: Path) -> tuple[dict, dict]:
    """Copy the merged model and check that it loads as it states; (description, load check)."""
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
    return model, loaded


def main(argv=None) -> int:
    setup_logging()
    args = parse_args(argv)
    merged, output = Path(args.merged), Path(args.output)
    if not merged.is_dir():
        raise PipelineError(f"{merged}: merged model folder not found; run merge_adapter first")
    choice = deploy_choice(read_json(args.eval_metrics), args.eval_metrics, args.cache_size, args.allow_over_budget)
    if choice["over_budget"]:
        LOG.warning("%s", choice["statement"])
    describe_model(merged)

    partial = output.with_name(f".{output.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    model, loaded = checked_model_copy(merged, partial / "model")
    model_path = args.model_path_in_router or str(output / "model")
    hnsw = {"M": args.hnsw_m, "efConstruction": args.hnsw_ef_construction, "ef": args.hnsw_ef}
    fragment = render_fragment(
        domain=args.domain, category=args.router_category, model_path=model_path, choice=choice, model=model, hnsw=hnsw
    )
    with atomic_output(partial / FRAGMENT_NAME) as handle:
        handle.write(fragment)
    merge_info = merged / "merge_info.json"
    write_json(
        partial / "deploy_info.json",
        {
            "domain": args.domain,
            "router_category": args.router_category,
            "threshold": choice["threshold"],
            "cache_size": choice["cache_size"],
            "max_wrong_share": choice["max_wrong_share"],
            "over_budget": choice["over_budget"],
            "over_budget_statement": choice["statement"],
            "threshold_source": choice["measured"]["source"],
            "measured": choice["measured"],
            "model": {
                **model,
                "path_in_router": model_path,
                "load_check": loaded,
                "files_sha256": sha256_files(partial / "model"),
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
    LOG.info(
        "deploy folder written to %s (threshold %.4f for %s cached questions, category %r%s)",
        output,
        choice["threshold"],
        choice["size_label"],
        args.router_category,
        ", OVER BUDGET" if choice["over_budget"] else "",
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
