"""The deploy threshold at each cache size: chosen on the validation cache, read on the test cache.

For one size, `size_block` gives metrics.json's `recommended_threshold.sizes[i]`: each model's
threshold (cache_embed.evaluate.threshold: the one rule), its validation figures, its test figures
with intervals over focus groups and the reading of the test interval (held / consistent /
missed), the adapter-minus-base differences, and, from the second size on, what the smallest
size's threshold does at this one (the cache that grows after deployment). `size_verdict` words
the block; every clause is conditional on the numbers.
"""

from __future__ import annotations

from cache_embed.common.numbers import fmt, pct
from cache_embed.evaluate import simulation
from cache_embed.evaluate.threshold import choose_threshold, reading

MODELS = ("base", "adapter")
FIGURES = ("wrong_share", "wrong_share_upper", "repeat_hit_rate", "repeat_wrong_rate", "novel_false_hit_rate")
CACHE_COUNTS = ("cached_entries", "distractor_entries", "repeat_lookups", "novel_lookups")


def _ci(entry: dict | None) -> dict:
    entry = entry or {}
    return {"low": entry.get("low"), "high": entry.get("high")}


def choose(calibration_sweeps: dict, max_wrong_share: float) -> dict:
    """Each model's choice on its validation sweep (threshold.choose_threshold)."""
    return {name: choose_threshold(sweep, max_wrong_share) for name, sweep in calibration_sweeps.items()}


def model_block(choice: dict, test_sweep, model_ci: dict, max_wrong_share: float, level: float) -> dict | None:
    """One model at one size. `threshold` is None when no threshold keeps the bound on validation;
    the figures are then those at the closest threshold (`evaluated_at`), for the messages."""
    at = choice["evaluated_at"]
    if at is None:
        return None
    on_test = test_sweep.at(at)
    interval = test_sweep.interval(at, level)
    return {
        "threshold": choice["threshold"],
        "bound_met_on_val": choice["bound_met"],
        "evaluated_at": at,
        "val": {key: choice[key] for key in (*FIGURES, "served_share")},
        "test": {
            **{key: on_test[key] for key in (*FIGURES, "served_share")},
            "wrong_share_cp": {key: interval[key] for key in ("low", "high", "n_effective")},
            "wrong_share_ci": _ci(model_ci.get("wrong_share")),
            "repeat_hit_rate_ci": _ci(model_ci.get("repeat_hit_rate")),
            "novel_false_hit_rate_ci": _ci(model_ci.get("novel_false_hit_rate")),
            "reading": reading(interval["low"], interval["high"], max_wrong_share),
        },
    }


def size_block(
    size,
    calibration_plan,
    test_plan,
    calibration_lookups: dict,
    test_lookups: dict,
    *,
    repeat_share: float,
    max_wrong_share: float,
    level: float,
    bootstrap: int,
    seed: int,
    progress=None,
    smallest: dict | None = None,
) -> tuple[dict, dict]:
    """metrics.json's block for one size, and the test sweeps (for plots). `smallest`: the smallest
    size's block, whose adapter threshold is read here too."""
    calibration_sweeps = {
        name: simulation.Sweep(lookups, repeat_share, level=level, groups=calibration_plan.lookup_groups)
        for name, lookups in calibration_lookups.items()
    }
    test_sweeps = {
        name: simulation.Sweep(lookups, repeat_share, level=level, groups=test_plan.lookup_groups)
        for name, lookups in test_lookups.items()
    }
    choices = choose(calibration_sweeps, max_wrong_share)
    evaluated_at = {name: choice["evaluated_at"] for name, choice in choices.items()}
    cache_ci = (
        simulation.bootstrap_operating_points(
            test_lookups,
            evaluated_at,
            test_plan.repeat_group,
            test_plan.novel_group,
            repeat_share,
            bootstrap,
            seed,
            level,
            progress=progress,
        )
        if bootstrap > 0
        else {}
    )
    block = {
        "cache_size": size.entries,
        "names": list(size.names),
        "label": size.label,
        "calibration_cache": {key: calibration_plan.counts[key] for key in CACHE_COUNTS},
        "test_cache": {key: test_plan.counts[key] for key in CACHE_COUNTS},
    }
    for name in MODELS:
        block[name] = model_block(choices[name], test_sweeps[name], cache_ci.get(name) or {}, max_wrong_share, level)
    # Adapter minus base only where both keep the bound: a closest threshold is no deploy threshold.
    both = all((block[name] or {}).get("threshold") is not None for name in MODELS)
    block["delta"] = dict(cache_ci.get("delta") or {}) if both else {}
    block["bootstrap"] = {
        key: cache_ci[key] for key in ("unit", "groups", "resamples", "skipped_resamples", "level") if key in cache_ci
    }
    threshold = {name: (block[name] or {}).get("threshold") for name in MODELS}
    block["base_at_adapter_threshold"] = (
        None if threshold["adapter"] is None else test_sweeps["base"].at(threshold["adapter"])
    )
    block["adapter_at_base_threshold"] = (
        None if threshold["base"] is None else test_sweeps["adapter"].at(threshold["base"])
    )
    small = ((smallest or {}).get("adapter") or {}).get("threshold")
    if smallest is not None and small is not None:
        interval = test_sweeps["adapter"].interval(small, level)
        block["adapter_at_smallest_threshold"] = {
            "calibrated_for": smallest["cache_size"],
            **test_sweeps["adapter"].at(small),
            "wrong_share_cp": {key: interval[key] for key in ("low", "high")},
            "reading": reading(interval["low"], interval["high"], max_wrong_share),
        }
    block["verdict"] = size_verdict(block, max_wrong_share)
    return block, test_sweeps


def _interval(entry: dict) -> str:
    low, high = entry.get("low"), entry.get("high")
    return "" if low is None or high is None else f" [{pct(low)}, {pct(high)}]"


READING_WORDS = {
    "held": "held: the 95% interval lies within the {budget} budget",
    "consistent": "consistent with the {budget} budget: the 95% interval contains it",
    "missed": "missed: the 95% interval lies above the {budget} budget",
}


def size_verdict(block: dict, max_wrong_share: float) -> str:
    """The block in words: which model at which threshold, and how the test reading came out."""
    budget = pct(max_wrong_share)
    where = f"At {block['label']} cached questions"
    adapter, base = block.get("adapter"), block.get("base")
    parts = []
    if adapter is None:
        return f"{where}: no deploy threshold could be computed."
    test = adapter["test"]
    if adapter["threshold"] is None:
        parts.append(
            f"{where}: no adapter threshold keeps the {budget} bound on validation (the closest,"
            f" {fmt(adapter['evaluated_at'], 3)}, has an upper bound of {pct(adapter['val']['wrong_share_upper'])});"
            f" there it would serve {pct(test['wrong_share'])} wrong answers on test."
        )
    else:
        parts.append(
            f"{where}: the adapter's threshold is {fmt(adapter['threshold'], 3)}. On test it answers"
            f" {pct(test['repeat_hit_rate'])}{_interval(test['repeat_hit_rate_ci'])} of repeats with"
            f" {pct(test['wrong_share'])}{_interval(test['wrong_share_cp'])} of served answers wrong:"
            f" {READING_WORDS[test['reading']].format(budget=budget)}."
        )
    if base is not None and base["threshold"] is None:
        parts.append(f"No base-model threshold keeps the {budget} bound on validation.")
    elif base is not None:
        delta = (block.get("delta") or {}).get("repeat_hit_rate") or {}
        low, high = delta.get("low"), delta.get("high")
        comparison = ""
        if adapter["threshold"] is not None and low is not None:
            if low > 0:
                comparison = f"; the adapter answers {pct(delta['delta'])} more (95% CI {pct(low)} to {pct(high)})"
            elif high < 0:
                comparison = f"; the base answers {pct(-delta['delta'])} more (95% CI {pct(-high)} to {pct(-low)})"
            else:
                comparison = f"; no clear difference in repeats answered (95% CI {pct(low)} to {pct(high)})"
        parts.append(
            f"The base model's threshold is {fmt(base['threshold'], 3)}: it answers"
            f" {pct(base['test']['repeat_hit_rate'])} of repeats, its test wrong share {base['test']['reading']}"
            f"{comparison}."
        )
    small = block.get("adapter_at_smallest_threshold")
    if small and adapter["threshold"] is not None:
        parts.append(
            f"The threshold chosen for {small['calibrated_for']:,} questions ({fmt(small['threshold'], 3)})"
            f" would serve {pct(small['wrong_share'])}{_interval(small['wrong_share_cp'])} wrong answers here."
        )
    return " ".join(parts)
