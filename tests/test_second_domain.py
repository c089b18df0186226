"""A second domain end to end: a query file written for this project, the openai backend against the
canned OpenAI-protocol test server (the structure backend needs MedQuAD's annotations, and no real
LLM is reachable here), real training of the L6 model, evaluation and report. Adding the domain
needs config and a prompt spec only."""

from __future__ import annotations

import json
import shutil

from openai_test_server import CannedServer

from cache_embed.common.files import read_jsonl
from conftest import PROJECT_ROOT, copy_project, run_snakemake

QUERIES = PROJECT_ROOT / "tests" / "data" / "programming_queries.txt"


def test_programming_domain_end_to_end_with_canned_test_server(tmp_path):
    project = copy_project(tmp_path / "project")
    shutil.copy(QUERIES, project / "programming_queries.txt")
    with CannedServer(delay_s=0.0) as server:
        (project / "domain.yaml").write_text(
            "domains:\n"
            "  programming:\n"
            "    queries: programming_queries.txt\n"
            "    spec: resources/domains/programming.yaml\n"
            "    backend: openai\n"
            "generate:\n"
            f"  openai: {{base_url: '{server.base_url}', model: canned-test-model, concurrency: 4}}\n"
            "train: {max_examples: 200, max_val_examples: 30, eval_steps: 5, batch_size: 16}\n"
            "evaluate: {bootstrap: 50}\n"
        )
        targets = ["models/programming/adapter", "results/programming/report.html"]
        configs = ["--configfile", "config/config.yaml", "config/local.yaml", "domain.yaml"]
        run_snakemake(project, *targets, "--profile", "profiles/local", *configs, timeout=1200)
        # The domain's prompt spec reached the LLM: its role is the system message of every request.
        spec_role = "You write evaluation data for a semantic cache in front of a programming"
        assert server.requests and all(spec_role in r["body"]["messages"][0]["content"] for r in server.requests)
    domain = project / "results" / "programming"
    queries = list(read_jsonl(domain / "queries.jsonl"))
    assert len(queries) == 80
    stats = json.loads((domain / "splits" / "stats.json").read_text())
    assert sum(stats["sizes"].values()) == 80 and stats["focus_overlap_total"] == 0
    triplets = list(read_jsonl(domain / "triplets" / "train.jsonl"))
    assert triplets and {t["backend"] for t in triplets} == {"openai"}
    assert {t["model"] for t in triplets} == {"canned-test-model"}
    assert {t["domain"] for t in triplets} == {"programming"}
    metrics = json.loads((domain / "eval" / "metrics.json").read_text())
    assert metrics["test"]["base"]["triplets"] > 0
    assert (project / "models" / "programming" / "adapter" / "adapter_model.safetensors").exists()
    assert "programming" in (domain / "report.html").read_text()
    # MedQuAD was never touched: the other domain's inputs are not needed for this one.
    assert not (project / "results" / "medical").exists()
