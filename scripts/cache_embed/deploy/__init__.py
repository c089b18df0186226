"""Serving: the vector database cache (Milvus), the router export, the replay."""
