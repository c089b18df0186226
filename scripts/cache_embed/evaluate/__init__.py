"""The adapter as a cache.

Where the deploy threshold is chosen: threshold (the one rule and the held/consistent/missed
reading), deploy_threshold (each model's threshold at one cache size, read on test, and the verdict),
cache_sizes (the sizes and how the caches are padded to them). Around it: simulation (the cache as
operated: plans, nearest entries, sweeps over thresholds, bootstrap), intervals, pair_metrics
(ROC, PR, precision targets), pair_sets (labelled pair sets such as the natural-phrasing pairs),
inputs (files in), encoding, metrics (metrics.json), markdown, plots, seed_spread.
"""
