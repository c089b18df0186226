"""End-to-end: the local profile on small real data, then incremental reruns (issue 7).

One complete run in a temporary copy of the project is shared by the tests in this module;
each rerun test works on its own copy of that finished run (metadata included) and asks
Snakemake's dry run which jobs a change would rerun.
"""

from __future__ import annotations

import json
import os
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


# What a rerun test may edit: copied; everything else (outputs, models, metadata) is hard-linked,
# as a dry run only reads it, which keeps two dozen copies of a finished run cheap.
EDITED_PARTS = ("workflow", "config", "scripts")


def copy_run(finished_run: Path, tmp_path: Path) -> Path:
    destination = tmp_path / "project"
    shutil.copytree(finished_run, destination, symlinks=True, copy_function=os.link)
    for part in EDITED_PARTS:
        shutil.rmtree(destination / part)
        shutil.copytree(finished_run / part, destination / part, symlinks=True)
    return destination


def test_full_local_run_produces_every_output(finished_run):
    domain = finished_run / "results" / "medical"
    for split in ("train", "val", "test"):
        assert (domain / "triplets" / f"{split}.jsonl").stat().st_size > 0
    adapter = finished_run / "models" / "medical" / "adapter"
    # r 32 on every attention and dense layer of L6: 1,351,680 float32 parameters and a small header.
    assert 5_406_720 < (adapter / "adapter_model.safetensors").stat().st_size < 5_420_000
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    metrics = json.loads((domain / "eval" / "metrics.json").read_text())
    for block in ("base", "adapter", "delta"):
        assert {
            "roc_auc",
            "pr_auc",
            "mean_pos",
            "mean_neg",
            "margin",
            "triplet_accuracy",
            "at_threshold",
            "at_precision",
        } <= set(metrics["test"][block])
    assert "recommended_threshold" in metrics
    assert metrics["test"]["adapter"]["roc_auc"] > metrics["test"]["base"]["roc_auc"]
    assert (domain / "report.html").stat().st_size > 10_000
    # The router export carries metrics.json's threshold at deploy.cache_size (2,000 in quick.yaml),
    # and says so when validation found none within the budget there (allow_over_budget in quick.yaml).
    rec = metrics["recommended_threshold"]
    assert [size["names"] for size in rec["sizes"]] == [["test_cache"], ["2000"]]
    size = rec["sizes"][1]
    assert (
        size["cache_size"]
        == 2000
        == size["test_cache"]["cached_entries"]
        == size["calibration_cache"]["cached_entries"]
    )
    deploy = finished_run / "models" / "medical" / "deploy"
    info = json.loads((deploy / "deploy_info.json").read_text())
    fragment = (deploy / "semantic-router.yaml").read_text()
    over_budget = size["adapter"]["threshold"] is None
    expected = size["adapter"]["evaluated_at"] if over_budget else size["adapter"]["threshold"]
    assert info["threshold"] == expected and info["cache_size"] == 2000 and info["over_budget"] is over_budget
    assert f"similarity_threshold: {expected!r}" in fragment and "deploy threshold for a cache of\n# 2,000" in fragment
    assert ("# OVER BUDGET:" in fragment) is over_budget
    # The natural-phrasing sets are evaluated by default, and the guard is read at every size.
    assert set(metrics["external"]) == {"natural_val", "natural_test"}
    assert metrics["external"]["natural_val"]["phrasing"]["unit"] == "source record"
    assert all(block["phrasing_guard"]["set"] == "natural_val" for block in rec["sizes"])
    # Nothing is left to do after a complete run.
    assert planned_jobs(run_snakemake(finished_run, *quick_args("-n", *FINAL))) == {}


# What each step's outputs feed, in this workflow's DAG (checked against Snakemake's own plan below).
AFTER_EVALUATION = {"evaluate_adapter", "model_card", "export_deploy", "report", "summary"}
AFTER_TRAINING = {"train_adapter", "merge_adapter"} | AFTER_EVALUATION
AFTER_GENERATION = {"generate_triplets", "gather_triplets", "split_val_triplets"} | AFTER_TRAINING
AFTER_SPLIT = {"split_queries"} | AFTER_GENERATION


@pytest.mark.parametrize(
    "change, expected, recorded",
    [
        ("split: {train: 0.75, val: 0.15, test: 0.1}", AFTER_SPLIT, "results/medical/splits/train.jsonl"),
        ("generate: {paraphrases: 2}", AFTER_GENERATION, "results/medical/triplets/shards/train/0-of-2.jsonl"),
        ("train: {learning_rate: 1.0e-4}", AFTER_TRAINING, "models/medical/adapter"),
        # A value another training setting already has (weight_decay 0.01), while the old one stays among
        # them (warmup_ratio 0.1): a set of unnamed params would not see this change.
        ("train: {lora: {dropout: 0.01}}", AFTER_TRAINING, "models/medical/adapter"),
        (
            "generate: {structure: {max_synonym_words: 6}}",
            AFTER_GENERATION,
            "results/medical/triplets/shards/test/1-of-2.jsonl",
        ),
        ("train: {directions: [query_to_doc, doc_to_query]}", AFTER_TRAINING, "models/medical/adapter"),
        # The quick run does not mine (tests/data/quick.yaml); turning mining on reruns training onward.
        ("train: {mined_negatives: {count: 2}}", AFTER_TRAINING, "models/medical/adapter"),
        ("train: {qtype_balance: 0.5}", AFTER_TRAINING, "models/medical/adapter"),
        ("evaluate: {thresholds: [0.75, 0.8]}", AFTER_EVALUATION, "results/medical/eval/metrics.json"),
        # The budget changes the deploy threshold, not which checkpoint the default (P-CHR AUC) keeps;
        # the traffic mix changes both.
        ("evaluate: {max_wrong_share: 0.1}", AFTER_EVALUATION, "results/medical/eval/metrics.json"),
        ("evaluate: {cache: {repeat_share: 0.3}}", AFTER_TRAINING, "models/medical/adapter"),
        (
            "evaluate: {cache_sizes: [test_cache, 2500]}\ndeploy: {cache_size: 2500}",
            AFTER_EVALUATION,
            "results/medical/eval/metrics.json",
        ),
        ("domains: {medical: {phrasing_guard: ''}}", AFTER_EVALUATION, "results/medical/eval/metrics.json"),
        # Deploy settings change the export only.
        ("deploy: {cache_size: test_cache}", {"export_deploy"}, "models/medical/deploy"),
        ("deploy: {allow_over_budget: false}", {"export_deploy"}, "models/medical/deploy"),
        (
            "evaluate: {calibrate_fraction: 0.4}",
            {"split_val_triplets"} | AFTER_TRAINING,
            "results/medical/triplets/val_select.jsonl",
        ),
    ],
)
def test_config_change_reruns_exactly_the_affected_rules(finished_run, tmp_path, change, expected, recorded):
    project = copy_run(finished_run, tmp_path)
    # A user's edit, as one more config file merged over the others. (--config would do for
    # top-level values, but Snakemake reads nested values given there as strings.)
    (project / "change.yaml").write_text(change + "\n")
    result = run_snakemake(project, *quick_args("-n", *FINAL), "change.yaml")
    assert set(planned_jobs(result)) == expected, result.stdout[-3000:]
    # The first step the change reaches recorded other settings: Snakemake lists its outputs.
    changed = run_snakemake(project, "--list-changes", "params", *QUICK, "change.yaml").stdout.split()
    assert recorded in changed, changed


@pytest.mark.parametrize(
    "change",
    [
        # The run uses the structure backend: the LLM backends' settings cannot change its triplets.
        "generate: {openai: {timeout_s: 60, concurrency: 2, retries: 9, model: other/model, base_url: 'http://h:1/v1'}}",
        "generate: {vllm: {gpus: 2, model: other/model, revision: abc, gpu_memory_utilization: 0.5}}",
        "generate: {sampling: {temperature: 0.2, max_tokens: 64}, batch_size: 8, max_retries: 5}",
        # Where training runs, not what it makes.
        "train: {gpus: 1, runtime: 30}",
        # Options of features that are off: mining's with count 0 (quick.yaml), the contrastive stage's
        # with 0 steps, hardness weighting's with mode none.
        "train: {mined_negatives: {range_max: 30, margin: 0.1}, contrastive: {margin: 0.3}, hardness: {strength: 2.0}}",
    ],
)
def test_settings_a_step_does_not_use_rerun_nothing(finished_run, tmp_path, change):
    project = copy_run(finished_run, tmp_path)
    (project / "change.yaml").write_text(change + "\n")
    result = run_snakemake(project, *quick_args("-n", *FINAL), "change.yaml")
    assert planned_jobs(result) == {}, result.stdout[-3000:]


def test_more_seeds_train_and_evaluate_only_the_new_seeds(finished_run, tmp_path):
    project = copy_run(finished_run, tmp_path)
    (project / "change.yaml").write_text("train: {seeds: 3}\n")
    result = run_snakemake(project, *quick_args("-n", *FINAL), "change.yaml")
    assert planned_jobs(result) == {
        "train_adapter_seed": 2,
        "evaluate_adapter_seed": 2,
        "report": 1,
        "summary": 1,
    }, result.stdout[-3000:]
    shell = [line for line in result.stdout.splitlines() if line.startswith("Shell command:")]
    commands = [line for line in shell if "scripts/train_adapter.py" in line]
    seeds = sorted(int(re.search(r"--seed (\d+)", line).group(1)) for line in commands)
    assert seeds == [43, 44], commands
    assert all("--output models/medical/seeds/" in line for line in commands)
    evaluations = [line for line in shell if "scripts/evaluate_adapter.py" in line]
    assert len(evaluations) == 2 and all("--bootstrap 0" in line for line in evaluations), evaluations
    report = next(line for line in shell if "scripts/make_report.py" in line)
    assert "results/medical/seeds/43/metrics.json results/medical/seeds/44/metrics.json" in report


def test_editing_a_library_module_reruns_the_steps_that_import_it(finished_run, tmp_path):
    project = copy_run(finished_run, tmp_path)
    module = project / "scripts" / "cache_embed" / "generate" / "structure_generator.py"
    module.write_text(module.read_text() + "\n# an edit\n")
    result = run_snakemake(project, *quick_args("-n", *FINAL))
    assert set(planned_jobs(result)) == AFTER_GENERATION


def test_editing_a_script_reruns_its_rule_onward(finished_run, tmp_path):
    project = copy_run(finished_run, tmp_path)
    script = project / "scripts" / "split_queries.py"
    script.write_text(script.read_text() + "\n# an edit\n")
    result = run_snakemake(project, *quick_args("-n", *FINAL))
    assert set(planned_jobs(result)) == AFTER_SPLIT
    split_job = re.search(r"^rule split_queries:\n(.*?)^Shell command", result.stdout, re.MULTILINE | re.DOTALL)
    assert split_job and "scripts/split_queries.py" in split_job.group(1).split("reason:", 1)[1], result.stdout[-3000:]


@pytest.mark.parametrize("gpus", [4, 2])
def test_tensor_parallel_is_the_gpu_count_the_job_gets(project, gpus):
    """The rule asks for generate.vllm.gpus; overriding the job's GPUs (as a profile or the command
    line may) changes the tensor-parallel size with it, so the two cannot disagree."""
    (project / "vllm.yaml").write_text("generate: {backend: vllm, vllm: {gpus: 4}}\n")
    result = run_snakemake(
        project,
        "-n",
        "-p",
        "results/medical/triplets/train.jsonl",
        "--profile",
        "profiles/local",
        "--set-resources",
        f"generate_triplets:gpu={gpus}",
        "--configfile",
        "config/config.yaml",
        "config/local.yaml",
        "vllm.yaml",
    )
    jobs = re.findall(r"^rule generate_triplets:\n(.*?^Shell command:.*?$)", result.stdout, re.MULTILINE | re.DOTALL)
    assert len(jobs) == 2, result.stdout[-3000:]  # generate.shards: 2 in config/local.yaml
    for job in jobs:
        assert re.search(rf"resources: .*\bgpu={gpus}\b", job), job
        assert f"--tensor-parallel {gpus} " in job and "--backend vllm" in job
