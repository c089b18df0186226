"""Training the adapter: data subsets, mined negatives, the checkpoint evaluator, sizes."""
