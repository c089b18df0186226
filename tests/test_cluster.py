"""Real cluster-style runs of the workflow:

* through a real SLURM cluster (single node, started by `bash .ci/slurm.sh start`; CI starts it) with
  the SLURM executor plugin, as on the AWS cluster but with fake GPU GRES, and
* with S3 default storage against a real local S3 API (moto's server on 127.0.0.1).

Without SLURM the SLURM test is skipped, except under CI=true where that is a failure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import copy_project, run_snakemake
from local_s3 import moto_server

# What the real runs build: the whole pipeline to the adapter on SLURM (tests/data/tiny.yaml keeps it
# small), the data stage with S3 default storage.
CLUSTER_TARGETS = ("models/medical/adapter",)
S3_TARGETS = ("results/medical/splits/train.jsonl",)
TINY_CONFIG = Path(__file__).parent / "data" / "tiny.yaml"

SLURM_FLAGS = (
    "--executor", "slurm",
    "--jobs", "4",
    # No accounting daemon on the CI cluster: sacct would never answer and the plugin would poll it
    # forever. squeue keeps finished jobs for MinJobAge=300 s (.ci/slurm.sh), far above this interval.
    "--slurm-status-command", "squeue",
    "--slurm-init-seconds-before-status-checks", "2",
    "--slurm-keep-successful-logs",
    # GPU rules ask the fake GRES for a GPU, as they would on the cluster (train.gpus stays 0).
    "--set-resources", "train_adapter:gpu=1", "evaluate_adapter:gpu=1",
)


def slurm_is_up() -> tuple[bool, str]:
    if shutil.which("sinfo") is None:
        return False, "sinfo is not installed"
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    states = result.stdout.split()
    if result.returncode != 0 or not any(state in ("idle", "mixed") for state in states):
        return False, f"no idle SLURM node (sinfo: {result.returncode}, {result.stdout.strip()} {result.stderr.strip()})"
    return True, ""


@pytest.fixture(scope="module")
def slurm():
    up, reason = slurm_is_up()
    if not up:
        message = f"SLURM is not running ({reason}); start it with `bash .ci/slurm.sh start`"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


def test_workflow_through_real_slurm(slurm, tmp_path, medquad_archive):
    project = copy_project(tmp_path / "project", medquad_archive)
    shutil.copy(TINY_CONFIG, project / "tiny.yaml")
    started = time.monotonic()
    result = run_snakemake(
        project, *CLUSTER_TARGETS, "--profile", "profiles/local", *SLURM_FLAGS,
        "--configfiles", "config/config.yaml", "config/local.yaml", "tiny.yaml", timeout=1500,
    )
    elapsed = time.monotonic() - started
    print(f"SLURM run of {' '.join(CLUSTER_TARGETS)}: {elapsed:.1f} s")
    for target in CLUSTER_TARGETS:
        assert (project / target).exists(), target
    # Every job went through sbatch: one SLURM log per job, and the job count matches the run's.
    submitted = result.stdout.count("has been submitted with SLURM jobid") + result.stderr.count(
        "has been submitted with SLURM jobid"
    )
    slurm_logs = sorted((project / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert submitted >= 8 and len(slurm_logs) == submitted, (submitted, slurm_logs)
    assert "train_adapter" in result.stdout + result.stderr
    stats = json.loads((project / "results/medical/splits/stats.json").read_text())
    assert stats  # the real split ran inside the SLURM jobs


def test_workflow_with_s3_default_storage_against_local_s3_server(s3, tmp_path, medquad_archive):
    project = copy_project(tmp_path / "project")
    # The archive comes from a local file through the download rule, so it too lands in the bucket.
    (project / "ci-s3.yaml").write_text(f"medquad:\n  archive: {medquad_archive}\n", encoding="utf-8")
    prefix = "runs/ci"
    run_snakemake(
        project, *S3_TARGETS, "--profile", "profiles/local",
        "--configfiles", "config/local.yaml", "ci-s3.yaml",
        "--default-storage-provider", "s3", "--default-storage-prefix", f"s3://cache-embeddings/{prefix}",
        "--storage-s3-endpoint-url", s3.endpoint_url,
        "--storage-s3-access-key", s3.access_key, "--storage-s3-secret-key", s3.secret_key,
        timeout=1200,
    )
    client = s3.client()
    objects = {
        entry["Key"].removeprefix(f"{prefix}/"): entry["Size"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket="cache-embeddings", Prefix=prefix)
        for entry in page.get("Contents", [])
    }
    for target in S3_TARGETS:
        assert objects.get(target, 0) > 0, (target, sorted(objects))
    assert any(key.startswith("logs/") for key in objects) and any(key.startswith("benchmarks/") for key in objects)
    assert not (project / "results").exists(), "outputs must go to the bucket, not the working directory"
    stats = json.loads(
        client.get_object(Bucket="cache-embeddings", Key=f"{prefix}/results/medical/splits/stats.json")["Body"].read()
    )
    train = client.get_object(Bucket="cache-embeddings", Key=f"{prefix}/results/medical/splits/train.jsonl")["Body"].read()
    assert train.count(b"\n") > 1000 and stats
