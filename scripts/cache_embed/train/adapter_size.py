"""How large a LoRA adapter is, from its parameter count, on the L6 base and on the L12 base.

The count comes from the model itself: the base architecture (its config.json, with another layer
count for the deeper base) is instantiated with random weights, nothing downloaded, and peft adds
the adapter; the trainable parameters are counted. Bytes are those of the float32 weights in the
adapter's safetensors file (the file adds a header of a few kB).
"""

from __future__ import annotations

import json
from pathlib import Path

# sentence-transformers/all-MiniLM-L12-v2 is all-MiniLM-L6-v2's architecture (BERT, hidden size 384,
# intermediate 1536, 12 heads) with 12 layers instead of 6 (both models' config.json).
L12_LAYERS = 12
FLOAT32_BYTES = 4


def lora_parameter_count(
    base_config: dict, r: int, target_modules: list[str], num_hidden_layers: int | None = None
) -> int:
    """Trainable parameters of a LoRA adapter of rank r on `target_modules` of the transformer
    described by `base_config` (a config.json dict), optionally with another layer count."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModel

    settings = dict(base_config)
    model_type = settings.pop("model_type")
    if num_hidden_layers is not None:
        settings["num_hidden_layers"] = num_hidden_layers
    config = AutoConfig.for_model(model_type, **settings)
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = AutoModel.from_config(config)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=r, target_modules=list(target_modules)))
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


def adapter_sizes(base_model_dir: str | Path, r: int, target_modules: list[str]) -> dict:
    """{"l6" | "l12": {"parameters", "float32_bytes"}} for an adapter on the base at base_model_dir
    (its own depth, reported as l6) and on the same architecture with L12_LAYERS layers."""
    config = json.loads((Path(base_model_dir) / "config.json").read_text(encoding="utf-8"))
    sizes = {}
    for name, layers in (("l6", None), ("l12", L12_LAYERS)):
        count = lora_parameter_count(config, r, target_modules, layers)
        sizes[name] = {"parameters": count, "float32_bytes": count * FLOAT32_BYTES}
    return sizes
