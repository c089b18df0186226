"""The evaluation's plots (PNG): similarity histograms, precision-recall, the threshold sweep and
the cache as operated (precision against cache hit ratio; wrong share against threshold)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cache_embed.common.files import atomic_output
from cache_embed.evaluate import pair_metrics as cm

PLOTS = ("similarity_histograms", "precision_recall", "threshold_sweep", "cache_operations")


def _pair_arrays(pos, neg):
    return np.concatenate((pos, neg)), np.concatenate((np.ones(pos.size), np.zeros(neg.size)))


def make_plots(curves: dict, deploy_precision: float, plots_dir: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    colours = {"base": "#7f7f7f", "adapter": "#1f77b4"}
    recommended = curves["recommended"]
    chosen_on = curves.get("chosen_on", "test")
    written = []

    def save(figure, name):
        path = plots_dir / name
        with atomic_output(path, "wb") as handle:
            figure.savefig(handle, format="png", dpi=110, bbox_inches="tight")
        plt.close(figure)
        written.append(path)

    # 1. Similarity histograms: hit pairs vs miss pairs, per model.
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    bins = np.linspace(min(min(p.min(), n.min()) for p, n in curves["test"].values()), 1.0, 51)
    for axis, name in zip(axes, ("base", "adapter"), strict=False):
        pos, neg = curves["test"][name]
        axis.hist(pos, bins=bins, alpha=0.6, label="anchor-positive (must hit)", color="#2ca02c")
        axis.hist(neg, bins=bins, alpha=0.6, label="anchor-negative (must miss)", color="#d62728")
        if recommended[name] is not None:
            axis.axvline(
                recommended[name],
                color="black",
                linestyle="--",
                label=f"deploy threshold (chosen on {chosen_on}): {recommended[name]:.3f}",
            )
        axis.set_title(f"{name}")
        axis.set_xlabel("cosine similarity")
        axis.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("pairs")
    figure.suptitle("Similarity of test pairs")
    save(figure, "similarity_histograms.png")

    # 2. Precision-recall curves.
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for name in ("base", "adapter"):
        scores, labels = _pair_arrays(*curves["test"][name])
        curve = cm.precision_recall_curve(scores, labels)
        ap = cm.average_precision(scores, labels)
        axis.step(curve["recall"], curve["precision"], where="post", color=colours[name], label=f"{name} (AP {ap:.3f})")
        if recommended[name] is not None:
            point = cm.at_threshold(scores, labels, recommended[name])
            axis.plot(point["recall"], point["precision"], "o", color=colours[name])
    axis.axhline(
        deploy_precision,
        color="black",
        linestyle=":",
        linewidth=1,
        label=f"pair-threshold precision {deploy_precision:g} (secondary)",
    )
    axis.set_xlabel("recall (hit rate of paraphrases)")
    axis.set_ylabel("precision of hits")
    axis.set_xlim(0, 1.01)
    axis.set_ylim(0, 1.01)
    axis.legend(fontsize=8, loc="lower left")
    axis.set_title("Precision-recall, test triplets")
    save(figure, "precision_recall.png")

    # 3. Precision and hit rate against threshold.
    figure, axis = plt.subplots(figsize=(7.5, 4.5))
    low = min(min(p.min(), n.min()) for p, n in curves["test"].values())
    grid = np.linspace(max(-1.0, math.floor(low * 20) / 20), 1.0, 201)
    for name in ("base", "adapter"):
        sweep = cm.threshold_sweep(*_pair_arrays(*curves["test"][name]), grid)
        axis.plot(grid, sweep["precision"], color=colours[name], label=f"{name} precision")
        axis.plot(grid, sweep["recall"], color=colours[name], linestyle="--", label=f"{name} hit rate (recall)")
        if recommended[name] is not None:
            axis.axvline(
                recommended[name],
                color=colours[name],
                linestyle=":",
                linewidth=1.5,
                label=f"{name} deploy threshold {recommended[name]:.3f} (chosen on {chosen_on})",
            )
    axis.axhline(deploy_precision, color="black", linestyle=":", linewidth=1)
    axis.set_xlabel("threshold (cosine similarity)")
    axis.set_ylabel("rate")
    axis.set_ylim(0, 1.02)
    axis.legend(fontsize=8, loc="lower left")
    axis.set_title("The threshold moves: each model needs its own")
    save(figure, "threshold_sweep.png")

    # 4. The cache as operated: precision against cache hit ratio (P-CHR), and the wrong share
    #    against the threshold with the error budget.
    sweeps = curves.get("sweeps") or {}
    if sweeps:
        figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
        budget = curves.get("max_wrong_share")
        for name in ("base", "adapter"):
            sweep = sweeps[name]
            left.plot(
                sweep.served,
                1.0 - sweep.wrong_share,
                color=colours[name],
                label=f"{name} (P-CHR AUC {sweep.p_chr_auc():.3f})",
            )
            right.plot(sweep.thresholds, sweep.wrong_share, color=colours[name], label=f"{name} wrong share")
            right.plot(
                sweep.thresholds,
                sweep.wrong_share_upper,
                color=colours[name],
                linestyle="--",
                linewidth=1,
                label=f"{name} 95% upper bound",
            )
            if recommended[name] is not None:
                point = sweep.at(recommended[name])
                left.plot(point["served_share"], 1.0 - (point["wrong_share"] or 0.0), "o", color=colours[name])
                right.axvline(
                    recommended[name],
                    color=colours[name],
                    linestyle=":",
                    linewidth=1.5,
                    label=f"{name} deploy threshold {recommended[name]:.3f}",
                )
        if budget is not None:
            left.axhline(
                1.0 - budget, color="black", linestyle=":", linewidth=1, label=f"1 - max wrong share {budget:g}"
            )
            right.axhline(budget, color="black", linestyle=":", linewidth=1, label=f"max wrong share {budget:g}")
        left.set_xlabel("cache hit ratio (served share of traffic)")
        left.set_ylabel("precision of served answers")
        left.set_xlim(0, 1.01)
        left.set_ylim(0, 1.01)
        left.legend(fontsize=8, loc="lower left")
        left.set_title("Precision against cache hit ratio, test")
        right.set_xlabel("threshold (cosine similarity)")
        right.set_ylabel("share of served answers that are wrong")
        right.set_xlim(max(0.0, min(s.thresholds.min() for s in sweeps.values())), 1.0)
        right.set_ylim(0, 1.0)
        right.legend(fontsize=7, loc="upper right")
        right.set_title("Wrong share against threshold, test")
        save(figure, "cache_operations.png")
    return written
