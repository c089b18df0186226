"""results/<domain>/summary.md is rendered from the figures the run wrote, and the committed
reference page (docs/results-medical-local.md) is exactly what its committed extract renders:
no figure in it is typed by hand."""

from __future__ import annotations

import json
import re

import write_summary

from cache_embed.common.files import write_json
from cache_embed.report.summary import render_summary
from conftest import PROJECT_ROOT

REFERENCE = PROJECT_ROOT / "docs" / "results-medical-local"


def test_summary_of_a_real_evaluation_carries_its_figures(evaluated, tmp_path):
    metrics = json.loads((evaluated / "metrics.json").read_text(encoding="utf-8"))
    write_json(tmp_path / "effective_config.json", {"evaluate": {"max_wrong_share": 0.2}})
    argv = ["--domain", "medical", "--metrics", str(evaluated / "metrics.json")]
    argv += ["--effective-config", str(tmp_path / "effective_config.json")]
    assert (
        write_summary.main([*argv, "--output-md", str(tmp_path / "s.md"), "--output-json", str(tmp_path / "s.json")])
        == 0
    )
    page = (tmp_path / "s.md").read_text(encoding="utf-8")
    figures = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    assert render_summary(figures) == page
    # The extract holds the evaluation's own values, and the page shows them.
    rec = metrics["recommended_threshold"]
    assert figures["recommended_threshold"]["sizes"] == rec["sizes"]
    assert figures["test"]["adapter"]["roc_auc"] == metrics["test"]["adapter"]["roc_auc"]
    for size in rec["sizes"]:
        assert size["verdict"] in page
    assert (
        f"| roc_auc | {metrics['test']['base']['roc_auc']:.3f} | {metrics['test']['adapter']['roc_auc']:.3f} |" in page
    )
    run = figures["run"]
    assert re.fullmatch(r"[0-9a-f]{64}", run["config_sha256"]) and run["date"].endswith("UTC")
    assert "/" not in run["machine"] and f"`{run['commit']}`" in page
    assert "## The cache replayed through Milvus" not in page  # no replay in this run


def test_committed_reference_page_is_what_its_extract_renders():
    page = REFERENCE.with_suffix(".md").read_text(encoding="utf-8")
    figures = json.loads(REFERENCE.with_suffix(".json").read_text(encoding="utf-8"))
    assert render_summary(figures) == page
    # Every figure the README's deploy section points at is in the page: the deploy threshold at
    # each evaluated size, read back from the page's table.
    for size in figures["recommended_threshold"]["sizes"]:
        threshold = size["adapter"]["threshold"]
        shown = f"{threshold:.4f}" if threshold is not None else "none"
        assert re.search(rf"\| {re.escape(size['label'])} \| adapter \| {shown}", page), size["label"]


def test_readme_is_a_short_guide_that_links_the_results_and_the_decisions():
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 350
    assert "docs/results-medical-local.md" in text and "docs/decisions.md" in text
    # Measured shares live in the generated results page, not here: the only percentage the guide
    # names is the confidence level of the intervals.
    assert set(re.findall(r"\d+(?:\.\d+)?%", text)) == {"95%"}
