"""Helpers every stage shares: errors and logging, files, text keys, number formats, names, paths."""
