"""Build a tiny random Llama model and a byte-level BPE tokenizer, saved in Hugging Face format.

Tests and benchmarks load it through the same from_pretrained path as real models.
"""
from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SAMPLE_TEXT = [
    "The cat sat on the mat. The dog ran in the park.",
    "Once upon a time there was a small house by the sea.",
    "I want to learn how language models write text, one token at a time.",
    "The sun is bright today and the sky is blue.",
    "She opened the door and saw the garden full of flowers.",
]


def build_tiny_model(path: Path, *, vocab_size: int = 320, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Write config, random weights and tokenizer to `path` and return it."""
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(SAMPLE_TEXT * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    fast.save_pretrained(path)

    torch.manual_seed(seed)
    eos = fast.convert_tokens_to_ids("<|endoftext|>")
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # sharper logits than the default init, so top-k ordering is well defined
        model.lm_head.weight.normal_(0, 0.3)
        model.model.embed_tokens.weight.normal_(0, 1.0)
    model.save_pretrained(path)
    return path
