"""Every distinct text encoded with the base model, then with the adapter loaded on it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cache_embed.common.cli import PipelineError

LOG = logging.getLogger("evaluate_adapter")


def encode_all(texts: list[str], base_model: str, adapter: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Encode the texts with the base model, then with the adapter loaded on it."""
    from sentence_transformers import SentenceTransformer

    base_path, adapter_path = Path(base_model), Path(adapter)
    if not (base_path / "modules.json").is_file() and not (base_path / "config.json").is_file():
        raise PipelineError(f"{base_path}: not a sentence-transformers model folder (no modules.json/config.json)")
    if not (adapter_path / "adapter_config.json").is_file():
        raise PipelineError(f"{adapter_path}: not a PEFT adapter folder (no adapter_config.json)")
    LOG.info("loading base model %s", base_path)
    model = SentenceTransformer(str(base_path))
    kwargs = {
        "batch_size": batch_size,
        "normalize_embeddings": True,
        "convert_to_numpy": True,
        "show_progress_bar": True,
    }
    LOG.info("encoding %d distinct texts with the base model", len(texts))
    base = model.encode(texts, **kwargs)
    LOG.info("loading adapter %s", adapter_path)
    model.load_adapter(str(adapter_path))
    LOG.info("encoding %d distinct texts with the adapter", len(texts))
    tuned = model.encode(texts, **kwargs)
    return np.asarray(base, dtype=np.float32), np.asarray(tuned, dtype=np.float32)
