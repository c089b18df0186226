"""Training the adapter.

training_run (one run from triplets to the trained model), trainer_setup (base model, LoRA config,
loss, evaluators, trainer arguments), training_data (triplets, mined rows, contrastive pairs),
negative_mining (hard negatives from the cache's neighbourhood), qtype_balance (a rebalanced
subset), contrastive_stage (the optional second stage), checkpoints (fingerprint and resume),
checkpoint_evaluator (checkpoints chosen on the cache figures), adapter_output (the saved adapter
and its card), adapter_size (parameters and bytes on L6 and L12).
"""
