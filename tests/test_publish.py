"""scripts/publish_adapter.py and the publish_adapter rule: S3 uploads against a real local S3 API
(moto's server on 127.0.0.1), the Hub path without any network (dry run, missing token, and the
upload calls recorded by a fake HfApi client, the Hub being unreachable here)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import publish_adapter
import pytest
from local_s3 import moto_server

from cache_embed.common.cli import PipelineError, run_main
from conftest import copy_project, run_snakemake


@pytest.fixture(scope="module")
def real_adapter(tmp_path_factory, l6_model_path) -> Path:
    """A real (untrained) LoRA adapter of the packaged L6 model, as PEFT saves it, plus a model card
    and the hidden timestamp file Snakemake puts into directory outputs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    folder = tmp_path_factory.mktemp("adapter") / "adapter"
    model = get_peft_model(
        AutoModel.from_pretrained(l6_model_path), LoraConfig(r=8, lora_alpha=32, target_modules=["query", "value"])
    )
    model.save_pretrained(str(folder))
    (folder / "README.md").write_text("# medical cache adapter\n", encoding="utf-8")
    (folder / ".snakemake_timestamp").write_text("", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


def expected_files(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in folder.rglob("*")
        if path.is_file() and not path.name.startswith(".")
    }


def use_s3(monkeypatch, server, bucket: str):
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    server.client().create_bucket(Bucket=bucket)


def test_s3_upload_against_local_s3_server(real_adapter, s3, tmp_path, monkeypatch):
    use_s3(monkeypatch, s3, "adapters")
    receipt = tmp_path / "receipt.json"
    assert (
        publish_adapter.main(
            [
                "--adapter",
                str(real_adapter),
                "--receipt",
                str(receipt),
                "--domain",
                "medical",
                "--s3-prefix",
                "s3://adapters/runs/medical/adapter",
            ]
        )
        == 0
    )
    expected = expected_files(real_adapter)
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(expected)
    client = s3.client()
    listed = client.list_objects_v2(Bucket="adapters", Prefix="runs/medical/adapter/")["Contents"]
    stored = {}
    for entry in listed:
        body = client.get_object(Bucket="adapters", Key=entry["Key"])
        data = body["Body"].read()
        stored[entry["Key"].removeprefix("runs/medical/adapter/")] = hashlib.sha256(data).hexdigest()
        assert body["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert stored == expected
    record = json.loads(receipt.read_text())
    assert record["dry_run"] is False and record["hub"] is None
    assert {item["path"]: item["sha256"] for item in record["files"]} == expected
    assert record["skipped"] == [{"path": ".snakemake_timestamp", "reason": "hidden file"}]
    assert record["s3"]["bucket"] == "adapters" and len(record["s3"]["keys"]) == len(expected)


def test_s3_dry_run_lists_and_uploads_nothing(real_adapter, s3, tmp_path, monkeypatch, caplog):
    use_s3(monkeypatch, s3, "dry-bucket")
    receipt = tmp_path / "receipt.json"
    caplog.set_level("INFO")
    assert (
        publish_adapter.main(
            [
                "--adapter",
                str(real_adapter),
                "--receipt",
                str(receipt),
                "--domain",
                "medical",
                "--s3-prefix",
                "s3://dry-bucket/x",
                "--dry-run",
            ]
        )
        == 0
    )
    assert s3.client().list_objects_v2(Bucket="dry-bucket").get("KeyCount", 0) == 0
    record = json.loads(receipt.read_text())
    weights = next(item for item in record["files"] if item["path"] == "adapter_model.safetensors")
    assert weights["bytes"] == (real_adapter / "adapter_model.safetensors").stat().st_size
    assert (
        f"would upload adapter_model.safetensors ({weights['bytes']} bytes, sha256 {weights['sha256']})" in caplog.text
    )


def test_s3_without_credentials_fails_clearly(real_adapter, s3, tmp_path, monkeypatch, capsys):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint_url)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code = run_main(
        publish_adapter.main,
        [
            "--adapter",
            str(real_adapter),
            "--receipt",
            str(tmp_path / "r.json"),
            "--domain",
            "medical",
            "--s3-prefix",
            "s3://adapters/nocreds",
        ],
    )
    assert code == 1
    assert "no AWS credentials" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_hub_dry_run_lists_files_without_token_or_network(real_adapter, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    receipt = tmp_path / "receipt.json"
    assert (
        publish_adapter.main(
            [
                "--adapter",
                str(real_adapter),
                "--receipt",
                str(receipt),
                "--domain",
                "medical",
                "--hub-repo",
                "example-org/minilm-cache-medical",
                "--dry-run",
            ]
        )
        == 0
    )
    record = json.loads(receipt.read_text())
    assert record["hub"]["repo"] == "example-org/minilm-cache-medical"
    assert record["hub"]["files"] == sorted(expected_files(real_adapter))
    assert record["hub"]["token_present"] is False


def test_hub_without_token_is_a_clear_error(real_adapter, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    code = run_main(
        publish_adapter.main,
        [
            "--adapter",
            str(real_adapter),
            "--receipt",
            str(tmp_path / "r.json"),
            "--domain",
            "medical",
            "--hub-repo",
            "example-org/minilm-cache-medical",
        ],
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "$HF_TOKEN is empty" in err and "publish.hub_repo" in err
    assert not (tmp_path / "r.json").exists()


def test_hub_upload_calls_with_fake_hfapi_client(real_adapter, tmp_path, monkeypatch, caplog):
    import huggingface_hub

    secret = "hf_secretTOKENvalue123"
    calls = []

    class FakeHfApi:  # the Hub is unreachable here: record what would be sent
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def create_commit(self, repo_id, operations, **kwargs):
            calls.append(("create_commit", repo_id, [op.path_in_repo for op in operations], kwargs))

            class Info:
                commit_url = f"https://huggingface.co/{repo_id}/commit/abc123"
                oid = "abc123"

            return Info()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setenv("HF_TOKEN", secret)
    caplog.set_level("DEBUG")
    receipt = tmp_path / "receipt.json"
    assert (
        publish_adapter.main(
            [
                "--adapter",
                str(real_adapter),
                "--receipt",
                str(receipt),
                "--domain",
                "medical",
                "--hub-repo",
                "example-org/minilm-cache-medical",
                "--verbose",
            ]
        )
        == 0
    )
    assert calls[0] == ("init", secret)
    assert calls[1] == (
        "create_repo",
        "example-org/minilm-cache-medical",
        {"repo_type": "model", "private": True, "exist_ok": True},
    )
    assert calls[2][2] == sorted(expected_files(real_adapter))
    assert secret not in caplog.text and secret not in receipt.read_text()
    assert json.loads(receipt.read_text())["hub"]["revision"] == "abc123"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "nothing to publish to"),
        (["--s3-prefix", "https://bucket/x"], "is not an S3 URL"),
        (["--hub-repo", "no-slash", "--dry-run"], "is not a Hub repo id"),
    ],
)
def test_bad_settings_are_clear_errors(real_adapter, tmp_path, arguments, message):
    with pytest.raises(PipelineError, match=message):
        publish_adapter.main(
            ["--adapter", str(real_adapter), "--receipt", str(tmp_path / "r.json"), "--domain", "medical", *arguments]
        )


def test_folder_without_adapter_config_is_refused(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "weights.bin").write_bytes(b"x")
    with pytest.raises(PipelineError, match="no adapter_config.json"):
        publish_adapter.main(
            [
                "--adapter",
                str(tmp_path / "adapter"),
                "--receipt",
                str(tmp_path / "r.json"),
                "--domain",
                "medical",
                "--s3-prefix",
                "s3://bucket/p",
                "--dry-run",
            ]
        )


def test_publish_rule_uploads_to_local_s3(real_adapter, s3, tmp_path, monkeypatch):
    """The opt-in target through the real snakemake CLI, with the adapter already in place."""
    project = copy_project(tmp_path / "project")
    use_s3(monkeypatch, s3, "rule-bucket")
    shutil.copytree(real_adapter, project / "models" / "medical" / "adapter")
    (project / "publish.yaml").write_text(
        "publish:\n  s3_prefix: s3://rule-bucket/runs\n  hub_repo: ''\n", encoding="utf-8"
    )
    run_snakemake(
        project,
        "results/medical/publish/receipt.json",
        "--configfile",
        "publish.yaml",
        "--allowed-rules",
        "publish_adapter",
    )
    keys = {entry["Key"] for entry in s3.client().list_objects_v2(Bucket="rule-bucket")["Contents"]}
    assert keys == {f"runs/medical/adapter/{name}" for name in expected_files(real_adapter)}
    assert json.loads((project / "results/medical/publish/receipt.json").read_text())["domain"] == "medical"
