"""Which settings reach each step, as that step's command-line flags.

The workflow (workflow/rules/common.smk) passes each rule's settings to Snakemake as ONE canonical
string built here: Snakemake records a job's params as a set of unnamed values, so separate params
that swap or share values would go unseen (snakemake/snakemake#2212). Each function returns exactly
the settings that can change that step's output; another backend's settings and operational knobs
(timeouts, concurrency, GPU count) are not among them, so changing those reruns nothing. Tests build
a step's flags from the schema's defaults through the same functions, so the scripts need no
defaults of their own.
"""

from __future__ import annotations

import shlex


def cli_flags(settings: dict) -> str:
    """Settings as command-line flags sorted by name; a list becomes several words, booleans
    `--flag` / `--no-flag`, every word shell-quoted."""
    words = []
    for name in sorted(settings):
        value = settings[name]
        if isinstance(value, bool):
            words.append(f"--{name}" if value else f"--no-{name}")
            continue
        words.append(f"--{name}")
        values = value if isinstance(value, list | tuple) else [value]
        words.extend(shlex.quote(str(item)) for item in values)
    return " ".join(words)


def flag_list(settings: dict) -> list[str]:
    """The same flags as an argv list, for calling a step's main() directly."""
    return shlex.split(cli_flags(settings))


def backend(config: dict, domain: str) -> str:
    return config["domains"][domain].get("backend") or config["generate"]["backend"]


def download(config: dict, source: str) -> dict:
    medquad = config["medquad"]
    return {
        "source": source,
        "content-sha256": medquad["content_sha256"],
        "max-unpacked-mb": medquad["max_unpacked_mb"],
    }


def parse(config: dict) -> dict:
    medquad = config["medquad"]
    return {
        "content-sha256": medquad["content_sha256"],
        "max-unpacked-mb": medquad["max_unpacked_mb"],
        "max-reject-fraction": medquad["max_reject_fraction"],
    }


def import_queries(config: dict, domain: str) -> dict:
    return {"max-reject-fraction": config["domains"][domain]["max_reject_fraction"]}


def split(config: dict) -> dict:
    fractions = config["split"]
    return {
        "train-fraction": fractions["train"],
        "val-fraction": fractions["val"],
        "test-fraction": fractions["test"],
        "seed": fractions["seed"],
    }


def generate(config: dict, domain: str) -> dict:
    """What can change a shard's triplets: the settings every backend uses plus the active
    backend's own."""
    settings_of = config["generate"]
    name = backend(config, domain)
    settings = {
        "backend": name,
        "paraphrases": settings_of["paraphrases"],
        "negatives": settings_of["negatives"],
        "max-queries": settings_of["max_queries"],
        "seed": settings_of["seed"],
        "min-yield": settings_of["min_yield"],
    }
    if name == "structure":
        settings["max-synonym-words"] = settings_of["structure"]["max_synonym_words"]
        return settings
    sampling = settings_of["sampling"]
    settings.update(
        {
            "model": settings_of[name]["model"],
            "temperature": sampling["temperature"],
            "top-p": sampling["top_p"],
            "max-tokens": sampling["max_tokens"],
            "batch-size": settings_of["batch_size"],
            "max-retries": settings_of["max_retries"],
        }
    )
    if name == "vllm":
        vllm = settings_of["vllm"]
        settings.update({"revision": vllm["revision"], "max-model-len": vllm["max_model_len"], "dtype": vllm["dtype"]})
    else:
        settings["base-url"] = settings_of["openai"]["base_url"]
    return settings


def generate_runtime_options(config: dict, domain: str, gpus: int) -> dict:
    """Options that cannot change the triplets: the GPUs vLLM spreads over (the job's own GPU count),
    its memory share, and the OpenAI client's key variable, concurrency, timeout and transport retries."""
    settings_of = config["generate"]
    name = backend(config, domain)
    if name == "vllm":
        return {
            "tensor-parallel": max(1, int(gpus)),
            "gpu-memory-utilization": settings_of["vllm"]["gpu_memory_utilization"],
        }
    if name == "openai":
        openai = settings_of["openai"]
        return {
            "api-key-env": openai["api_key_env"],
            "concurrency": openai["concurrency"],
            "timeout": openai["timeout_s"],
            "openai-retries": openai["retries"],
        }
    return {}


def gather(config: dict) -> dict:
    return {"shards": config["generate"]["shards"]}


def fetch_base_model(config: dict, local_path: str) -> dict:
    base_model = config["base_model"]
    return {"name": base_model["name"], "revision": base_model["revision"], "local-path": local_path}


def train(config: dict, domain: str) -> dict:
    """Every train.* setting that can change the adapter (not gpus/runtime, which say where it runs,
    nor merge_atol, which is the merge step's). A cache-figure checkpoint metric also takes the
    evaluation's definition of the same question and traffic mix, and the repeat hit rate at the
    bound the wrong-share budget; mined negatives take the definition of the same question."""
    settings_of = config["train"]
    lora = settings_of["lora"]
    cache_selection = {}
    mined = settings_of["mined_negatives"]
    if settings_of["best_metric"].startswith("cache_") or mined["count"]:
        cache_selection["equivalence"] = equivalence_mode(config, domain)
    if settings_of["best_metric"].startswith("cache_"):
        cache_selection["repeat-share"] = config["evaluate"]["cache"]["repeat_share"]
        if settings_of["best_metric"] == "cache_repeat_hit_rate":  # the only one the budget changes
            cache_selection["max-wrong-share"] = config["evaluate"]["max_wrong_share"]
    hardness = {}
    if settings_of["hardness"]["mode"] != "none":
        hardness = {
            "hardness-mode": settings_of["hardness"]["mode"],
            "hardness-strength": settings_of["hardness"]["strength"],
        }
    mining = {}
    if mined["count"]:
        mining = {
            "mined-negatives": mined["count"],
            "mine-range-min": mined["range_min"],
            "mine-range-max": mined["range_max"],
        }
        if mined["margin"] is not None:
            mining["mine-margin"] = mined["margin"]
    contrastive = {}
    stage = settings_of["contrastive"]
    if stage["steps"]:
        contrastive = {"contrastive-steps": stage["steps"], "contrastive-margin": stage["margin"]}
        if stage["learning_rate"] is not None:
            contrastive["contrastive-lr"] = stage["learning_rate"]
    sampling = {}
    if settings_of["qtype_balance"] < 1 and settings_of["max_examples"]:
        sampling = {"qtype-balance": settings_of["qtype_balance"]}
    directions = {}
    if settings_of["directions"] != ["query_to_doc"]:
        directions = {"directions": settings_of["directions"]}
    return {
        **cache_selection,
        **hardness,
        **mining,
        **contrastive,
        **directions,
        **sampling,
        "base-model-id": config["base_model"]["name"],
        "epochs": settings_of["epochs"],
        "batch-size": settings_of["batch_size"],
        "lr": settings_of["learning_rate"],
        "scale": settings_of["scale"],
        "warmup-ratio": settings_of["warmup_ratio"],
        "scheduler": settings_of["scheduler"],
        "weight-decay": settings_of["weight_decay"],
        "max-grad-norm": settings_of["max_grad_norm"],
        "max-examples": settings_of["max_examples"],
        "max-val-examples": settings_of["max_val_examples"],
        "max-drop-fraction": settings_of["max_drop_fraction"],
        "max-seq-length": settings_of["max_seq_length"],
        "seed": settings_of["seed"],
        "loss": settings_of["loss"],
        "mini-batch-size": settings_of["mini_batch_size"],
        "precision": settings_of["precision"],
        "eval-steps": settings_of["eval_steps"],
        "best-metric": settings_of["best_metric"],
        "lora-r": lora["r"],
        "lora-alpha": lora["alpha"],
        "lora-dropout": lora["dropout"],
        "lora-target-modules": lora["target_modules"],
    }


def merge(config: dict) -> dict:
    return {"atol": config["train"]["merge_atol"]}


def equivalence_mode(config: dict, domain: str) -> str:
    """How evaluation decides that two queries are the same question (cache_embed.data.equivalence)."""
    return "medquad" if config["domains"][domain]["queries"] == "medquad" else "text"


def split_val(config: dict) -> dict:
    return {"calibrate-fraction": config["evaluate"]["calibrate_fraction"], "seed": config["split"]["seed"]}


def evaluate(config: dict, domain: str, external: dict[str, str]) -> dict:
    """Every evaluate.* setting; `external` maps each labelled pair file's name to its path as the
    workflow resolves it (the files themselves are the rule's inputs)."""
    settings_of = config["evaluate"]
    return {
        "thresholds": settings_of["thresholds"],
        "target-precisions": settings_of["target_precisions"],
        "deploy-precision": settings_of["deploy_precision"],
        "max-wrong-share": settings_of["max_wrong_share"],
        "repeat-share": settings_of["cache"]["repeat_share"],
        "equivalence": equivalence_mode(config, domain),
        "bootstrap": settings_of["bootstrap"],
        "seed": settings_of["seed"],
        "batch-size": settings_of["batch_size"],
        "max-calibration-triplets": settings_of["max_calibration_triplets"],
        "cache-sizes": [str(size) for size in settings_of["cache_sizes"]],
        "external": [f"{name}={path}" for name, path in sorted(external.items())],
        **({"phrasing-guard": guard} if (guard := config["domains"][domain]["phrasing_guard"]) else {}),
    }


def router_category(config: dict, domain: str) -> str:
    return config["domains"][domain].get("router_category") or domain


def deploy(config: dict, domain: str) -> dict:
    hnsw = config["replay"]["hnsw"]
    return {
        "domain": domain,
        "router-category": router_category(config, domain),
        "cache-size": str(config["deploy"]["cache_size"]),
        "allow-over-budget": config["deploy"]["allow_over_budget"],
        "hnsw-m": hnsw["M"],
        "hnsw-ef-construction": hnsw["ef_construction"],
        "hnsw-ef": hnsw["ef"],
    }


def replay(config: dict, domain: str) -> dict:
    settings_of, evaluate_of = config["replay"], config["evaluate"]
    return {
        "sizes": settings_of["sizes"],
        "index-types": settings_of["index_types"],
        "hnsw-m": settings_of["hnsw"]["M"],
        "hnsw-ef-construction": settings_of["hnsw"]["ef_construction"],
        "hnsw-ef": settings_of["hnsw"]["ef"],
        "max-lookups": settings_of["max_lookups"],
        "latency-samples": settings_of["latency_samples"],
        "search-limit": settings_of["search_limit"],
        "seed": settings_of["seed"],
        "batch-size": evaluate_of["batch_size"],
        "max-wrong-share": evaluate_of["max_wrong_share"],
        "repeat-share": evaluate_of["cache"]["repeat_share"],
        "equivalence": equivalence_mode(config, domain),
    }
