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


SIZE_HEADER = (
    "| cache size | model | deploy threshold | 95% bound on val | TEST wrong share [95% CI] | reading"
    " | TEST repeats answered [95% CI] | TEST novel questions served [95% CI] |"
)


def deploy_rows(rec: dict) -> list[list[str]]:
    """Rows of the answer table, one per size and model: the threshold (none when no threshold keeps
    the bound on validation; the figures are then the closest one's), the validation bound, and the
    test figures with intervals (wrong share: Clopper-Pearson over focus groups; rates: bootstrap)."""
    rows = []
    for size in reversed(rec["sizes"]):
        for name in MODELS:
            entry = size.get(name)
            if not entry:
                rows.append([size["label"], name, "n/a", "", "", "", "", ""])
                continue
            test = entry["test"]
            threshold = (
                fmt(entry["threshold"], 4)
                if entry["threshold"] is not None
                else f"none (closest {fmt(entry['evaluated_at'], 4)})"
            )
            rows.append(
                [
                    size["label"],
                    name,
                    threshold,
                    ("met" if entry["bound_met_on_val"] else "NOT met")
                    + f" (upper {pct(entry['val']['wrong_share_upper'])})",
                    f"{pct(test['wrong_share'])} {_pct_ci(test['wrong_share_cp'])}",
                    test["reading"] or "n/a",
                    f"{pct(test['repeat_hit_rate'])} {_pct_ci(test['repeat_hit_rate_ci'])}",
                    f"{pct(test['novel_false_hit_rate'])} {_pct_ci(test['novel_false_hit_rate_ci'])}",
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
    sizes = ", ".join(
        f"{size['label']} (calibration cache {fmt(size['calibration_cache']['cached_entries'])} with"
        f" {fmt(size['calibration_cache']['distractor_entries'])} padding questions; test cache"
        f" {fmt(size['test_cache']['cached_entries'])} with {fmt(size['test_cache']['distractor_entries'])})"
        for size in rec["sizes"]
    )
    return (
        f"Each threshold is chosen on {source}, {fmt(rec.get('calibration_triplets'))} triplets, at each cache"
        f" size: {sizes}. The rule, with max_wrong_share {pct(rec['max_wrong_share'])} and a traffic mix of"
        f" {pct(rec['repeat_share'])} repeats: {rec['rule']}. {rec['padding']} {rec['novel_traffic']} Reading of the test"
        " interval: held (within the budget), consistent (contains it), missed (above it)."
    )


def phrasing_line(metrics: dict) -> str:
    """One sentence: the adapter's pair precision at each size's deploy threshold on the phrasing sets
    (the external sets written with kinds and sources, such as the natural-phrasing pairs)."""
    rec = metrics["recommended_threshold"]
    parts = []
    for name, entry in (metrics.get("external") or {}).items():
        if not entry.get("by_kind"):
            continue
        for size in reversed(rec["sizes"]):
            precision = entry["phrasing"]["adapter"].get(f"precision@{size['cache_size']}")
            if precision:
                parts.append(f"{name} at the {size['label']} threshold {_value_ci(precision, pct)}")
    if not parts:
        return ""
    return (
        "On naturally phrased pairs, the adapter's pair precision (the share of served pairs that are the same"
        f" question; the budget asks for {pct(1 - rec['max_wrong_share'])}): " + "; ".join(parts) + "."
    )


def answer_section(metrics: dict) -> list[str]:
    """The deploy threshold at each size and what it gives on test, with the verdicts."""
    rec = metrics["recommended_threshold"]
    lines = ["## The answer", ""]
    lines += [block["verdict"] for block in reversed(rec["sizes"])]
    lines += ["", SIZE_HEADER, "|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in deploy_rows(rec)]
    if phrasing_line(metrics):
        lines += ["", phrasing_line(metrics)]
    lines += ["", provenance(rec)]
    boot = rec["sizes"][-1].get("bootstrap") or {}
    if boot:
        lines += [
            "",
            f"Intervals: {fmt(boot.get('resamples'))} paired bootstrap resamples over"
            f" {fmt(boot.get('groups'))} focus groups (a group and all its lookups together;"
            f" {fmt(boot.get('skipped_resamples', 0))} drew no repeat or no novel lookup and were skipped).",
        ]
    for size in reversed(rec["sizes"]):
        d = size.get("delta") or {}
        if d:
            lines += [
                "",
                f"At {size['label']}: adapter minus base, each at its own deploy threshold (95% CI):"
                f" repeat hit rate {pct(d['repeat_hit_rate']['delta'])} {_pct_ci(d['repeat_hit_rate'])},"
                f" wrong share {pct(d['wrong_share']['delta'])} {_pct_ci(d['wrong_share'])},"
                f" P-CHR AUC {signed(d['p_chr_auc']['delta'])}"
                f" [{signed(d['p_chr_auc']['low'])}, {signed(d['p_chr_auc']['high'])}].",
            ]
    return lines + ["", f"> {rec['note']}", ""]


def _value_ci(entry: dict | None, formatter=fmt) -> str:
    entry = entry or {}
    if entry.get("value") is None:  # e.g. the precision of a threshold that serves no pair
        return "n/a"
    return f"{formatter(entry.get('value'))} {interval(entry.get('low'), entry.get('high'), formatter)}"


def phrasing_section(metrics: dict) -> list[str]:
    """Each labelled pair set as a cache reads it: ROC-AUC, recall at the target precision, and
    precision/recall at each size's deploy threshold, intervals over source records; then per kind."""
    sets = {name: entry for name, entry in (metrics.get("external") or {}).items() if entry.get("phrasing")}
    if not sets:
        return []
    sizes = metrics["recommended_threshold"]["sizes"]
    lines = [
        "## External labelled pairs",
        "",
        "95% intervals from a paired bootstrap over each set's source records. Pair precision depends on the"
        " set's label balance; a deploy threshold with pair precision under 1 - the budget serves too many"
        " wrong answers to these phrasings.",
        "",
        "| set | model | ROC-AUC | recall at precision "
        + fmt(next(iter(sets.values()))["phrasing"]["target_precision"])
        + " | "
        + " | ".join(f"P / R at the {size['label']} threshold" for size in reversed(sizes))
        + " |",
        "|---|---|---|---|" + "---|" * len(sizes),
    ]
    for name, entry in sets.items():
        phrasing = entry["phrasing"]
        for model in MODELS:
            figures = phrasing[model]
            cells = []
            for size in reversed(sizes):
                precision = figures.get(f"precision@{size['cache_size']}")
                recall = figures.get(f"recall@{size['cache_size']}")
                cells.append(f"{_value_ci(precision, pct)} / {_value_ci(recall, pct)}" if precision else "no threshold")
            lines.append(
                f"| {name} | {model} | {_value_ci(figures['roc_auc'])} | {_value_ci(figures['recall_at_precision'])}"
                f" | " + " | ".join(cells) + " |"
            )
        delta = phrasing["delta"]
        lines.append(
            f"| {name} | adapter - base | {signed(delta['roc_auc']['delta'])} {_ci(delta, 'roc_auc')}"
            f" | {signed(delta['recall_at_precision']['delta'])} {_ci(delta, 'recall_at_precision')} |"
            + " |"
            * len(sizes)
        )
    for name, entry in sets.items():
        kinds = entry.get("by_kind")
        if not kinds:
            continue
        lines += [
            "",
            f"{name} by kind of pair (each kind against every pair of the other label; served share at the"
            " largest size's threshold):",
            "",
            "| kind | label | pairs | base ROC-AUC | adapter ROC-AUC | base served | adapter served |",
            "|---|---|---|---|---|---|---|",
        ]
        for kind, figures in kinds.items():
            lines.append(
                f"| {kind} | {figures['label']} | {fmt(figures['pairs'])} | {fmt(figures['base']['roc_auc'])}"
                f" | {fmt(figures['adapter']['roc_auc'])} | {pct(figures['base']['served_share'])}"
                f" | {pct(figures['adapter']['served_share'])} |"
            )
    return lines + [""]


def pair_section(metrics: dict) -> list[str]:
    """Pair figures on the test triplets, adapter against base, with intervals of the difference."""
    test, counts = metrics["test"], metrics["counts"]
    base, adapter, delta, ci = test["base"], test["adapter"], test["delta"], test["ci"]
    unit = next(iter(ci.values()), {}).get("unit", "group") if ci else "group"
    lines = [
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
    return lines + [""]


def breakdown_section(test: dict, key: str, title: str) -> list[str]:
    ranked = key == "by_positive_kind"
    lines = [
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
    return lines + [""]


def render_markdown(metrics: dict) -> str:
    test = metrics["test"]
    base, adapter = test["base"], test["adapter"]
    rec = metrics["recommended_threshold"]
    counts = metrics["counts"]
    lines = ["# Metrics: adapter vs base model as a semantic cache", ""] + answer_section(metrics)

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

    lines += pair_section(metrics)
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
        lines += breakdown_section(test, key, title)
    lines += phrasing_section(metrics)
    return "\n".join(lines) + "\n"
