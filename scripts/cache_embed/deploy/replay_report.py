"""The replay's outputs for readers: one sentence per model, the markdown table and the plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cache_embed.common.numbers import fmt, interval, pct

MODELS = ("base", "adapter")
READ_AS = {"own": "its own size's", "smallest": "the smallest size's"}


def _figures(block: dict, name: str) -> dict | None:
    return block["index"].get("FLAT", {}).get("at_threshold", {}).get(name)


def trend_sentence(metrics: dict, model: str) -> str:
    """How the model's wrong share at the deploy thresholds moves as the cache grows (FLAT search)."""
    block = metrics["results"].get(model)
    if not block:
        return ""
    largest = metrics["sizes"][-1]
    at = block["sizes"][largest["name"]]
    own, small = _figures(at, "own"), _figures(at, "smallest")
    if own is None:
        return (
            f"The {model} model has no threshold that keeps the bound at the evaluated size used for"
            f" {largest['entries']:,} cached questions; see the sweep."
        )
    text = (
        f"At {largest['entries']:,} cached questions, the {model} model at the threshold chosen for"
        f" {own['calibrated_for']:,} ({fmt(own['threshold'], 3)}) serves {pct(own['wrong_share'])}"
        f" {interval(own['wrong_share_interval']['low'], own['wrong_share_interval']['high'], pct)} wrong answers"
        f" ({own['reading']} against the {pct(metrics['max_wrong_share'])} budget) and answers"
        f" {pct(own['repeat_hit_rate'])} of repeats."
    )
    if small is not None:
        text += (
            f" At the threshold chosen for {small['calibrated_for']:,} questions ({fmt(small['threshold'], 3)}) it"
            f" would serve {pct(small['wrong_share'])}"
            f" {interval(small['wrong_share_interval']['low'], small['wrong_share_interval']['high'], pct)} wrong"
            f" answers ({small['reading']}) and answer {pct(small['repeat_hit_rate'])} of repeats."
        )
    return text


def render_markdown(metrics: dict) -> str:
    lines = [f"# Cache replay through Milvus: {metrics['domain']}", ""]
    lines.append(
        f"Milvus Lite (pymilvus {metrics['milvus']['pymilvus']}, milvus-lite {metrics['milvus']['milvus-lite']}), "
        f"metric COSINE; {metrics['lookups']['repeats']:,} repeats (test paraphrases) and "
        f"{metrics['lookups']['novel']:,} novel questions (test negatives, their source and its equivalents left "
        f"out); wrong share for a traffic mix of {pct(metrics['repeat_share'], 0)} repeats, with 95% intervals over"
        " focus groups. The novel questions are hard negatives only, so the wrong share is a stress figure. Each"
        " cache size is read at the threshold the evaluation chose for it (past the largest evaluated size, the"
        " largest one's) and at the smallest size's. The last column is the threshold the one rule takes on the"
        " replay's own lookups: descriptive (what would have held here), not a validated choice."
    )
    lines.append("")
    for model in MODELS:
        if model in metrics["results"]:
            lines += [trend_sentence(metrics, model), ""]
    lines += [
        "| model | cache size | index | threshold (chosen for) | repeats answered | wrong share [95% CI] | reading"
        " | novel served | embed p50/p99 ms | search p50/p99 ms | ANN ≠ exact | rule on these lookups |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, block in metrics["results"].items():
        embed = block["embed_latency_ms"]
        for size in metrics["sizes"]:
            size_block = block["sizes"][size["name"]]
            bound = size_block.get("threshold_for_bound") or {}
            rule = fmt(bound.get("threshold"), 3) if bound.get("met") else "none"
            for index_type, figures in size_block["index"].items():
                search = figures["search_latency_ms"]
                differs = size_block["approx_vs_exact"].get(index_type, {}).get("nearest_differs_share")
                points = figures["at_threshold"] or {"own": None}
                for name, at in points.items():
                    if index_type != "FLAT" and name != "own":
                        continue
                    at = at or {}
                    wrong = at.get("wrong_share_interval") or {}
                    chosen = (
                        f"{fmt(at.get('threshold'), 3)} ({at['calibrated_for']:,})" if at else "none keeps the bound"
                    )
                    lines.append(
                        f"| {model} | {size['entries']:,} | {index_type} | {chosen} | {pct(at.get('repeat_hit_rate'))} |"
                        f" {pct(at.get('wrong_share'))} {interval(wrong.get('low'), wrong.get('high'), pct)} |"
                        f" {at.get('reading') or 'n/a'} | {pct(at.get('novel_false_hit_rate'))} |"
                        f" {fmt(embed['p50'], 1)}/{fmt(embed['p99'], 1)} |"
                        f" {fmt(search['p50'], 1)}/{fmt(search['p99'], 1)} |"
                        f" {'exact' if index_type == 'FLAT' else pct(differs, 2)} | {rule} |"
                    )
    lines += [
        "",
        (
            "Embedding latency: one question at a time, the models taking turns question by question (so the "
            "two compare); search latency: one query per call, measured one model and index after the other. "
            "Milvus Lite is a pure-Python engine in the replay's own process, not a production Milvus server."
        ),
        "",
        f"Runtime: {metrics['runtime_seconds']['total']:.0f} s on {metrics['settings']['threads']} threads.",
        "",
    ]
    return "\n".join(lines)


def make_plot(metrics: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    colours = {"base": "tab:gray", "adapter": "tab:blue"}
    for model, block in metrics["results"].items():
        for name, style in (("own", "o-"), ("smallest", "s:")):
            xs, wrong, hits = [], [], []
            for size in metrics["sizes"]:
                at = _figures(block["sizes"][size["name"]], name) or {}
                xs.append(size["entries"])
                wrong.append(np.nan if at.get("wrong_share") is None else at["wrong_share"])
                hits.append(np.nan if at.get("repeat_hit_rate") is None else at["repeat_hit_rate"])
            label = f"{model}, {READ_AS[name]} threshold"
            axes[0].plot(xs, wrong, style, color=colours.get(model), label=label)
            axes[1].plot(xs, hits, style, color=colours.get(model), label=label)
        rules = [
            (size["entries"], (block["sizes"][size["name"]].get("threshold_for_bound") or {}).get("threshold"))
            for size in metrics["sizes"]
        ]
        axes[2].plot(
            [x for x, _ in rules], [np.nan if y is None else y for _, y in rules], "o-", color=colours.get(model)
        )
    axes[0].axhline(metrics["max_wrong_share"], color="tab:red", linestyle="--", linewidth=1, label="budget")
    titles = (
        "wrong share among served answers",
        "repeats answered",
        f"threshold the rule takes on these lookups\n(budget {metrics['max_wrong_share']:g}; descriptive)",
    )
    for axis, title in zip(axes, titles, strict=True):
        axis.set_xscale("log")
        axis.set_xlabel("cached questions")
        axis.set_title(title, fontsize=10)
        axis.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(f"{metrics['domain']}: replay through Milvus (FLAT, exact search)", fontsize=11)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
