"""The adapter as a cache: simulation, the threshold rule, intervals, metrics, plots, markdown."""
