"""The workflow's library: everything the step scripts in scripts/ share.

files: JSON/JSONL I/O, atomic writes, digests; text: normalisation and stable ids; cli: the user-facing
error, logging and the main() wrapper of every step; names: split names and model folder names shared
with the Snakefile; the rest one concern each (archive reading, triplet generation and quality, metrics).
"""
