"""Which settings reach each step (cache_embed.settings.step_settings): exactly those that can change its output.

The rerun tests in test_pipeline_e2e.py check this through Snakemake on a finished structure-backend
run; here every backend is checked directly on the flags the rules pass, which are what Snakemake
records (one canonical string per rule)."""

from __future__ import annotations

import copy
import shlex

import pytest

from cache_embed.settings import step_settings
from conftest import workflow_config

BACKENDS = ("structure", "vllm", "openai")
# Per backend: settings it never reads (another backend's, or operational) -> must not change its flags.
UNUSED = {
    "structure": [
        ("generate", "vllm", "model"),
        ("generate", "vllm", "gpus"),
        ("generate", "openai", "timeout_s"),
        ("generate", "openai", "base_url"),
        ("generate", "sampling", "temperature"),
        ("generate", "batch_size"),
        ("generate", "max_retries"),
    ],
    "vllm": [
        ("generate", "openai", "model"),
        ("generate", "openai", "base_url"),
        ("generate", "openai", "timeout_s"),
        ("generate", "openai", "concurrency"),
        ("generate", "openai", "retries"),
        ("generate", "structure", "max_synonym_words"),
        ("generate", "vllm", "gpus"),
        ("generate", "vllm", "gpu_memory_utilization"),
    ],
    "openai": [
        ("generate", "vllm", "model"),
        ("generate", "vllm", "revision"),
        ("generate", "vllm", "dtype"),
        ("generate", "structure", "max_synonym_words"),
        ("generate", "openai", "timeout_s"),
        ("generate", "openai", "concurrency"),
        ("generate", "openai", "retries"),
        ("generate", "openai", "api_key_env"),
    ],
}
# Per backend: settings it does read -> must change its flags.
USED = {
    "structure": [("generate", "seed"), ("generate", "paraphrases"), ("generate", "structure", "max_synonym_words")],
    "vllm": [
        ("generate", "vllm", "model"),
        ("generate", "vllm", "revision"),
        ("generate", "sampling", "temperature"),
        ("generate", "batch_size"),
        ("generate", "max_retries"),
    ],
    "openai": [("generate", "openai", "model"), ("generate", "openai", "base_url"), ("generate", "sampling", "top_p")],
}


def changed(config: dict, path: tuple) -> dict:
    config = copy.deepcopy(config)
    node = config
    for key in path[:-1]:
        node = node[key]
    old = node[path[-1]]
    node[path[-1]] = (
        (not old) if isinstance(old, bool) else (old * 2 + 1 if isinstance(old, int | float) else f"{old}-x")
    )
    return config


@pytest.mark.parametrize("backend", BACKENDS)
def test_generation_flags_hold_the_active_backends_settings_only(backend):
    config = workflow_config(generate={"backend": backend})
    flags = step_settings.cli_flags(step_settings.generate(config, "medical"))
    assert f"--backend {backend}" in flags
    for path in UNUSED[backend]:
        assert step_settings.cli_flags(step_settings.generate(changed(config, path), "medical")) == flags, path
    for path in USED[backend]:
        assert step_settings.cli_flags(step_settings.generate(changed(config, path), "medical")) != flags, path


def test_tensor_parallel_is_the_jobs_gpu_count_not_a_setting():
    config = workflow_config(generate={"backend": "vllm", "vllm": {"gpus": 4}})
    assert step_settings.generate_runtime_options(config, "medical", 2)["tensor-parallel"] == 2
    assert step_settings.generate_runtime_options(config, "medical", 0)["tensor-parallel"] == 1
    assert "tensor-parallel" not in step_settings.generate(config, "medical")


def test_every_training_setting_is_named_so_equal_values_do_not_hide_a_change():
    config = workflow_config()
    flags = step_settings.cli_flags(step_settings.train(config, "medical"))
    # Two settings with equal values stay two named flags.
    assert config["train"]["warmup_ratio"] == config["train"]["lora"]["dropout"] == 0.1
    assert "--warmup-ratio 0.1" in flags and "--lora-dropout 0.1" in flags
    swapped = copy.deepcopy(config)
    swapped["train"]["warmup_ratio"], swapped["train"]["weight_decay"] = (
        config["train"]["weight_decay"],
        config["train"]["warmup_ratio"],
    )
    assert step_settings.cli_flags(step_settings.train(swapped, "medical")) != flags
    for key in ("gpus", "runtime", "merge_atol"):
        assert key.replace("_", "-") not in flags


def test_options_of_training_features_that_are_off_reach_no_flag():
    """Mining, the contrastive stage, hardness and extra directions pass their options only when on;
    mining also needs the definition of the same question, whatever the checkpoint metric."""
    config = workflow_config(train={"best_metric": "accuracy", "mined_negatives": {"count": 0}})
    flags = step_settings.cli_flags(step_settings.train(config, "medical"))
    for path in [
        ("train", "mined_negatives", "range_max"),
        ("train", "mined_negatives", "range_min"),
        ("train", "contrastive", "margin"),
        ("train", "hardness", "strength"),
    ]:
        assert step_settings.cli_flags(step_settings.train(changed(config, path), "medical")) == flags, path
    assert "--equivalence" not in flags and "--directions" not in flags
    mining = workflow_config(train={"best_metric": "accuracy", "mined_negatives": {"count": 2, "margin": 0.05}})
    mined = step_settings.cli_flags(step_settings.train(mining, "medical"))
    for flag in ("--mined-negatives 2", "--mine-range-max 20", "--mine-margin 0.05", "--equivalence medquad"):
        assert flag in mined
    stage = workflow_config(train={"contrastive": {"steps": 30}, "directions": ["query_to_doc", "doc_to_query"]})
    staged = step_settings.cli_flags(step_settings.train(stage, "medical"))
    assert "--contrastive-margin 0.5" in staged and "--contrastive-steps 30" in staged
    assert "--contrastive-lr" not in staged
    assert "--directions query_to_doc doc_to_query" in staged
    # Rebalancing question types changes only a subset: it needs max_examples, and 1 is no change.
    assert "--qtype-balance" not in flags
    every = workflow_config(train={"qtype_balance": 0.5, "max_examples": 0})
    assert step_settings.cli_flags(step_settings.train(every, "medical")) == step_settings.cli_flags(
        step_settings.train(workflow_config(), "medical")
    )
    subset = workflow_config(train={"qtype_balance": 0.5, "max_examples": 4800})
    assert "--qtype-balance 0.5" in step_settings.cli_flags(step_settings.train(subset, "medical"))


def test_cli_flags_are_sorted_quoted_and_lists_become_words():
    flags = step_settings.cli_flags({"b": "x y", "a": [1, "two"], "c": True, "d": False, "e": ""})
    assert flags == "--a 1 two --b 'x y' --c --no-d --e ''"
    assert shlex.split(flags) == step_settings.flag_list({"b": "x y", "a": [1, "two"], "c": True, "d": False, "e": ""})


def test_llm_library_defaults_agree_with_the_schema():
    """cache_embed.generate.llm_backends keeps defaults for direct use of the library; the workflow always passes
    every setting, but the two must not drift apart."""
    from cache_embed.generate.llm_backends import DEFAULT_SETTINGS

    generate = workflow_config()["generate"]
    schema_values = {
        "seed": generate["seed"],
        "batch_size": generate["batch_size"],
        "max_retries": generate["max_retries"],
        "temperature": generate["sampling"]["temperature"],
        "top_p": generate["sampling"]["top_p"],
        "max_tokens": generate["sampling"]["max_tokens"],
        "max_model_len": generate["vllm"]["max_model_len"],
        "gpu_memory_utilization": generate["vllm"]["gpu_memory_utilization"],
        "dtype": generate["vllm"]["dtype"],
        "base_url": generate["openai"]["base_url"],
        "api_key_env": generate["openai"]["api_key_env"],
        "concurrency": generate["openai"]["concurrency"],
        "timeout_s": generate["openai"]["timeout_s"],
        "retries": generate["openai"]["retries"],
    }
    assert {key: DEFAULT_SETTINGS[key] for key in schema_values} == schema_values
