"""Router export on the metrics a real evaluation writes: the deploy folder loads with plain
sentence-transformers and reproduces base + adapter embeddings; the router fragment carries exactly
metrics.json's deploy threshold at the stated cache size; no threshold within budget is refused
(nothing written) unless allow_over_budget, which says so."""

from __future__ import annotations

import json
from pathlib import Path

import export_deploy
import merge_adapter
import numpy as np
import pytest
import yaml

from cache_embed.common.cli import PipelineError
from cache_embed.common.numbers import pct
from conftest import run_evaluation, step_argv

SENTENCES = [
    "What are the symptoms of Glaucoma ?",
    "how is type 2 diabetes treated",
    "Is Marfan syndrome inherited?",
    "What are the side effects of Pilocarpine?",
    "who should get the shingles vaccine",
]


@pytest.fixture(scope="session")
def adapter(random_lora_adapter) -> Path:
    return random_lora_adapter


def export(merged: Path, metrics: Path, output: Path, *extra: str) -> int:
    return export_deploy.main(
        [
            "--merged",
            str(merged),
            "--eval-metrics",
            str(metrics),
            "--output",
            str(output),
            "--domain",
            "medical",
            *step_argv("deploy", "medical"),
            "--router-category",
            "health",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def merged(tmp_path_factory, adapter, l6_model_path) -> Path:
    root = tmp_path_factory.mktemp("merged")
    argv = ["--base-model", l6_model_path, "--adapter", str(adapter), "--output", str(root / "merged")]
    assert merge_adapter.main([*argv, *step_argv("merge")]) == 0
    return root / "merged"


def met_size(metrics: dict) -> dict:
    """The first evaluated size at which the random adapter keeps the (20%) budget on validation."""
    met = [size for size in metrics["recommended_threshold"]["sizes"] if size["adapter"]["threshold"] is not None]
    assert met, "the real evaluation found no adapter threshold at any size; the deploy tests need one"
    return met[0]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, merged, evaluated):
    """The export of a real evaluation's metrics.json, at a size where the adapter keeps the bound."""
    root = tmp_path_factory.mktemp("deploy")
    metrics = json.loads((evaluated / "metrics.json").read_text(encoding="utf-8"))
    size = met_size(metrics)
    assert export(merged, evaluated / "metrics.json", root / "deploy", "--cache-size", str(size["cache_size"])) == 0
    return {"root": root, "metrics": metrics, "size": size}


@pytest.fixture(scope="module")
def over_budget(tmp_path_factory, real_test_triplets, real_val_triplets, adapter, l6_model_path, medquad_splits):
    """A real evaluation with a 1% budget: 48 test triplets cannot bound a wrong share that low (about
    300 served answers with none wrong are needed), so no threshold keeps it at any size."""
    return run_evaluation(
        tmp_path_factory.mktemp("eval-over-budget"),
        real_test_triplets,
        real_val_triplets,
        adapter,
        l6_model_path,
        medquad_splits,
        "--max-wrong-share",
        "0.01",
        "--bootstrap",
        "0",
        "--max-calibration-triplets",
        "40",
        "--cache-sizes",
        "test_cache",
        "--external",
    )


def test_exported_model_reproduces_base_plus_adapter_with_plain_sentence_transformers(deployed, adapter, l6_model_path):
    from sentence_transformers import SentenceTransformer

    folder = deployed["root"] / "deploy" / "model"
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert not (folder / "adapter_config.json").exists()
    plain = SentenceTransformer(str(folder), device="cpu")
    reference = SentenceTransformer(l6_model_path, device="cpu")
    base = reference.encode(SENTENCES, convert_to_numpy=True)
    reference.load_adapter(str(adapter))
    expected = reference.encode(SENTENCES, convert_to_numpy=True)
    got = plain.encode(SENTENCES, convert_to_numpy=True)
    assert np.max(np.abs(got - expected)) < 1e-5
    assert np.max(np.abs(expected - base)) > 1e-3  # the adapter does move the embeddings
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # the stated normalisation holds


def test_fragment_threshold_equals_metrics_and_points_at_the_model(deployed):
    root, size = deployed["root"], deployed["size"]
    text = (root / "deploy" / "semantic-router.yaml").read_text(encoding="utf-8")
    fragment = yaml.safe_load(text)
    plugins = [
        plugin
        for decision in fragment["routing"]["decisions"]
        for plugin in decision["plugins"]
        if plugin["type"] == "response_cache"
    ]
    assert len(plugins) == 1
    threshold = plugins[0]["configuration"]["semantic"]["similarity_threshold"]
    assert threshold == size["adapter"]["threshold"]
    decision = fragment["routing"]["decisions"][0]
    assert decision["rules"]["conditions"] == [{"type": "domain", "name": "health"}]
    semantic = fragment["global"]["model_catalog"]["embeddings"]["semantic"]
    assert semantic["bert_model_path"] == str(root / "deploy" / "model")
    cache = fragment["global"]["stores"]["response_cache"]
    assert cache["embedding_model"] == "bert" and cache["milvus"]["collection"]["vector_field"]["dimension"] == 384
    assert cache["milvus"]["collection"]["vector_field"]["metric_type"] == "COSINE"
    # The comment states the cache size the threshold holds for and the measured test figures.
    test = size["adapter"]["test"]
    assert f"deploy threshold for a cache of\n# {size['label']} questions" in text
    assert f"wrong share among served answers {pct(test['wrong_share'])}" in text
    assert f"({test['reading']}), repeats answered {pct(test['repeat_hit_rate'])}" in text
    assert "keeps the 20.0% wrong-share budget (95% upper bound) on validation at this size" in text
    assert "OVER BUDGET" not in text
    assert "v0.3" in text and "006629633a0330574286a28e53e1d88eca812deb" in text


def test_deploy_info_states_pooling_normalisation_threshold_and_size(deployed):
    info = json.loads((deployed["root"] / "deploy" / "deploy_info.json").read_text(encoding="utf-8"))
    assert info["threshold"] == deployed["size"]["adapter"]["threshold"]
    assert info["cache_size"] == deployed["size"]["cache_size"] and info["over_budget"] is False
    assert info["over_budget_statement"] is None
    assert info["measured"]["test_wrong_share"] == deployed["size"]["adapter"]["test"]["wrong_share"]
    assert info["model"]["pooling"] == "mean" and info["model"]["normalize"] is True
    assert info["model"]["dimension"] == 384 and info["model"]["modules"] == ["Transformer", "Pooling", "Normalize"]
    assert "model.safetensors" in info["model"]["files_sha256"]
    assert info["router_config"]["confirmed_against_running_router"] is False


def test_no_threshold_within_budget_refuses_with_figures_and_writes_nothing(merged, over_budget, tmp_path):
    metrics = json.loads((over_budget / "metrics.json").read_text(encoding="utf-8"))
    size = metrics["recommended_threshold"]["sizes"][0]
    assert size["adapter"]["threshold"] is None and size["base"]["threshold"] is None
    with pytest.raises(PipelineError) as raised:
        export(merged, over_budget / "metrics.json", tmp_path / "deploy", "--cache-size", "test_cache")
    message = str(raised.value)
    assert f"no adapter threshold keeps the 1.0% wrong-share budget on validation at {size['label']}" in message
    closest = size["adapter"]
    assert f"the closest threshold, {closest['evaluated_at']:.4f}," in message
    assert f"upper bound of {pct(closest['val']['wrong_share_upper'])} on validation" in message
    for option in ("evaluate.max_wrong_share", "deploy.cache_size", "the base model", "deploy.allow_over_budget"):
        assert option in message
    assert not (tmp_path / "deploy").exists() and not list(tmp_path.glob(".deploy*"))


def test_allow_over_budget_exports_the_closest_threshold_and_says_so(merged, over_budget, tmp_path):
    metrics = json.loads((over_budget / "metrics.json").read_text(encoding="utf-8"))
    closest = metrics["recommended_threshold"]["sizes"][0]["adapter"]["evaluated_at"]
    assert (
        export(
            merged,
            over_budget / "metrics.json",
            tmp_path / "deploy",
            "--cache-size",
            "test_cache",
            "--allow-over-budget",
        )
        == 0
    )
    text = (tmp_path / "deploy" / "semantic-router.yaml").read_text(encoding="utf-8")
    fragment = yaml.safe_load(text)
    plugin = fragment["routing"]["decisions"][0]["plugins"][0]
    assert plugin["configuration"]["semantic"]["similarity_threshold"] == closest
    assert "# OVER BUDGET: no threshold keeps the 1.0% wrong-share budget on validation" in text
    info = json.loads((tmp_path / "deploy" / "deploy_info.json").read_text(encoding="utf-8"))
    assert info["over_budget"] is True and info["threshold"] == closest
    assert info["over_budget_statement"].startswith("OVER BUDGET: no threshold keeps the 1.0% wrong-share budget")


def test_a_size_the_evaluation_did_not_run_is_named(merged, evaluated, tmp_path):
    with pytest.raises(PipelineError, match=r"cache size '12345' was not evaluated \(evaluated: "):
        export(merged, evaluated / "metrics.json", tmp_path / "deploy", "--cache-size", "12345")
    assert not (tmp_path / "deploy").exists()


def test_an_adapter_folder_is_refused_as_a_merged_model(adapter, evaluated, tmp_path):
    with pytest.raises(PipelineError, match="not a plain sentence-transformers folder|PEFT adapter"):
        export(
            adapter,
            evaluated / "metrics.json",
            tmp_path / "deploy",
            "--cache-size",
            "test_cache",
            "--allow-over-budget",
        )
