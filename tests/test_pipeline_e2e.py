"""End-to-end: the local profile on small real data, then incremental reruns (issue 7).

One complete run in a temporary copy of the project is shared by the tests in this module;
each rerun test works on its own copy of that finished run (metadata included) and asks
Snakemake's dry run which jobs a change would rerun.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, copy_project, run_snakemake

QUICK = ["--profile", "profiles/local", "--configfile", "config/config.yaml", "config/local.yaml", "tests-quick.yaml"]
FINAL = ["all"]


def quick_args(*extra: str) -> list[str]:
    # Targets before --configfile, which takes every following word as a file.
    return [*extra, *QUICK]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, medquad_archive) -> Path:
    project = copy_project(tmp_path_factory.mktemp("e2e") / "project", medquad_archive)
    shutil.copy(PROJECT_ROOT / "tests" / "data" / "quick.yaml", project / "tests-quick.yaml")
    run_snakemake(project, *quick_args(*FINAL), timeout=3000)
    return project


def planned_jobs(result) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run into {rule: count}."""
    jobs = {}
    table = result.stdout.split("Job stats:", 1)
    if len(table) < 2:
        return jobs
    for line in table[1].splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        if match.group(1) not in ("total", "all"):
            jobs[match.group(1)] = int(match.group(2))
    return jobs


def copy_run(finished_run: Path, tmp_path: Path) -> Path:
    destination = tmp_path / "project"
    shutil.copytree(finished_run, destination, symlinks=True)
    return destination


def test_full_local_run_produces_every_output(finished_run):
    domain = finished_run / "results" / "medical"
    for split in ("train", "val", "test"):
        assert (domain / "triplets" / f"{split}.jsonl").stat().st_size > 0
    adapter = finished_run / "models" / "medical" / "adapter"
    assert (adapter / "adapter_model.safetensors").stat().st_size < 1_000_000
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    metrics = json.loads((domain / "eval" / "metrics.json").read_text())
    for block in ("base", "adapter", "delta"):
        assert {"roc_auc", "pr_auc", "mean_pos", "mean_neg", "margin", "triplet_accuracy", "at_threshold",
                "at_precision"} <= set(metrics["test"][block])
    assert "recommended_threshold" in metrics
    assert metrics["test"]["adapter"]["roc_auc"] > metrics["test"]["base"]["roc_auc"]
    assert (domain / "report.html").stat().st_size > 10_000
    # Nothing is left to do after a complete run.
    assert planned_jobs(run_snakemake(finished_run, *quick_args("-n", *FINAL))) == {}


@pytest.mark.parametrize("change, expected", [
    ("split: {train: 0.75, val: 0.15, test: 0.1}",
     {"split_queries", "generate_triplets", "gather_triplets", "train_adapter", "merge_adapter",
      "evaluate_adapter", "report"}),
    ("generate: {paraphrases: 2}",
     {"generate_triplets", "gather_triplets", "train_adapter", "merge_adapter", "evaluate_adapter", "report"}),
    ("train: {learning_rate: 1.0e-4}",
     {"train_adapter", "merge_adapter", "evaluate_adapter", "report"}),
    ("evaluate: {thresholds: [0.75, 0.8]}", {"evaluate_adapter", "report"}),
])
def test_config_change_reruns_exactly_the_affected_rules(finished_run, tmp_path, change, expected):
    project = copy_run(finished_run, tmp_path)
    # A user's edit, as one more config file merged over the others. (--config would do for
    # top-level values, but Snakemake reads nested values given there as strings.)
    (project / "change.yaml").write_text(change + "\n")
    result = run_snakemake(project, *quick_args("-n", *FINAL), "change.yaml")
    assert set(planned_jobs(result)) == expected, result.stdout[-3000:]
    changed = run_snakemake(project, "--list-changes", "params", *QUICK, "change.yaml").stdout
    assert changed.strip(), "--list-changes params lists the outputs whose recorded settings changed"


def test_editing_a_script_reruns_its_rule_onward(finished_run, tmp_path):
    project = copy_run(finished_run, tmp_path)
    script = project / "scripts" / "split_queries.py"
    script.write_text(script.read_text() + "\n# an edit\n")
    result = run_snakemake(project, *quick_args("-n", *FINAL))
    assert set(planned_jobs(result)) == {
        "split_queries", "generate_triplets", "gather_triplets", "train_adapter", "merge_adapter",
        "evaluate_adapter", "report"}
    changes = run_snakemake(project, *quick_args("--list-changes", "code"), check=False)
    assert changes.returncode == 0
