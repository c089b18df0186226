"""results/<domain>/summary.md: the run's answer in one page, written by the run.

`summary_figures` extracts, from metrics.json (and the replay's metrics.json where the run has it),
exactly the figures the page shows, with where and when they were measured; `render_summary` turns
that extract into Markdown with the same section renderers as metrics.md and the replay's page.
The extract is small and holds no data, so a reference run's page can be committed beside it
(docs/results-<domain>-<profile>.md and .json) and a test can check that the page is what the
extract renders: no figure in it is typed by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from datetime import UTC, datetime

from cache_embed.deploy.replay_report import render_markdown as render_replay
from cache_embed.evaluate.markdown import answer_section, breakdown_section, pair_section, phrasing_section

TEST_KEYS = ("roc_auc", "pr_auc", "triplet_accuracy", "mean_pos", "mean_neg", "margin", "at_precision")


def run_facts(effective_config: dict, project_dir: str = ".") -> dict:
    """When, from which commit, with which settings (a digest of the effective config) and on what
    kind of machine the run was made; no host name or path."""
    try:
        commit = subprocess.run(
            ["git", "-C", project_dir, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown (not a git checkout)"
    canonical = json.dumps(effective_config, sort_keys=True, separators=(",", ":"))
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "config_sha256": hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }


def _drop(block, keys: set[str]):
    """A copy of a nested JSON value without the named keys (sweeps the page does not show)."""
    if isinstance(block, dict):
        return {key: _drop(value, keys) for key, value in block.items() if key not in keys}
    if isinstance(block, list):
        return [_drop(value, keys) for value in block]
    return block


def summary_figures(domain: str, metrics: dict, run: dict, replay: dict | None = None) -> dict:
    """The figures summary.md shows, taken from the evaluation's (and the replay's) metrics.json."""
    test = metrics["test"]
    return {
        "domain": domain,
        "run": run,
        "recommended_threshold": {
            key: value for key, value in metrics["recommended_threshold"].items() if key != "pair_threshold"
        },
        "test": {
            **{
                model: {
                    **{key: test[model][key] for key in TEST_KEYS},
                    "cache": {
                        "rank1_correct": test[model]["cache"]["rank1_correct"],
                        "p_chr": {"auc": test[model]["cache"]["p_chr"]["auc"]},
                    },
                }
                for model in ("base", "adapter")
            },
            "delta": test["delta"],
            "ci": test["ci"],
            "by_positive_kind": test["by_positive_kind"],
        },
        "counts": {key: metrics["counts"][key] for key in ("triplets", "anchors", "focus_groups")},
        "external": {
            name: {key: entry[key] for key in ("pairs", "phrasing", "by_kind") if key in entry}
            for name, entry in (metrics.get("external") or {}).items()
        },
        "replay": None if replay is None else _drop(replay, {"sweep", "model_path"}),
    }


def render_summary(figures: dict) -> str:
    run = figures["run"]
    lines = [
        f"# Results: {figures['domain']}",
        "",
        f"Written by the run (rule `summary`) on {run['date']} from commit `{run['commit']}`, settings digest"
        f" `{run['config_sha256'][:16]}` (sha256 of the effective config), on {run['machine']}. Every figure below"
        " is read from the run's metrics.json (and the replay's); nothing is typed by hand.",
        "",
    ]
    lines += answer_section(figures)
    lines += pair_section(figures)
    lines += breakdown_section(figures["test"], "by_positive_kind", "Repeats by paraphrase kind (the cache's rank-1)")
    lines += phrasing_section(figures)
    if figures.get("replay"):
        replay = render_replay(figures["replay"]).split("\n", 2)[2]  # its own title dropped
        lines += ["## The cache replayed through Milvus", "", replay]
    return "\n".join(lines).rstrip() + "\n"
