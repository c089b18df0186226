"""Router export: the deploy folder loads with plain sentence-transformers and reproduces base +
adapter embeddings; the router fragment carries exactly metrics.json's deploy threshold."""

from __future__ import annotations

import json
from pathlib import Path

import export_deploy
import merge_adapter
import numpy as np
import pytest
import yaml

from cache_embed.common.cli import PipelineError
from cache_embed.common.files import write_json
from conftest import step_argv

SENTENCES = [
    "What are the symptoms of Glaucoma ?",
    "how is type 2 diabetes treated",
    "Is Marfan syndrome inherited?",
    "What are the side effects of Pilocarpine?",
    "who should get the shingles vaccine",
]
THRESHOLD = 0.8123456


@pytest.fixture(scope="session")
def adapter(random_lora_adapter) -> Path:
    return random_lora_adapter


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, adapter, l6_model_path):
    root = tmp_path_factory.mktemp("deploy")
    assert (
        merge_adapter.main(
            [
                "--base-model",
                l6_model_path,
                "--adapter",
                str(adapter),
                "--output",
                str(root / "merged"),
                *step_argv("merge"),
            ]
        )
        == 0
    )
    metrics = {
        "recommended_threshold": {
            "adapter": {"threshold": THRESHOLD},
            "base": {"threshold": 0.9},
            "cache": {"adapter": {"hit_precision": 0.962, "hit_rate": 0.4375}},
        }
    }
    write_json(root / "metrics.json", metrics)
    assert (
        export_deploy.main(
            [
                "--merged",
                str(root / "merged"),
                "--eval-metrics",
                str(root / "metrics.json"),
                "--output",
                str(root / "deploy"),
                "--domain",
                "medical",
                *step_argv("deploy", "medical"),
                "--router-category",
                "health",
            ]
        )
        == 0
    )
    return root


def test_exported_model_reproduces_base_plus_adapter_with_plain_sentence_transformers(deployed, adapter, l6_model_path):
    from sentence_transformers import SentenceTransformer

    folder = deployed / "deploy" / "model"
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
    metrics = json.loads((deployed / "metrics.json").read_text(encoding="utf-8"))
    text = (deployed / "deploy" / "semantic-router.yaml").read_text(encoding="utf-8")
    fragment = yaml.safe_load(text)
    plugins = [
        plugin
        for decision in fragment["routing"]["decisions"]
        for plugin in decision["plugins"]
        if plugin["type"] == "response_cache"
    ]
    assert len(plugins) == 1
    threshold = plugins[0]["configuration"]["semantic"]["similarity_threshold"]
    assert threshold == metrics["recommended_threshold"]["adapter"]["threshold"]
    decision = fragment["routing"]["decisions"][0]
    assert decision["rules"]["conditions"] == [{"type": "domain", "name": "health"}]
    semantic = fragment["global"]["model_catalog"]["embeddings"]["semantic"]
    assert semantic["bert_model_path"] == str(deployed / "deploy" / "model")
    cache = fragment["global"]["stores"]["response_cache"]
    assert cache["embedding_model"] == "bert" and cache["milvus"]["collection"]["vector_field"]["dimension"] == 384
    assert cache["milvus"]["collection"]["vector_field"]["metric_type"] == "COSINE"
    # The comment cites the measured figures (1 - hit_precision, hit_rate) and names the config version.
    assert "wrong share among served hits 3.8%" in text and "repeat hit rate 43.8%" in text
    assert "v0.3" in text and "006629633a0330574286a28e53e1d88eca812deb" in text


def test_deploy_info_states_pooling_normalisation_and_threshold(deployed):
    info = json.loads((deployed / "deploy" / "deploy_info.json").read_text(encoding="utf-8"))
    assert info["threshold"] == THRESHOLD
    assert info["model"]["pooling"] == "mean" and info["model"]["normalize"] is True
    assert info["model"]["dimension"] == 384 and info["model"]["modules"] == ["Transformer", "Pooling", "Normalize"]
    assert "model.safetensors" in info["model"]["files_sha256"]
    assert info["router_config"]["confirmed_against_running_router"] is False


def test_issue_11_figures_are_preferred_when_present():
    metrics = {
        "recommended_threshold": {
            "adapter": {
                "threshold": 0.8,
                "test": {
                    "wrong_share": {"value": 0.031, "low": 0.02, "high": 0.045},
                    "repeat_hit_rate": {"value": 0.52},
                },
            },
            "cache": {"adapter": {"hit_precision": 0.5, "hit_rate": 0.9}},
        }
    }
    figures = export_deploy.measured_figures(metrics)
    assert figures["wrong_share"] == 0.031 and figures["repeat_hit_rate"] == 0.52
    assert figures["source"] == "recommended_threshold.adapter.test"


def test_missing_threshold_is_a_clear_error_and_writes_nothing(deployed, tmp_path):
    write_json(tmp_path / "metrics.json", {"recommended_threshold": {"adapter": None}})
    with pytest.raises(PipelineError, match="recommended_threshold.adapter.threshold is missing"):
        export_deploy.main(
            [
                "--merged",
                str(deployed / "merged"),
                "--eval-metrics",
                str(tmp_path / "metrics.json"),
                "--output",
                str(tmp_path / "deploy"),
                *step_argv("deploy", "medical"),
                "--router-category",
                "health",
            ]
        )
    assert not (tmp_path / "deploy").exists()


def test_an_adapter_folder_is_refused_as_a_merged_model(adapter, tmp_path):
    write_json(tmp_path / "metrics.json", {"recommended_threshold": {"adapter": {"threshold": 0.8}}})
    with pytest.raises(PipelineError, match="not a plain sentence-transformers folder|PEFT adapter"):
        export_deploy.main(
            [
                "--merged",
                str(adapter),
                "--eval-metrics",
                str(tmp_path / "metrics.json"),
                "--output",
                str(tmp_path / "deploy"),
                *step_argv("deploy", "medical"),
                "--router-category",
                "health",
            ]
        )
