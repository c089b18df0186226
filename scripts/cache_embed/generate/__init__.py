"""Triplet generation: the LLM backends (vLLM, OpenAI API), the structure backend, quality checks."""
