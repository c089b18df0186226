"""merge_adapter: fold a LoRA adapter into its base model and save a plain sentence-transformers model.

The merged model gives the same embeddings as base + adapter (checked with allclose on a few
sentences before anything is written) at the base model's speed, and loads without peft.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from cache_embed.common.cli import PipelineError, run_main, setup_logging
from cache_embed.common.files import make_readable, read_json, write_json

LOG = logging.getLogger("merge_adapter")
CHECK_SENTENCES = [
    "What are the symptoms of Glaucoma ?",
    "how do you treat high blood pressure",
    "What are the side effects of Pilocarpine?",
    "Is asthma inherited?",
    "Who should get the flu vaccine and when?",
]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-model", required=True, help="local sentence-transformers folder of the base")
    parser.add_argument("--adapter", required=True, help="PEFT adapter folder (train_adapter.py output)")
    parser.add_argument("--output", required=True, help="folder for the merged model (e.g. models/medical/merged)")
    parser.add_argument("--atol", type=float, required=True, help="tolerance of the embedding check")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    return parser.parse_args(argv)


def load_with_adapter(base_model: str, adapter: str):
    """Base + adapter the way users load it: SentenceTransformer(base).load_adapter(adapter)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(base_model), device="cpu", local_files_only=True)
    model.load_adapter(str(adapter))
    model.eval()
    return model


def merge(base_model: str, adapter: str, atol: float):
    """Returns (merged model, max abs difference to base + adapter, base-vs-adapter difference)."""
    import torch
    from peft import PeftModel
    from sentence_transformers import SentenceTransformer

    for path, what in ((base_model, "base model"), (adapter, "adapter")):
        if not Path(path).is_dir():
            raise PipelineError(f"{path}: {what} folder not found")
    if not (Path(adapter) / "adapter_config.json").exists():
        raise PipelineError(f"{adapter}: no adapter_config.json; is it a train_adapter.py output?")
    reference = load_with_adapter(base_model, adapter)
    expected = reference.encode(CHECK_SENTENCES, convert_to_tensor=True)

    model = SentenceTransformer(str(base_model), device="cpu", local_files_only=True)
    base_embeddings = model.encode(CHECK_SENTENCES, convert_to_tensor=True)
    peft_model = PeftModel.from_pretrained(model[0].model, str(adapter))
    model[0].model = peft_model.merge_and_unload()
    model.eval()
    merged = model.encode(CHECK_SENTENCES, convert_to_tensor=True)
    difference = float((merged - expected).abs().max())
    moved = float((expected - base_embeddings).abs().max())
    if not torch.allclose(merged, expected, atol=atol):
        raise PipelineError(
            f"merged embeddings differ from base + adapter by {difference:.2e} (> {atol}); "
            "check that --base-model is the base the adapter was trained on"
        )
    return model, difference, moved


def merged_card(info: dict, adapter: str) -> str:
    base = info.get("base_model", {}).get("name") or "the base model"
    return f"""---
library_name: sentence-transformers
base_model: {base}
license: cc-by-4.0
pipeline_tag: sentence-similarity
tags: [sentence-transformers, semantic-cache, merged-lora]
---

# `{base}` with its semantic-cache LoRA adapter merged

The LoRA adapter (see its folder `{Path(adapter).name}` and model card for data, license, training
and metrics) folded into the weights of `{base}`: the same embeddings as base + adapter, at the
base model's speed, without peft.

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("path/to/this/folder")
```

Training data: MedQuAD (CC BY 4.0); cite Ben Abacha and Demner-Fushman, A Question-Entailment
Approach to Question Answering, BMC Bioinformatics 20:511, 2019.
"""


def main(argv=None) -> int:
    setup_logging()
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model, difference, moved = merge(args.base_model, args.adapter, args.atol)
    LOG.info("merged == base + adapter within %.2e (adapter moves embeddings by up to %.2e)", difference, moved)
    if moved == 0.0:
        LOG.warning("the adapter does not change the embeddings (untrained adapter?)")
    output = Path(args.output)
    partial = output.with_name(f".{output.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    model.save(str(partial), safe_serialization=True)
    if not (partial / "model.safetensors").exists() or (partial / "adapter_config.json").exists():
        raise PipelineError(f"{partial}: the merged save is not a plain model; check the peft version")
    info_path = Path(args.adapter) / "training_info.json"
    info = read_json(info_path) if info_path.exists() else {}
    write_json(
        partial / "merge_info.json",
        {
            "base_model": info.get("base_model", {}).get("name"),
            "base_revision": info.get("base_model", {}).get("revision"),
            "adapter": str(Path(args.adapter)),
            "max_abs_difference": difference,
            "atol": args.atol,
            "check_sentences": len(CHECK_SENTENCES),
        },
    )
    (partial / "README.md").write_text(merged_card(info, args.adapter), encoding="utf-8")
    if output.exists():
        shutil.rmtree(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    make_readable(partial)
    os.replace(partial, output)
    LOG.info("merged model written to %s", output)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
