import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

# Validate early so a bad key or value fails at parse time, naming its path; defaults are filled in.
validate(config, workflow.source_path("../schemas/config.schema.yaml"))
# The one bound JSON schema cannot express (split_queries.py checks it too, but in a job).
_split = config["split"]
_split_sum = _split["train"] + _split["val"] + _split["test"]
if abs(_split_sum - 1) > 1e-6:
    raise ValueError(
        "split.train + split.val + split.test must sum to 1, got "
        f"{_split['train']} + {_split['val']} + {_split['test']} = {_split_sum:g}; "
        "fix the split fractions in your config"
    )

# deploy.cache_size must name a size the evaluation chooses a threshold for.
_deploy_size = config["deploy"]["cache_size"]
if str(_deploy_size) not in [str(size) for size in config["evaluate"]["cache_sizes"]]:
    raise ValueError(
        f"deploy.cache_size is {_deploy_size!r}, which evaluate.cache_sizes "
        f"({config['evaluate']['cache_sizes']}) does not evaluate; add it there or pick one of those"
    )

# A domain's phrasing guard must be one of its own pair sets.
for _name, _domain in config["domains"].items():
    if (
        _domain["phrasing_guard"]
        and _domain["phrasing_guard"] not in _domain["external"]
    ):
        raise ValueError(
            f"domains.{_name}.phrasing_guard is {_domain['phrasing_guard']!r}, which is not one of"
            f" domains.{_name}.external ({sorted(_domain['external'])}); name one of those or leave it empty"
        )

PROJECT_ROOT = Path(workflow.basedir).parent
SCRIPTS = PROJECT_ROOT / "scripts"
# Names the steps must agree on (split names, model folder names) come from the steps' own library.
sys.path.insert(0, str(SCRIPTS))
from cache_embed.common import library_imports
from cache_embed.settings import step_settings
from cache_embed.common.names import SPLITS, model_slug

MEDQUAD_DOMAINS = sorted(
    name for name, spec in config["domains"].items() if spec["queries"] == "medquad"
)
FILE_DOMAINS = sorted(
    name for name, spec in config["domains"].items() if spec["queries"] != "medquad"
)


# A domain is one path segment (the schema's pattern), so models/{domain}/adapter never matches a
# seed's models/{domain}/seeds/{seed}/adapter.
wildcard_constraints:
    domain=r"[a-z][a-z0-9_]*",
    seed=r"\d+",


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


def settings_param(settings_function):
    """params: settings=settings_param(f): the step's settings f(wildcards) as one canonical string of
    command-line flags (see cache_embed.settings.step_settings for why one)."""
    return lambda wildcards: step_settings.cli_flags(settings_function(wildcards))


def medquad_archive_path():
    return f"resources/medquad/MedQuAD-{config['medquad']['commit']}.zip"


def medquad_source():
    medquad = config["medquad"]
    if medquad["archive"]:
        source = medquad["archive"]
        return source if "://" in source else project_path(source)
    return medquad["url"].format(commit=medquad["commit"])


def domain_queries_file(wildcards):
    return local(project_path(config["domains"][wildcards.domain]["queries"]))


def download_settings(wildcards):
    return step_settings.download(config, medquad_source())


def parse_settings(wildcards):
    return step_settings.parse(config)


def import_settings(wildcards):
    return step_settings.import_queries(config, wildcards.domain)


def split_settings(wildcards):
    return step_settings.split(config)


def all_targets():
    """Every domain's adapter, merged model, metrics and report."""
    targets = []
    for domain in sorted(config["domains"]):
        targets += [
            f"models/{domain}/adapter",
            f"models/{domain}/merged",
            f"results/{domain}/eval/metrics.json",
            f"results/{domain}/report.html",
            f"results/{domain}/model_card.md",
            f"models/{domain}/deploy",
            f"results/{domain}/summary.md",
        ]
        if config["replay"]["in_all"]:
            targets.append(f"results/{domain}/replay/metrics.json")
    return targets


def replay_metrics_for_summary(wildcards):
    """The replay's metrics for the summary page, where the run replays (replay.in_all)."""
    if config["replay"]["in_all"]:
        return [f"results/{wildcards.domain}/replay/metrics.json"]
    return []


# ---- generate ----------------------------------------------------------------------------------


def generate_backend(domain):
    return step_settings.backend(config, domain)


def generate_gpus(wildcards):
    """GPUs a shard job asks for: generate.vllm.gpus for the vllm backend, none otherwise. The job's
    tensor-parallel size is the GPU count it actually got (generate_runtime_options)."""
    if generate_backend(wildcards.domain) == "vllm":
        return config["generate"]["vllm"]["gpus"]
    return 0


def generate_gpu_manufacturer(wildcards):
    # Only a job that asks for GPUs names their maker (a SLURM constraint on clusters).
    return "nvidia" if generate_gpus(wildcards) > 0 else None


def generate_mem_mb(wildcards):
    return 64000 if generate_backend(wildcards.domain) == "vllm" else 4000


def generate_runtime(wildcards):
    """Minutes; LLM shards talk to a model for a long time, the structure backend takes seconds."""
    return 20 if generate_backend(wildcards.domain) == "structure" else 720


def domain_spec(wildcards):
    """The domain's spec (resources/domains/<domain>.yaml): prompts, and the model card's data,
    provenance and licence."""
    return local(project_path(config["domains"][wildcards.domain]["spec"]))


def generate_inputs(wildcards):
    """The split, plus the forms bank (structure) or the domain's prompt spec (LLM backends).
    Project files are local(): read from the project even when outputs live in remote storage.
    """
    inputs = {"split": f"results/{wildcards.domain}/splits/{wildcards.split}.jsonl"}
    if generate_backend(wildcards.domain) == "structure":
        inputs["forms"] = local(project_path(config["generate"]["structure"]["forms"]))
    else:
        inputs["spec"] = domain_spec(wildcards)
    return inputs


def generate_settings(wildcards):
    return step_settings.generate(config, wildcards.domain)


def generate_runtime_options(wildcards, resources):
    """Options that cannot change the triplets (step_settings.generate_runtime_options), with the
    GPU count this job actually got, so `--set-resources generate_triplets:gpu=2` runs tensor-parallel
    2. A params function that takes `resources` is one Snakemake neither records nor compares, so
    changing these never reruns generation."""
    return step_settings.cli_flags(
        step_settings.generate_runtime_options(config, wildcards.domain, resources.gpu)
    )


def generate_input_flags(wildcards, input):
    """--forms or --spec, whichever input the backend has."""
    return step_settings.cli_flags(
        {name: input[name] for name in ("forms", "spec") if name in input.keys()}
    )


def gather_settings(wildcards):
    return step_settings.gather(config)


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

EVAL_PLOTS = [
    "similarity_histograms",
    "precision_recall",
    "threshold_sweep",
    "cache_operations",
]


def evaluation_external(domain):
    """name -> path of each labelled pair file (evaluate.external and the domain's own sets), paths
    as the workflow resolves them."""
    sets = {**config["evaluate"]["external"], **config["domains"][domain]["external"]}
    return {name: project_path(path) for name, path in sorted(sets.items())}


def evaluation_external_files(wildcards):
    # local(): read from the project even when outputs live in remote storage.
    return [local(path) for path in evaluation_external(wildcards.domain).values()]


def split_val_settings(wildcards):
    return step_settings.split_val(config)


def evaluate_settings(wildcards):
    return step_settings.evaluate(
        config, wildcards.domain, evaluation_external(wildcards.domain)
    )


def report_settings(wildcards):
    """The settings of every step behind this domain's report, which shows them: changing one of
    them reruns the report too; a setting no step of this domain uses reruns nothing. One JSON
    string, passed as a function so that braces in values are not taken for wildcards.
    """
    domain = wildcards.domain
    data = (
        {"parse_medquad": parse_settings(wildcards)}
        if domain in MEDQUAD_DOMAINS
        else {"import_queries": import_settings(wildcards)}
    )
    steps = {
        **data,
        "split_queries": split_settings(wildcards),
        "generate_triplets": generate_settings(wildcards),
        "gather_triplets": gather_settings(wildcards),
        "fetch_base_model": fetch_base_model_settings(wildcards),
        "split_val_triplets": split_val_settings(wildcards),
        "train_adapter": train_settings(wildcards),
        "evaluate_adapter": evaluate_settings(wildcards),
    }
    return json.dumps(steps, sort_keys=True)


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


def step_library(name):
    """The library files (scripts/cache_embed/) a step script imports, directly or through each
    other: inputs of its rule too, so that editing one reruns every step that uses it.
    """
    return [
        local(os.path.relpath(path))
        for path in library_imports.library_files(SCRIPTS / name)
    ]


# ---- train -------------------------------------------------------------------------------------


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


def train_settings(wildcards):
    return step_settings.train(config, wildcards.domain)


def extra_seeds():
    """The seeds trained beside train.seed to measure the spread (train.seeds - 1 of them)."""
    first = config["train"]["seed"]
    return list(range(first + 1, first + config["train"]["seeds"]))


def seed_metrics_files(wildcards):
    return expand(
        "results/{domain}/seeds/{seed}/metrics.json",
        domain=wildcards.domain,
        seed=extra_seeds(),
    )


def train_seed_settings(wildcards):
    return {
        **step_settings.train(config, wildcards.domain),
        "seed": int(wildcards.seed),
    }


def evaluate_seed_settings(wildcards):
    """The evaluation's settings without the bootstrap: a seed's run gives the spread, not intervals."""
    return {**evaluate_settings(wildcards), "bootstrap": 0}


def merge_settings(wildcards):
    return step_settings.merge(config)


def fetch_base_model_settings(wildcards):
    return step_settings.fetch_base_model(config, train_base_model_local_path())


def train_base_model_local_path():
    local_path = config["base_model"]["local_path"]
    if not local_path or local_path.startswith("package:"):
        return local_path
    return project_path(local_path)


# ---- deploy and replay --------------------------------------------------------------------------


def deploy_settings(wildcards):
    return step_settings.deploy(config, wildcards.domain)


def replay_settings(wildcards):
    return step_settings.replay(config, wildcards.domain)


def replay_mem_mb(wildcards):
    # Embeddings of up to ~140k cached questions per model, plus the in-process Milvus Lite copy.
    return 12000 if "train_paraphrases" in config["replay"]["sizes"] else 6000
