"""Models for benchmarks: the demo model, and random-weight models of real shapes saved locally (no downloads)."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from contract.settings import DEMO_MODEL_PATH

# ~135 M parameters, the shape of SmolLM-135M
SMALL_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                  num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, max_position_embeddings=2048)
# 1.24 B parameters, the shape of meta-llama/Llama-3.2-1B
LLAMA_32_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                   num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, max_position_embeddings=8192,
                   rope_theta=500000.0)
# a few layers of hidden size 64 with the demo tokenizer's vocabulary: the GPU scripts' shape for a check on a CPU
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=4096, tie_word_embeddings=True, max_position_embeddings=2048, rope_theta=500000.0)


def random_model(path: Path, shape: dict, dtype: torch.dtype = torch.float32, device: str = "cpu") -> Path:
    """Save a random Llama of `shape` with the demo tokenizer to `path` (reused when already there).

    `device` is where the weights are drawn (a GPU draws a 1B model in seconds); the files are the same.
    """
    if (path / "config.json").exists():
        return path
    tokenizer = AutoTokenizer.from_pretrained(DEMO_MODEL_PATH)
    eos = tokenizer.eos_token_id
    config = LlamaConfig(**shape, bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=eos)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.generation_config.eos_token_id = None  # random weights: never stop early, every run is full length
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
