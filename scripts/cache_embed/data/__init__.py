"""MedQuAD and query records: the archive, focus groups, the same question (equivalence), triplet files."""
