"""metrics.md: the evaluation in Markdown tables, opening with the answer (the deploy threshold and
what it gives on test). Every sentence that states a conclusion is chosen by the numbers."""

from __future__ import annotations

from cache_embed.common.numbers import fmt, interval, pct, signed

MODELS = ("adapter", "base")
# test.<key> breakdowns of the pair figures, shown in this order by the markdown and the report.
BREAKDOWNS = (
    ("by_negative_kind", "By negative kind"),
    ("by_positive_kind", "By paraphrase kind (repeats: also the cache's rank-1)"),
    ("by_qtype", "By question type"),
)


def _ci(ci: dict, key: str) -> str:
    entry = ci.get(key)
    if not entry or entry.get("low") is None:
        return "n/a"
    return f"[{signed(entry['low'])}, {signed(entry['high'])}]"


def _pct_ci(entry: dict | None) -> str:
    entry = entry or {}
    return interval(entry.get("low"), entry.get("high"), pct)


def deploy_rows(rec: dict) -> list[list[str]]:
    """Rows of the answer table: model, threshold, val bound, test figures with intervals."""
    rows = []
    for name in MODELS:
        entry = rec.get(name)
        if not entry:
            rows.append([name, "none", "", "", "", "", ""])
            continue
        test = entry["test"]
        rows.append(
            [
                name,
                fmt(entry["threshold"], 4),
                ("met" if entry["bound_met_on_val"] else "NOT met")
                + f" (upper {pct(entry['val']['wrong_share_upper'])})",
                f"{pct(test['wrong_share'])} {_pct_ci(test['wrong_share_ci'])}",
                f"{pct(test['repeat_hit_rate'])} {_pct_ci(test['repeat_hit_rate_ci'])}",
                f"{pct(test['novel_false_hit_rate'])} {_pct_ci(test['novel_false_hit_rate_ci'])}",
                "yes" if test["bound_held"] else "NO",
            ]
        )
    return rows


def provenance(rec: dict) -> str:
    source = (
        "the calibration half of the validation split (focus-disjoint from test and from the half that"
        " selected the training checkpoint)"
        if rec.get("chosen_on") == "val"
        else "the test triplets themselves (no calibration triplets given: optimistic)"
    )
    return (
        f"Each threshold is chosen on {source}, {fmt(rec.get('calibration_triplets'))} triplets and a cache of"
        f" {fmt(rec['calibration_cache']['cached_entries'])} questions (of which"
        f" {fmt(rec['calibration_cache'].get('distractor_entries', 0))} train questions padding it to the test"
        f" cache's size), as {rec['rule']}"
        f" ({pct(rec['max_wrong_share'])}), for a traffic mix of {pct(rec['repeat_share'])} repeats."
        f" It is measured on test (a cache of {fmt(rec['test_cache']['cached_entries'])} questions)."
    )


def render_markdown(metrics: dict) -> str:
    test = metrics["test"]
    base, adapter, delta, ci = test["base"], test["adapter"], test["delta"], test["ci"]
    rec = metrics["recommended_threshold"]
    counts = metrics["counts"]
    lines = ["# Metrics: adapter vs base model as a semantic cache", "", "## The answer", "", rec["verdict"], ""]
    lines += [
        "| model | deploy threshold | 95% bound on val | TEST wrong share [95% CI] | TEST repeat hit rate [95% CI]"
        " | TEST novel false-hit rate [95% CI] | bound held on test |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in deploy_rows(rec)]
    lines += ["", provenance(rec)]
    boot = rec.get("bootstrap") or {}
    if boot:
        lines += [
            "",
            f"Intervals: {fmt(boot.get('resamples'))} paired bootstrap resamples over"
            f" {fmt(boot.get('groups'))} focus groups (a group and all its lookups together).",
        ]
    if rec.get("delta"):
        d = rec["delta"]
        lines += [
            "",
            "Adapter minus base, each at its own deploy threshold (95% CI):"
            f" repeat hit rate {pct(d['repeat_hit_rate']['delta'])} {_pct_ci(d['repeat_hit_rate'])},"
            f" wrong share {pct(d['wrong_share']['delta'])} {_pct_ci(d['wrong_share'])},"
            f" P-CHR AUC {signed(d['p_chr_auc']['delta'])}"
            f" [{signed(d['p_chr_auc']['low'])}, {signed(d['p_chr_auc']['high'])}].",
        ]
    for name in MODELS:
        entry = rec.get(name)
        if entry:
            cp = entry["test"]["wrong_share_cp"]
            lines.append(
                f"- {name}: test wrong share {pct(entry['test']['wrong_share'])}, Clopper-Pearson"
                f" (effective n {fmt(cp['n_effective'], 1)}) {interval(cp['low'], cp['high'], pct)};"
                f" served share {pct(entry['test']['served_share'])}."
            )
    lines += ["", f"> {rec['note']}", ""]

    cache_counts = counts.get("cache") or {}
    lines += [
        "## The cache at fixed thresholds (test)",
        "",
        f"{fmt(cache_counts.get('cached_entries'))} cached questions; {fmt(cache_counts.get('repeat_lookups'))}"
        f" repeats and {fmt(cache_counts.get('novel_lookups'))} novel questions looked up. A served answer is"
        f" correct when the cached question is equivalent to the incoming one ({rec.get('equivalence')});"
        f" {fmt(cache_counts.get('novel_lookups_with_equivalents_left_out'))} novel questions had equivalents"
        " of their source in the cache, left out of their lookup.",
        "",
        "| threshold | model | repeat hit rate | repeat wrong rate | novel false-hit rate | served share |"
        " wrong share | correct hits | of which through equivalence |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key in base["cache"]["at_threshold"]:
        for name, block in (("base", base), ("adapter", adapter)):
            p = block["cache"]["at_threshold"][key]
            lines.append(
                f"| {key} | {name} | {pct(p['repeat_hit_rate'])} | {pct(p['repeat_wrong_rate'])}"
                f" | {pct(p['novel_false_hit_rate'])} | {pct(p['served_share'])} | {pct(p['wrong_share'])}"
                f" | {fmt(p['correct_hits'])} | {fmt(p['correct_by_equivalence'])} |"
            )
    lines += [
        "",
        f"P-CHR AUC (precision against cache hit ratio): base {fmt(base['cache']['p_chr']['auc'])},"
        f" adapter {fmt(adapter['cache']['p_chr']['auc'])}. Nearest cached question equivalent (rank 1):"
        f" base {pct(base['cache']['rank1_correct'])}, adapter {pct(adapter['cache']['rank1_correct'])}.",
        "",
    ]

    unit = next(iter(ci.values()), {}).get("unit", "group") if ci else "group"
    lines += [
        "## Pair figures (test)",
        "",
        f"Test triplets: {fmt(counts['triplets'])} from {fmt(counts['anchors'])} anchors in"
        f" {fmt(counts.get('focus_groups'))} focus groups; intervals resample {unit}s.",
        "",
        "| figure | base | adapter | delta | 95% CI of delta |",
        "|---|---|---|---|---|",
    ]
    for key in ("roc_auc", "pr_auc", "triplet_accuracy", "mean_pos", "mean_neg", "margin"):
        lines.append(
            f"| {key} | {fmt(base.get(key))} | {fmt(adapter.get(key))} | {signed(delta.get(key))} | {_ci(ci, key)} |"
        )
    for key in base["at_precision"]:
        b, a = base["at_precision"][key], adapter["at_precision"][key]
        lines.append(
            f"| recall at pair precision {key} | {fmt((b or {}).get('recall'))} (t={fmt((b or {}).get('threshold'))})"
            f" | {fmt((a or {}).get('recall'))} (t={fmt((a or {}).get('threshold'))})"
            f" | {signed(delta['at_precision'][key]['recall'])} | n/a |"
        )
    pair = rec["pair_threshold"]
    lines += [
        "",
        "## Pair-based threshold (secondary)",
        "",
        f"> {pair['note']}",
        "",
        f"Deploy precision {fmt(pair['deploy_precision'])}, chosen on {pair['chosen_on']}.",
        "",
        "| | threshold | chosen-on precision | TEST pair precision | TEST pair recall | TEST cache wrong share |",
        "|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        point = pair.get(name)
        if point is None:
            lines.append(f"| {name} | unreachable | | | | |")
        else:
            lines.append(
                f"| {name} | {fmt(point['threshold'], 4)} | {fmt(point['calibration']['precision'])}"
                f" | {fmt(point['precision'])} | {fmt(point['recall'])} | {pct(point['cache']['wrong_share'])} |"
            )
    lines.append("")
    for key, title in BREAKDOWNS:
        ranked = key == "by_positive_kind"
        lines += [
            f"## {title}",
            "",
            "| group | triplets | base ROC-AUC | adapter ROC-AUC | base triplet acc."
            " | adapter triplet acc. | base margin | adapter margin |"
            + (" base cache rank-1 | adapter cache rank-1 |" if ranked else ""),
            "|---|---|---|---|---|---|---|---|" + ("---|---|" if ranked else ""),
        ]
        for group, entry in (test.get(key) or {}).items():
            lines.append(
                f"| {group} | {fmt(entry['triplets'])} | {fmt(entry['base']['roc_auc'])}"
                f" | {fmt(entry['adapter']['roc_auc'])} | {fmt(entry['base']['triplet_accuracy'])}"
                f" | {fmt(entry['adapter']['triplet_accuracy'])} | {fmt(entry['base']['margin'])}"
                f" | {fmt(entry['adapter']['margin'])} |"
                + (
                    f" {pct(entry['base'].get('cache_rank1_correct'))} | {pct(entry['adapter'].get('cache_rank1_correct'))} |"
                    if ranked
                    else ""
                )
            )
        lines.append("")
    if metrics["external"]:
        lines += [
            "## External labelled pairs",
            "",
            "| set | pairs | base ROC-AUC | adapter ROC-AUC | base PR-AUC"
            " | adapter PR-AUC | base P/R at its deploy threshold | adapter P/R at its deploy threshold |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, entry in metrics["external"].items():
            b, a = entry["base"]["at_recommended_threshold"], entry["adapter"]["at_recommended_threshold"]
            lines.append(
                f"| {name} | {fmt(entry['pairs'])} | {fmt(entry['base']['roc_auc'])}"
                f" | {fmt(entry['adapter']['roc_auc'])} | {fmt(entry['base']['pr_auc'])}"
                f" | {fmt(entry['adapter']['pr_auc'])}"
                f" | {fmt((b or {}).get('precision'))}/{fmt((b or {}).get('recall'))}"
                f" | {fmt((a or {}).get('precision'))}/{fmt((a or {}).get('recall'))} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"
