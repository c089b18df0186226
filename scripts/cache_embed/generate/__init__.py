"""Triplet generation.

shards (which queries a shard holds; the candidates a backend proposes), structure_generator (the
offline backend from MedQuAD's annotations), llm_backends (vLLM and the OpenAI API), triplet_quality
(the quality filters every backend's candidates pass).
"""
