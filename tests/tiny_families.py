"""Tiny random models of every architecture family the engine serves, sharing the tiny tokenizer.

Sliding-window families get a window of 6 tokens, shorter than the test prompts, so the
windowed masks are exercised.
"""
from __future__ import annotations

import torch
import transformers as tf

WINDOW = 6
_LLAMA_LIKE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=128)

FAMILIES = {
    "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, _LLAMA_LIKE),
    "gpt2": (tf.GPT2Config, tf.GPT2LMHeadModel, dict(n_embd=32, n_layer=2, n_head=4, n_positions=128)),
    "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM, _LLAMA_LIKE),
    "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM, _LLAMA_LIKE | dict(head_dim=8)),
    "mistral": (tf.MistralConfig, tf.MistralForCausalLM, _LLAMA_LIKE | dict(sliding_window=WINDOW)),
    "gemma": (tf.GemmaConfig, tf.GemmaForCausalLM, _LLAMA_LIKE | dict(head_dim=8)),
    "gemma2": (tf.Gemma2Config, tf.Gemma2ForCausalLM, _LLAMA_LIKE | dict(head_dim=8, sliding_window=WINDOW)),
    "gemma3": (tf.Gemma3TextConfig, tf.Gemma3ForCausalLM, _LLAMA_LIKE | dict(
        head_dim=8, sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention"])),
    "phi3": (tf.Phi3Config, tf.Phi3ForCausalLM, _LLAMA_LIKE),
    "gpt_neox": (tf.GPTNeoXConfig, tf.GPTNeoXForCausalLM, dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                            num_attention_heads=4, max_position_embeddings=128)),
    "opt": (tf.OPTConfig, tf.OPTForCausalLM, dict(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                                                word_embed_proj_dim=32, max_position_embeddings=128)),
    "falcon": (tf.FalconConfig, tf.FalconForCausalLM, dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                         max_position_embeddings=128)),
    "olmo2": (tf.Olmo2Config, tf.Olmo2ForCausalLM, _LLAMA_LIKE),
    "smollm3": (tf.SmolLM3Config, tf.SmolLM3ForCausalLM, _LLAMA_LIKE),
}


def tiny_family_model(name: str, vocab_size: int, eos: int, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A random 2-layer model of family `name`, in eval mode, with sharp enough logits to vary its output."""
    config_class, model_class, shape = FAMILIES[name]
    config = config_class(vocab_size=vocab_size, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, **shape)
    torch.manual_seed(0)
    model = model_class(config)
    with torch.no_grad():
        model.get_output_embeddings().weight.normal_(0, 0.3)
        model.get_input_embeddings().weight.normal_(0, 1.0)
    return model.to(dtype).eval()
