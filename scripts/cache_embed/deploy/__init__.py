"""Serving.

router (which threshold goes into the vLLM Semantic Router fragment, and the refusal), model_folder
(the merged model as a router loads it), vector_cache (Milvus), replay (the cache replayed through
Milvus at growing sizes) and replay_report (its page and plot).
"""
