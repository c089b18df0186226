"""MedQuAD and query records.

medquad_archive (the pinned archive and its content digest), focus_groups (records that may be
about the same entity), equivalence ("the same question"), triplets (the one triplet-file reader).
"""
