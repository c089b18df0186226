"""Helpers every stage shares.

cli (errors, logging, library versions), files (atomic writes, JSON/JSONL), text (comparison keys,
stable ids), numbers (figures formatted for their scale), names, paths (shareable paths),
nearest (exact nearest-neighbour search), library_imports (which library files a step imports).
"""
