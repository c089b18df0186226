"""Build, offline, a tiny randomly initialised Qwen2 chat model for tests of the vLLM paths.

No download: a byte-level BPE tokenizer is trained locally with `tokenizers` (Qwen2's own NFC
normaliser and split regex, then ByteLevel without its regex, so the saved Qwen2Tokenizer
reloads identically), wrapped as a Qwen2Tokenizer with a ChatML chat template, and a 2-layer
Qwen2ForCausalLM with random weights is saved beside it (safetensors, about 0.5 MB).

The model's answers are random junk: that is the point (the failure paths are real).

    python tests/tiny_qwen.py OUTDIR [HIDDEN_SIZE]   # or build_tiny_qwen(OUTDIR) from Python

Attention heads are HIDDEN_SIZE / 64 (default 128: 2 heads), with one KV head; vLLM's
tensor-parallel size must divide the number of heads (256: 4 heads, tensor-parallel 4).
"""

from __future__ import annotations

import sys
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Training text: enough English, JSON punctuation and medical words for a few hundred merges.
_CORPUS = [
    '{"paraphrases": ["What are the symptoms of shingles?"], "negatives": ["How is shingles treated?"]}',
    "What are the symptoms of diabetes? How is high blood pressure treated? What causes asthma?",
    "Question: What should I do if I forget a dose of metformin? Write exactly 3 paraphrases and 2 negatives.",
    "You write evaluation data for a semantic cache in front of a consumer health question-answering service.",
    "Paraphrases - each must ask exactly the same question. Negatives - a related question, different answer.",
    "Reply with one JSON object only, with exactly the number of strings asked for in each list.",
    "0123456789 , . ; : ! ? ' \" ( ) [ ] { } - _ / \\ \n\t",
]


def build_tiny_qwen(outdir: str | Path, hidden_size: int = 128, seed: int = 0) -> Path:
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        min_frequency=1,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    model_json = __import__("json").loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_json["merges"]]

    tokenizer = Qwen2Tokenizer(
        vocab=model_json["vocab"],
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.model_max_length = 4096

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=hidden_size // 64,
        num_key_value_heads=1,  # head_dim 64 (vLLM CPU attention needs >= 32)
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        torch_dtype="bfloat16",
    )
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(outdir, safe_serialization=True)
    tokenizer.save_pretrained(outdir)
    return outdir


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (1, 2):
        print("usage: python tests/tiny_qwen.py OUTDIR [HIDDEN_SIZE]", file=sys.stderr)
        return 2
    path = build_tiny_qwen(argv[0], *(int(size) for size in argv[1:]))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
