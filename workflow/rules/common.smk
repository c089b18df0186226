import json
import os
import re
import shlex
from pathlib import Path

from snakemake.utils import validate

# Validate early so a bad key or value fails at parse time, naming its path; defaults are filled in.
validate(config, workflow.source_path("../schemas/config.schema.yaml"))

PROJECT_ROOT = Path(workflow.basedir).parent
SCRIPTS = PROJECT_ROOT / "scripts"
SPLITS = ["train", "val", "test"]
MEDQUAD_DOMAINS = sorted(
    name for name, spec in config["domains"].items() if spec["queries"] == "medquad"
)
FILE_DOMAINS = sorted(
    name for name, spec in config["domains"].items() if spec["queries"] != "medquad"
)


def domain_pattern(domains):
    # A pattern that matches none of the names keeps a rule unreachable when its list is empty.
    return "|".join(domains) if domains else "(?!x)x"


def project_path(path):
    """Paths in config are relative to the project root unless absolute. The result is relative to
    the working directory, so that the inputs and params Snakemake records stay the same when a
    finished project is moved or copied (absolute paths there would rerun everything).
    """
    path = Path(path)
    return str(path) if path.is_absolute() else os.path.relpath(PROJECT_ROOT / path)


def medquad_archive_path():
    return f"resources/medquad/MedQuAD-{config['medquad']['commit']}.zip"


def medquad_source():
    medquad = config["medquad"]
    if medquad["archive"]:
        source = medquad["archive"]
        return source if "://" in source else project_path(source)
    return medquad["url"].format(commit=medquad["commit"])


def domain_queries_file(wildcards):
    return project_path(config["domains"][wildcards.domain]["queries"])


def domain_max_reject_fraction(wildcards):
    return config["domains"][wildcards.domain].get("max_reject_fraction", 0.01)


def all_targets():
    """Every domain's adapter, merged model, metrics and report."""
    targets = []
    for domain in sorted(config["domains"]):
        targets += [
            f"models/{domain}/adapter",
            f"models/{domain}/merged",
            f"results/{domain}/eval/metrics.json",
            f"results/{domain}/report.html",
            f"models/{domain}/deploy",
        ]
        if config["replay"]["in_all"]:
            targets.append(f"results/{domain}/replay/metrics.json")
    return targets


# ---- generate ----------------------------------------------------------------------------------


def generate_backend(domain):
    return config["domains"][domain].get("backend") or config["generate"]["backend"]


def generate_backend_of(wildcards):
    return generate_backend(wildcards.domain)


def generate_gpus(wildcards):
    """GPUs a shard job asks for: generate.vllm.gpus for the vllm backend, none otherwise."""
    if generate_backend(wildcards.domain) == "vllm":
        return config["generate"]["vllm"]["gpus"]
    return 0


def generate_tensor_parallel(wildcards):
    return max(1, generate_gpus(wildcards))


def generate_mem_mb(wildcards):
    return 64000 if generate_backend(wildcards.domain) == "vllm" else 4000


def generate_runtime(wildcards):
    """Minutes; LLM shards talk to a model for a long time, the structure backend takes seconds."""
    return 20 if generate_backend(wildcards.domain) == "structure" else 720


def generate_model(wildcards):
    backend = generate_backend(wildcards.domain)
    return config["generate"][backend]["model"] if backend != "structure" else ""


def generate_inputs(wildcards):
    """The split, plus the forms bank (structure) or the domain's prompt spec (LLM backends)."""
    inputs = {"split": f"results/{wildcards.domain}/splits/{wildcards.split}.jsonl"}
    if generate_backend(wildcards.domain) == "structure":
        inputs["forms"] = project_path(config["generate"]["structure"]["forms"])
    else:
        inputs["spec"] = project_path(config["domains"][wildcards.domain]["spec"])
    return inputs


def generate_spec(wildcards):
    return project_path(config["domains"][wildcards.domain]["spec"])


def generate_forms(wildcards):
    return project_path(config["generate"]["structure"]["forms"])


def shard_files(wildcards, suffix):
    shards = config["generate"]["shards"]
    return [
        f"results/{wildcards.domain}/triplets/shards/{wildcards.split}/{shard}-of-{shards}{suffix}"
        for shard in range(shards)
    ]


def shard_triplets(wildcards):
    return shard_files(wildcards, ".jsonl")


def shard_stats(wildcards):
    return shard_files(wildcards, ".stats.json")


# ---- evaluate ----------------------------------------------------------------------------------

EVAL_PLOTS = ["similarity_histograms", "precision_recall", "threshold_sweep"]


def evaluation_external_files():
    return [
        project_path(path) for _, path in sorted(config["evaluate"]["external"].items())
    ]


def evaluation_external_flags():
    return " ".join(
        shlex.quote(f"{name}={project_path(path)}")
        for name, path in sorted(config["evaluate"]["external"].items())
    )


def evaluation_effective_config(wildcards):
    """The whole validated config (defaults filled) as JSON: a change reruns the report.
    A function, so that braces in values (e.g. medquad.url) are not taken for wildcards.
    """
    return json.dumps(config, sort_keys=True)


def evaluation_plots_dir(wildcards, output):
    return str(Path(output.similarity_histograms).parent)


def evaluation_plot(name):
    return report(
        f"results/{{domain}}/eval/plots/{name}.png",
        caption=f"../report/{name}.rst",
        category="Evaluation",
        subcategory="{domain}",
    )


# ---- publish -----------------------------------------------------------------------------------


def publish_hub_repo(wildcards):
    return config["publish"]["hub_repo"].replace("{domain}", wildcards.domain)


def publish_s3_prefix(wildcards):
    prefix = config["publish"]["s3_prefix"].rstrip("/")
    return f"{prefix}/{wildcards.domain}/adapter" if prefix else ""


def publish_flags():
    flags = [
        "--hub-private" if config["publish"]["hub_private"] else "--no-hub-private"
    ]
    if config["publish"]["dry_run"]:
        flags.append("--dry-run")
    return " ".join(flags)


def step_script(name):
    """A rule's script as one of its inputs, so that editing the script reruns the rule onward.
    Relative to the working directory, so that moving or copying a finished project does not
    change the recorded inputs (which would rerun everything). local(): the script is read from
    the project even when outputs live in remote storage.
    """
    return local(os.path.relpath(SCRIPTS / name))


# ---- train -------------------------------------------------------------------------------------


def model_slug(name):
    """sentence-transformers/all-MiniLM-L6-v2 -> sentence-transformers--all-MiniLM-L6-v2"""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", name).strip("-")


def base_model_dir():
    return f"resources/models/{model_slug(config['base_model']['name'])}"


def train_gpus(wildcards):
    return config["train"]["gpus"]


def train_gpu_manufacturer(wildcards):
    # Only a job that asks for GPUs names their maker (a SLURM constraint on clusters).
    return "nvidia" if config["train"]["gpus"] > 0 else None


def train_mem_mb(wildcards):
    return 16000 if config["train"]["gpus"] > 0 else 8000


def train_runtime(wildcards):
    return config["train"]["runtime"]


def train_base_model_local_path():
    local_path = config["base_model"]["local_path"]
    if not local_path or local_path.startswith("package:"):
        return local_path
    return project_path(local_path)


# ---- deploy and replay --------------------------------------------------------------------------


def cli_flags(settings):
    """{"flag-name": value} -> "--flag-name value", sorted by flag; lists as several words,
    booleans as a bare flag (True) or nothing (False), everything shell-quoted."""
    words = []
    for flag, value in sorted(settings.items()):
        if isinstance(value, bool):
            if value:
                words.append(f"--{flag}")
            continue
        words.append(f"--{flag}")
        values = value if isinstance(value, (list, tuple)) else [value]
        words += [shlex.quote(str(item)) for item in values]
    return " ".join(words)


def router_category(domain):
    return config["domains"][domain].get("router_category") or domain


def deploy_settings(wildcards):
    hnsw = config["replay"]["hnsw"]
    return {
        "domain": wildcards.domain,
        "router-category": router_category(wildcards.domain),
        "hnsw-m": hnsw["M"],
        "hnsw-ef-construction": hnsw["ef_construction"],
        "hnsw-ef": hnsw["ef"],
    }


def replay_settings(wildcards):
    replay, evaluate = config["replay"], config["evaluate"]
    return {
        "sizes": replay["sizes"],
        "index-types": replay["index_types"],
        "hnsw-m": replay["hnsw"]["M"],
        "hnsw-ef-construction": replay["hnsw"]["ef_construction"],
        "hnsw-ef": replay["hnsw"]["ef"],
        "max-lookups": replay["max_lookups"],
        "latency-samples": replay["latency_samples"],
        "search-limit": replay["search_limit"],
        "seed": replay["seed"],
        "batch-size": evaluate["batch_size"],
        # Issue 11 defines these two under evaluate; until they are in the schema, their defaults.
        "max-wrong-share": evaluate.get("max_wrong_share", 0.05),
        "repeat-share": evaluate.get("cache", {}).get("repeat_share", 0.5),
        "equivalence": "medquad" if wildcards.domain in MEDQUAD_DOMAINS else "text",
    }


def replay_mem_mb(wildcards):
    # Embeddings of up to ~140k cached questions per model, plus the in-process Milvus Lite copy.
    return 12000 if "train_paraphrases" in config["replay"]["sizes"] else 6000
