"""The HTML report (results/<domain>/report.html): one self-contained page, no scripts, no remote
loads, plots embedded as data URIs, every figure read from the run's files; sections in the order
a reader needs them (the answer first)."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

from cache_embed.common.cli import PipelineError
from cache_embed.common.files import read_json
from cache_embed.common.numbers import fmt as fmt_number
from cache_embed.common.numbers import interval, pct
from cache_embed.common.numbers import signed as signed_text
from cache_embed.common.paths import shareable_path
from cache_embed.evaluate.markdown import BREAKDOWNS, SIZE_HEADER, deploy_rows, phrasing_line, provenance
from cache_embed.evaluate.seed_spread import HIGHER_IS_BETTER, seed_spread

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
h3{margin-top:1.4rem}table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .55rem;text-align:right;vertical-align:top}
th{background:#f3f3f3}table.kv td{text-align:left}td:first-child,th:first-child{text-align:left}
.warn{background:#fff4e5;border-left:5px solid #f0a020;padding:.7rem 1rem;margin:1rem 0}
.muted{color:#777}.good{color:#1a7f37}.bad{color:#b42318}
pre{background:#f7f7f7;border:1px solid #ddd;padding:.8rem;overflow:auto;font-size:.82rem;max-height:40rem}
img{max-width:100%;border:1px solid #eee;margin:.4rem 0}nav a{margin-right:1rem}
figure{margin:1rem 0}.row{display:flex;flex-wrap:wrap;gap:2rem;align-items:flex-start}figcaption{font-size:.85rem;color:#555}
"""
PLOT_CAPTIONS = {
    "similarity_histograms": "Cosine similarity of test pairs: anchor-positive pairs must hit, anchor-negative pairs must miss. "
    "The dashed line is each model's deploy threshold.",
    "precision_recall": "Pair precision against recall (hit rate of paraphrases), base vs adapter; "
    "dots mark each model's deploy threshold.",
    "threshold_sweep": "Pair precision (solid) and hit rate (dashed) against the threshold: training moves the curves, "
    "so each model needs its own threshold (dotted lines: the deploy thresholds).",
    "cache_operations": "Left: precision of served answers against the cache hit ratio (P-CHR) over all thresholds, "
    "dots at the deploy thresholds. Right: the share of served answers that are wrong, with its "
    "95% upper bound (dashed), against the threshold; the dotted line is the error budget.",
}
SKIP_SERIES = ("runtime", "per_second", "samples", "flos", "epoch")


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def fmt(value, digits: int = 3) -> str:
    """Numbers formatted for their scale (cache_embed.common.numbers: 2e-4, not 0.000); containers as JSON."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return fmt_number(value, digits)


def signed(value, digits: int = 3, higher_is_better: bool = True) -> str:
    if value is None:
        return "n/a"
    better = value > 0 if higher_is_better else value < 0
    css = "muted" if value == 0 else "good" if better else "bad"
    return f'<span class="{css}">{esc(signed_text(value, digits))}</span>'


def get(data, *path, default=None):
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data


def table(header: list[str], rows: list[list], raw_columns: set[int] | frozenset = frozenset()) -> str:
    """An HTML table; cells are escaped except those in raw_columns (already-built HTML)."""
    head = "".join(f"<th>{esc(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{cell if index in raw_columns else esc(fmt(cell))}</td>" for index, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def flatten(data, prefix: str = "") -> list[tuple[str, object]]:
    items = []
    if isinstance(data, dict):
        for key in sorted(data, key=str):
            items += flatten(data[key], f"{prefix}.{key}" if prefix else str(key))
    else:
        items.append((prefix, data))
    return items


def key_value_table(data: dict, skip: tuple = ()) -> str:
    rows = [[key, value] for key, value in flatten({k: v for k, v in (data or {}).items() if k not in skip})]
    return (
        table(["key", "value"], rows).replace("<table>", '<table class="kv">', 1)
        if rows
        else '<p class="muted">nothing recorded</p>'
    )


def counts_table(title: str, counts) -> str:
    if not isinstance(counts, dict) or not counts:
        return ""
    total = sum(value for value in counts.values() if isinstance(value, (int, float))) or 1
    rows = [
        [key, value, f"{100 * value / total:.1f}%" if isinstance(value, (int, float)) else ""]
        for key, value in sorted(
            counts.items(), key=lambda item: (-item[1] if isinstance(item[1], (int, float)) else 0, str(item[0]))
        )
    ]
    return f"<h3>{esc(title)}</h3>" + table(["", "count", "share"], rows)


def image_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


# ---------------------------------------------------------------- training curves


def training_series(history) -> dict[str, list[tuple[float, float]]]:
    """Find every logged entry with a step (a dict with "step" or "global_step") anywhere in the
    history and gather its numeric fields into series by name. Entries under a key containing
    "eval" or "val" get an "eval_" prefix unless they already have one."""
    series: dict[str, list[tuple[float, float]]] = {}

    def walk(node, in_eval: bool):
        if isinstance(node, list):
            for item in node:
                walk(item, in_eval)
        elif isinstance(node, dict):
            step = node.get("step", node.get("global_step"))
            if isinstance(step, (int, float)) and not isinstance(step, bool):
                for key, value in node.items():
                    if key in ("step", "global_step") or not isinstance(value, (int, float)) or isinstance(value, bool):
                        continue
                    if any(part in key for part in SKIP_SERIES) or not math.isfinite(value):
                        continue
                    name = key
                    if in_eval and not key.startswith("eval"):
                        name = f"eval_{key}"
                    elif key == "loss":
                        name = "train_loss"
                    series.setdefault(name, []).append((float(step), float(value)))
            for key, value in node.items():
                if isinstance(value, (dict, list)):
                    lowered = str(key).casefold()
                    walk(value, in_eval or "eval" in lowered or lowered.startswith("val"))

    walk(history, False)
    return {name: sorted(set(points)) for name, points in sorted(series.items())}


def training_plot(series: dict) -> bytes | None:
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = {name: points for name, points in series.items() if "loss" in name}
    others = {
        name: points
        for name, points in series.items()
        if "loss" not in name and name not in ("learning_rate", "grad_norm")
    }
    panels = [("loss", losses)] + ([("evaluation", others)] if others else [])
    if "learning_rate" in series:
        panels.append(("learning rate", {"learning_rate": series["learning_rate"]}))
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for axis, (title, group) in zip(axes[0], panels, strict=False):
        for name, points in group.items():
            steps, values = zip(*points, strict=False)
            axis.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=name)
        axis.set_title(title)
        axis.set_xlabel("step")
        if group:
            axis.legend(fontsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


# ---------------------------------------------------------------- sections


def section_data(queries_stats, split_stats, triplet_stats: dict, val_halves=None) -> str:
    parts = ['<h2 id="data">Data</h2>']
    if queries_stats is not None:
        q = queries_stats
        parts.append(
            "<h3>Queries</h3>"
            + table(
                ["", "value"],
                [
                    ["documents", get(q, "documents")],
                    ["records", get(q, "records")],
                    ["rejects", get(q, "rejects")],
                    ["duplicates merged", get(q, "duplicates_merged")],
                ],
            )
        )
        parts.append(
            '<div class="row">'
            + "".join(
                f"<div>{counts_table(title, get(q, key))}</div>"
                for title, key in (
                    ("Rejects by reason", "rejects_by_reason"),
                    ("Records by collection", "records_by_collection"),
                    ("Records by question type", "records_by_qtype"),
                )
            )
            + "</div>"
        )
    else:
        parts.append('<p class="muted">No query statistics given.</p>')
    if split_stats is not None:
        sizes = get(split_stats, "sizes", default={})
        rows = [[name, value] for name, value in (sizes.items() if isinstance(sizes, dict) else [])]
        rows.append(["focus overlap between splits (must be 0)", get(split_stats, "focus_overlap_total")])
        for split, share in sorted((get(split_stats, "residual_overlap_share", default={}) or {}).items()):
            rows.append(
                [
                    f"share of {split} records sharing a focus, occurrence focus or synonym with another split",
                    pct(share),
                ]
            )
        parts.append("<h3>Splits</h3>" + table(["", "value"], rows))
        rest = {k: v for k, v in split_stats.items() if k not in ("sizes", "focus_overlap_total")}
        if rest:
            parts.append("<details><summary>All split statistics</summary>" + key_value_table(rest) + "</details>")
    if val_halves:
        parts.append(
            "<h3>Validation halves</h3><p>Focus-disjoint halves of the val triplets: <em>select</em> picks the "
            "training checkpoint, <em>calibrate</em> the deploy threshold.</p>"
            + table(
                ["half", "triplets", "anchors", "focus groups"],
                [
                    [
                        half,
                        get(val_halves, half, "triplets"),
                        get(val_halves, half, "anchors"),
                        get(val_halves, half, "groups"),
                    ]
                    for half in ("select", "calibrate")
                ],
            )
        )
    if triplet_stats:
        splits = sorted(triplet_stats)
        rows = [[split, get(triplet_stats[split], "triplets"), get(triplet_stats[split], "yield")] for split in splits]
        parts.append("<h3>Triplets</h3>" + table(["split", "triplets", "yield"], rows))
        for field, title in (("dropped", "Dropped by reason"), ("failures", "Failures by reason")):
            reasons = sorted(
                {reason for split in splits for reason in (get(triplet_stats[split], field, default={}) or {})}
            )
            if reasons:
                rows = [
                    [reason] + [get(triplet_stats[split], field, reason, default=0) for split in splits]
                    for reason in reasons
                ]
                parts.append(f"<h3>{esc(title)}</h3>" + table(["reason"] + splits, rows))
        for split in splits:
            rest = {
                k: v for k, v in triplet_stats[split].items() if k not in ("triplets", "yield", "dropped", "failures")
            }
            if rest:
                parts.append(
                    f"<details><summary>All statistics of the {esc(split)} triplets</summary>{key_value_table(rest)}</details>"
                )
    return "\n".join(parts)


def section_training(history, training_info) -> str:
    parts = ['<h2 id="training">Training</h2>']
    if history is not None:
        series = training_series(history)
        png = training_plot(series)
        if png:
            parts.append(
                f"<figure>{image_tag(png, 'training curves')}<figcaption>Training and evaluation curves "
                f"from history.json ({esc(', '.join(series))}).</figcaption></figure>"
            )
        else:
            parts.append('<p class="muted">history.json holds no entries with a step.</p>')
    if training_info is not None:
        parts.append("<h3>Training info</h3>" + key_value_table(training_info))
    return "\n".join(parts)


def _ci_text(ci: dict, key: str) -> str:
    entry = ci.get(key) or {}
    if entry.get("low") is None:
        return "n/a"
    return f"[{signed_text(entry['low'])}, {signed_text(entry['high'])}]"


def _pct_ci(entry) -> str:
    entry = entry or {}
    return interval(entry.get("low"), entry.get("high"), pct)


def section_answer(metrics: dict) -> str:
    """The first screen: the deploy threshold at each cache size and what it gives on test, base
    against adapter, with the verdicts computed by the evaluation from those numbers."""
    rec = metrics.get("recommended_threshold") or {}
    parts = ['<section id="answer"><h2>The answer</h2>']
    # The report renders what metrics.json holds; a partial one (an older or hand-made file) shows less.
    sizes = [block for block in rec.get("sizes") or [] if {"label", "verdict", "adapter", "base"} <= set(block)]
    for block in reversed(sizes):
        parts.append(f'<p class="verdict"><strong>{esc(block["verdict"])}</strong></p>')
    if sizes:
        header = [cell.strip() for cell in SIZE_HEADER.strip("|").split("|")]
        header[3] = f"95% bound on val (budget {pct(rec.get('max_wrong_share'))})"
        parts.append(table(header, deploy_rows(rec)))
        if phrasing_line(metrics):
            parts.append(f'<p id="phrasing">{esc(phrasing_line(metrics))}</p>')
        for block in reversed(sizes):
            delta = block.get("delta") or {}
            if delta.get("repeat_hit_rate"):
                parts.append(
                    f"<p>At {esc(block['label'])}: adapter minus base, each at its own deploy threshold (95% CI):"
                    f" repeat hit rate {esc(pct(delta['repeat_hit_rate'].get('delta')))}"
                    f" {esc(_pct_ci(delta['repeat_hit_rate']))}; wrong share"
                    f" {esc(pct(get(delta, 'wrong_share', 'delta')))} {esc(_pct_ci(delta.get('wrong_share')))}.</p>"
                )
        parts.append(f'<p class="muted" id="threshold-provenance">{esc(provenance(rec))}</p>')
    parts.append("</section>")
    return "\n".join(parts)


def section_seeds(spread: dict | None) -> str:
    """Mean and spread over training seeds of the headline figures (train.seeds > 1)."""
    if not spread:
        return ""
    labels = {
        "deploy_threshold": "deploy threshold",
        "repeat_hit_rate": "TEST repeat hit rate at the deploy threshold",
        "wrong_share": "TEST wrong share at the deploy threshold",
        "p_chr_auc": "P-CHR AUC",
        "rank1_correct": "cache rank-1",
        "roc_auc": "pair ROC-AUC",
    }
    rows = []
    for figure, label in labels.items():
        adapter = spread["adapter"].get(figure)
        if not adapter:
            continue
        delta = spread["delta"].get(figure)
        verdict = ""
        if delta is not None and HIGHER_IS_BETTER.get(figure) is not None:
            verdict = "larger than the seed spread" if delta["claimed"] else "within the seed spread: not claimed"
        rows.append(
            [
                label,
                f"{fmt(adapter['mean'], 4)} ± {fmt(adapter['sd'], 4)}",
                f"{fmt(adapter['min'], 4)} to {fmt(adapter['max'], 4)}",
                fmt(spread["base"].get(figure), 4),
                ""
                if delta is None
                else f"{signed(delta['mean'], 4, HIGHER_IS_BETTER.get(figure) is not False)} ± {esc(fmt(delta['sd'], 4))}",
                verdict,
            ]
        )
    seeds = ", ".join(str(seed) for seed in spread["seeds"])
    return "\n".join(
        [
            f'<h2 id="seeds">Spread over {len(spread["seeds"])} training seeds ({esc(seeds)})</h2>',
            table(["figure", "adapter mean ± sd", "range", "base", "adapter − base", "claim"], rows, {4}),
            f'<p class="muted">Each seed\'s adapter is evaluated like the deployed one (threshold chosen on the'
            f" val calibrate half, measured on test); {esc(spread['claim_rule'])}. The answer above is the"
            f" first seed's.</p>",
        ]
    )


def section_metrics(metrics: dict, plots: list[Path]) -> str:
    test = metrics.get("test", {})
    base, adapter, delta, ci = (test.get(key, {}) for key in ("base", "adapter", "delta", "ci"))
    rec = metrics.get("recommended_threshold", {})
    unit = next(iter(ci.values()), {}).get("unit", "group") if ci else "group"
    parts = [
        '<h2 id="evaluation">Evaluation as a semantic cache</h2>',
        f"<p>Test triplets: {esc(fmt(get(metrics, 'counts', 'triplets')))} from "
        f"{esc(fmt(get(metrics, 'counts', 'anchors')))} cached questions in "
        f"{esc(fmt(get(metrics, 'counts', 'focus_groups')))} focus groups. Deltas are adapter minus base; intervals "
        f"are 95% paired bootstrap intervals resampling {esc(unit)}s "
        f"({esc(fmt(get(metrics, 'settings', 'bootstrap')))} resamples).</p>",
    ]

    # The cache at fixed thresholds.
    rows = []
    for key in sorted(get(base, "cache", "at_threshold", default={}) or {}):
        for name, block in (("base", base), ("adapter", adapter)):
            point = get(block, "cache", "at_threshold", key, default={}) or {}
            rows.append(
                [
                    key,
                    name,
                    pct(point.get("repeat_hit_rate")),
                    pct(point.get("repeat_wrong_rate")),
                    pct(point.get("novel_false_hit_rate")),
                    pct(point.get("served_share")),
                    pct(point.get("wrong_share")),
                    fmt(point.get("correct_hits")),
                    fmt(point.get("correct_by_equivalence")),
                ]
            )
    parts.append(
        '<h3 id="threshold">The cache at fixed thresholds (test)</h3>'
        f"<p>Every distinct test question is cached; repeats (paraphrases) and novel questions (hard negatives,"
        f" their own source and its equivalents left out of their lookup) are looked up; the traffic mix is"
        f" {esc(pct(rec.get('repeat_share')))} repeats. P-CHR AUC (precision against cache hit ratio): base "
        f"{esc(fmt(get(base, 'cache', 'p_chr', 'auc')))}, adapter {esc(fmt(get(adapter, 'cache', 'p_chr', 'auc')))}.</p>"
        + table(
            [
                "threshold",
                "model",
                "repeat hit rate",
                "repeat wrong rate",
                "novel false-hit rate",
                "served share",
                "wrong share",
                "correct hits",
                "of which through equivalence",
            ],
            rows,
        )
    )

    # Pair figures with CIs.
    rows = []
    for key, label in (
        ("roc_auc", "ROC-AUC"),
        ("pr_auc", "PR-AUC"),
        ("triplet_accuracy", "triplet accuracy"),
        ("mean_pos", "mean cosine anchor-positive"),
        ("mean_neg", "mean cosine anchor-negative"),
        ("margin", "margin (pos - neg)"),
    ):
        rows.append(
            [
                label,
                fmt(base.get(key)),
                fmt(adapter.get(key)),
                signed(delta.get(key), higher_is_better=key != "mean_neg"),
                esc(_ci_text(ci, key)),
            ]
        )
    for key in sorted(base.get("at_precision", {}) or {}):
        b, a = base["at_precision"][key] or {}, (adapter.get("at_precision", {}) or {}).get(key) or {}
        rows.append(
            [
                f"recall at pair precision {key}",
                f"{fmt(b.get('recall'))} (t={fmt(b.get('threshold'))})",
                f"{fmt(a.get('recall'))} (t={fmt(a.get('threshold'))})",
                signed(get(delta, "at_precision", key, "recall")),
                "n/a",
            ]
        )
    parts.append(
        '<h3 id="summary">Pair figures (test)</h3>'
        + table(["figure", "base", "adapter", "delta", "95% CI of delta"], rows, {3, 4})
    )

    # The pair-based threshold (secondary).
    pair = rec.get("pair_threshold") or {}
    if pair:
        rows = []
        for name in ("adapter", "base"):
            point = pair.get(name)
            rows.append(
                [name]
                + (
                    ["unreachable", None, None, None, None]
                    if not point
                    else [
                        fmt(point.get("threshold"), 4),
                        get(point, "calibration", "precision"),
                        point.get("precision"),
                        point.get("recall"),
                        pct(get(point, "cache", "wrong_share")),
                    ]
                )
            )
        parts.append(
            "<h3>Pair-based threshold (secondary)</h3>"
            f"<p>{esc(pair.get('note', ''))} Deploy precision {esc(fmt(pair.get('deploy_precision')))}.</p>"
            + table(
                [
                    "model",
                    "threshold",
                    "precision where chosen",
                    "TEST pair precision",
                    "TEST pair recall",
                    "TEST cache wrong share",
                ],
                rows,
            )
        )
    if rec.get("note"):
        parts.append(f'<div class="warn"><strong>The threshold moves.</strong> {esc(rec["note"])}</div>')

    for key, title in BREAKDOWNS:
        groups = test.get(key) or {}
        ranked = key == "by_positive_kind"
        rows = []
        for group, entry in groups.items():
            b, a = entry.get("base", {}), entry.get("adapter", {})
            rows.append(
                [
                    group,
                    entry.get("triplets"),
                    b.get("roc_auc"),
                    a.get("roc_auc"),
                    b.get("triplet_accuracy"),
                    a.get("triplet_accuracy"),
                    b.get("margin"),
                    a.get("margin"),
                    get(b, "at_recommended_threshold", "recall"),
                    get(a, "at_recommended_threshold", "recall"),
                ]
                + ([b.get("cache_rank1_correct"), a.get("cache_rank1_correct")] if ranked else [])
            )
        if rows:
            parts.append(
                f"<h3>{esc(title)}</h3>"
                + table(
                    [
                        "group",
                        "triplets",
                        "base ROC-AUC",
                        "adapter ROC-AUC",
                        "base triplet acc.",
                        "adapter triplet acc.",
                        "base margin",
                        "adapter margin",
                        "base pair recall at its deploy threshold",
                        "adapter pair recall at its deploy threshold",
                    ]
                    + (["base cache rank-1", "adapter cache rank-1"] if ranked else []),
                    rows,
                )
            )

    parts.append('<h3 id="plots">Plots</h3>')
    for plot in plots:
        caption = PLOT_CAPTIONS.get(plot.stem, plot.stem)
        parts.append(
            f"<figure>{image_tag(plot.read_bytes(), plot.stem)}<figcaption>{esc(caption)}</figcaption></figure>"
        )
    return "\n".join(parts)


def section_external(metrics: dict) -> str:
    external = metrics.get("external") or {}
    parts = ['<h2 id="external">External labelled pairs</h2>']
    if not external:
        parts.append('<p class="muted">No external pair sets configured (evaluate.external).</p>')
        return "\n".join(parts)
    rows = []
    for name, entry in sorted(external.items()):
        b, a, d = entry.get("base", {}), entry.get("adapter", {}), entry.get("delta", {})
        rows.append(
            [
                esc(name),
                esc(fmt(entry.get("pairs"))),
                esc(fmt(b.get("roc_auc"))),
                esc(fmt(a.get("roc_auc"))),
                signed(d.get("roc_auc")),
                esc(fmt(b.get("pr_auc"))),
                esc(fmt(a.get("pr_auc"))),
                signed(d.get("pr_auc")),
                esc(
                    f"{fmt(get(b, 'at_recommended_threshold', 'precision'))} / {fmt(get(b, 'at_recommended_threshold', 'recall'))}"
                ),
                esc(
                    f"{fmt(get(a, 'at_recommended_threshold', 'precision'))} / {fmt(get(a, 'at_recommended_threshold', 'recall'))}"
                ),
            ]
        )
    chosen = "validation" if get(metrics, "recommended_threshold", "chosen_on") == "val" else "test"
    parts.append(
        "<p>Pairs labelled 1 (same intent, must hit) or 0 (different intent, must miss); precision/recall at each "
        f"model's deploy threshold (chosen on the {chosen} cache simulation).</p>"
    )
    parts.append(
        table(
            [
                "set",
                "pairs",
                "base ROC-AUC",
                "adapter ROC-AUC",
                "delta",
                "base PR-AUC",
                "adapter PR-AUC",
                "delta",
                "base P / R",
                "adapter P / R",
            ],
            rows,
            set(range(10)),
        )
    )
    return "\n".join(parts)


def shareable(data):
    """A copy with every absolute local path replaced (cache_embed.common.paths.shareable_path)."""
    if isinstance(data, dict):
        return {key: shareable(value) for key, value in data.items()}
    if isinstance(data, list):
        return [shareable(value) for value in data]
    if isinstance(data, str) and data.startswith("/"):
        return shareable_path(data)
    return data


def render_report(
    domain: str,
    metrics: dict,
    plots: list[Path],
    queries_stats=None,
    split_stats=None,
    triplet_stats: dict | None = None,
    history=None,
    training_info=None,
    effective_config=None,
    val_halves=None,
    seed_runs: dict | None = None,
) -> str:
    models = metrics.get("models", {})
    spread = seed_spread(seed_runs) if seed_runs and len(seed_runs) > 1 else None
    body = [
        f"<h1>Cache-embedding report: {esc(domain)}</h1>",
        f'<p class="muted">Base model {esc(models.get("adapter_base_model") or models.get("base", "n/a"))}; '
        f"adapter {esc(shareable_path(models.get('adapter')) or 'n/a')}.</p>",
        section_answer(metrics),
        section_seeds(spread),
        '<nav><a href="#answer">Answer</a>'
        + ('<a href="#seeds">Seeds</a>' if spread else "")
        + '<a href="#data">Data</a><a href="#training">Training</a>'
        '<a href="#evaluation">Evaluation</a><a href="#threshold">Cache</a><a href="#external">External sets</a>'
        '<a href="#config">Config</a></nav>',
        section_data(queries_stats, split_stats, triplet_stats or {}, val_halves),
        section_training(history, shareable(training_info) if training_info is not None else None),
        section_metrics(metrics, plots),
        section_external(metrics),
        '<h2 id="config">Effective configuration</h2>',
        f"<pre>{esc(json.dumps(shareable(effective_config), indent=2, sort_keys=True, ensure_ascii=False))}</pre>"
        if effective_config is not None
        else '<p class="muted">not given</p>',
        "<h2>Versions</h2>" + key_value_table(metrics.get("versions", {})),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Cache-embedding report: {esc(domain)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------- CLI


def read_optional(path):
    if not path:
        return None
    try:
        return read_json(path)
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found") from None
    except json.JSONDecodeError as error:
        raise PipelineError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None


def triplet_split_name(path: str) -> str:
    """results/x/triplets/train.stats.json -> train."""
    name = Path(path).name
    return name.split(".stats")[0] if ".stats" in name else Path(path).stem
