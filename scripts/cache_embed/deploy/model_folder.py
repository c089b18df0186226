"""A merged model folder as a router loads it: what its modules state, a load check, file digests."""

from __future__ import annotations

from pathlib import Path

from cache_embed.common.cli import PipelineError
from cache_embed.common.files import read_json

MODEL_FILES_REQUIRED = ("model.safetensors", "config.json", "modules.json", "tokenizer.json")
CHECK_SENTENCES = ["What are the symptoms of Glaucoma ?", "how do you treat high blood pressure"]


def describe_model(folder: Path) -> dict:
    """Pooling, normalisation and sizes as the sentence-transformers modules state them."""
    missing = [name for name in MODEL_FILES_REQUIRED if not (folder / name).is_file()]
    if missing:
        raise PipelineError(
            f"{folder}: not a plain sentence-transformers folder (missing {', '.join(missing)}); rerun merge_adapter"
        )
    if (folder / "adapter_config.json").exists():
        raise PipelineError(f"{folder}: holds a PEFT adapter, not merged weights; rerun merge_adapter")
    modules = read_json(folder / "modules.json")
    types = [module["type"].rsplit(".", 1)[-1] for module in modules]
    mode, dimension = "unknown", None
    for module in modules:
        if module["type"].endswith("Pooling"):
            config = read_json(folder / module["path"] / "config.json")
            # sentence-transformers 6 writes pooling_mode/embedding_dimension; earlier versions one
            # boolean per mode (pooling_mode_mean_tokens, ...) and word_embedding_dimension.
            if isinstance(config.get("pooling_mode"), str):
                mode = config["pooling_mode"]
            else:
                modes = [
                    key.removeprefix("pooling_mode_").removesuffix("_tokens").removesuffix("_token")
                    for key, value in config.items()
                    if key.startswith("pooling_mode_") and value is True
                ]
                mode = ", ".join(modes) or "unknown"
            dimension = config.get("embedding_dimension", config.get("word_embedding_dimension"))
    bert_config = folder / "sentence_bert_config.json"
    max_seq_length = read_json(bert_config).get("max_seq_length") if bert_config.exists() else None
    return {
        "modules": types,
        "pooling": mode,
        "normalize": "Normalize" in types,
        "dimension": dimension,
        "max_seq_length": max_seq_length,
        "architecture": (read_json(folder / "config.json").get("architectures") or [None])[0],
    }


def check_loads(folder: Path) -> dict:
    """Load with plain sentence-transformers (no peft), encode, and check the vectors are unit length
    when the model states normalisation."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    vectors = model.encode(CHECK_SENTENCES, convert_to_numpy=True, show_progress_bar=False)
    norms = np.linalg.norm(vectors, axis=1)
    return {
        "dimension": int(vectors.shape[1]),
        "max_norm_error": float(np.max(np.abs(norms - 1.0))),
        "max_seq_length": model.max_seq_length,
        "sentence_transformers": _version("sentence-transformers"),
    }


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def sha256_files(folder: Path) -> dict:
    import hashlib

    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        out[str(path.relative_to(folder))] = digest.hexdigest()
    return out
