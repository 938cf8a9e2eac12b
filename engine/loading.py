"""Load a Hugging Face causal LM once, onto the right device and dtype."""
from __future__ import annotations

import logging
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from contract.tasks import model_id
from engine.step_engine import StepEngine

log = logging.getLogger(__name__)


def pick_device(requested: str) -> torch.device:
    """`auto` picks CUDA when present; `cuda` without a GPU is an error, not a silent fallback."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("DEVICE=cuda but no CUDA device is visible")
    return torch.device(requested)


def set_cpu_threads(threads: int = 0) -> int:
    """Cap torch's CPU threads (0: half the cores). Oversubscribed threads spin and slow every step."""
    n = threads or max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(n)
    return n


def load_engine(model_name: str, device: str = "auto", hf_token: str = "", threads: int = 0) -> StepEngine:
    """Load model and tokenizer from a local path or the Hugging Face cache (bf16 on CUDA, fp32 on CPU)."""
    set_cpu_threads(threads)
    target = pick_device(device)
    dtype = torch.bfloat16 if target.type == "cuda" else torch.float32
    token = hf_token or None
    log.info("loading %s on %s (%s)", model_name, target, dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_name, token=token)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_name, token=token, dtype=dtype)
    model.to(target).eval()
    engine = StepEngine(model=model, tokenizer=tokenizer, name=model_id(model_name))
    engine.cache_kind  # probe the slot cache now, at load, and log the choice
    return engine
