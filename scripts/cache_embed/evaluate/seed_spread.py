"""Mean and spread over training seeds of the headline cache figures (train.seeds > 1).

Each seed's adapter is evaluated like the deployed one (its deploy threshold chosen on the val
calibrate half, measured on test). A difference between adapter and base is claimed only when it
is larger than the seed spread: every seed's difference has the same sign and the mean's magnitude
exceeds twice the sample standard deviation over seeds. The base model does not depend on the
seed, so the spread of a difference is the adapter's.
"""

from __future__ import annotations

import statistics

# figure -> where it is in metrics.json under the model's name (-1: the largest evaluated cache size)
HEADLINE = {
    "deploy_threshold": ("recommended_threshold", "sizes", -1, "{model}", "threshold"),
    "repeat_hit_rate": ("recommended_threshold", "sizes", -1, "{model}", "test", "repeat_hit_rate"),
    "wrong_share": ("recommended_threshold", "sizes", -1, "{model}", "test", "wrong_share"),
    "p_chr_auc": ("test", "{model}", "cache", "p_chr", "auc"),
    "rank1_correct": ("test", "{model}", "cache", "rank1_correct"),
    "roc_auc": ("test", "{model}", "roc_auc"),
}
# the direction in which a figure is better (None: neither, e.g. a threshold)
HIGHER_IS_BETTER = {
    "deploy_threshold": None,
    "repeat_hit_rate": True,
    "wrong_share": False,
    "p_chr_auc": True,
    "rank1_correct": True,
    "roc_auc": True,
}
CLAIM_SDS = 2.0


def headline(metrics: dict, model: str) -> dict:
    """The headline figures of one model in one metrics.json (None where absent)."""
    out = {}
    for figure, path in HEADLINE.items():
        value = metrics
        for key in path:
            if isinstance(key, int):
                value = value[key] if isinstance(value, list) and value else None
            else:
                value = value.get(key.format(model=model)) if isinstance(value, dict) else None
        out[figure] = value
    return out


def _describe(values: list[float]) -> dict:
    return {
        "values": values,
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def seed_spread(runs: dict[int, dict]) -> dict:
    """`runs`: seed -> that seed's metrics.json. Returns {seeds, adapter: {figure: stats},
    base: {figure: value}, delta: {figure: stats + claimed}} over the seeds that have the figure."""
    seeds = sorted(runs)
    base = headline(runs[seeds[0]], "base")
    per_seed = [headline(runs[seed], "adapter") for seed in seeds]
    adapter, delta = {}, {}
    for figure in HEADLINE:
        values = [figures[figure] for figures in per_seed if figures[figure] is not None]
        if not values:
            continue
        adapter[figure] = _describe(values)
        if base.get(figure) is None:
            continue
        differences = _describe([v - base[figure] for v in values])
        same_sign = all(d > 0 for d in differences["values"]) or all(d < 0 for d in differences["values"])
        differences["claimed"] = bool(
            len(values) > 1 and same_sign and abs(differences["mean"]) > CLAIM_SDS * differences["sd"]
        )
        delta[figure] = differences
    return {"seeds": seeds, "claim_rule": claim_rule(), "adapter": adapter, "base": base, "delta": delta}


def claim_rule() -> str:
    return (
        f"a difference is claimed only when every seed's has the same sign and the mean's magnitude exceeds"
        f" {CLAIM_SDS:g} standard deviations over seeds"
    )
