"""Load a Hugging Face causal LM once, onto the right device and dtype."""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from contract.tasks import model_id
from engine.fingerprint import files_fingerprint, model_folder
from engine.step_engine import StepEngine

log = logging.getLogger(__name__)


def pick_device(requested: str) -> torch.device:
    """`auto` picks CUDA when present; `cuda` without a GPU is an error, not a silent fallback."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("DEVICE=cuda but no CUDA device is visible")
    return torch.device(requested)


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """An explicit DTYPE as given; `auto`: bf16 on GPUs that compute in it (compute capability 8+), fp16 on older GPUs, fp32 on CPU."""
    if requested != "auto":
        return getattr(torch, requested)
    if device.type != "cuda":
        return torch.float32
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def available_cores(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """Cores this process may use: its CPU affinity, capped by a container's CPU limit (cgroup v2 `cpu.max`)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cgroup.read_text().split()
        if quota != "max":
            cores = min(cores, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit here
    return max(1, cores)


def thread_share(cores: int, workers: int) -> int:
    """Torch threads for one of `workers` workers on `cores` cores; one share stays free for the web and Redis.

    Oversubscribed OpenMP threads spin: a step gets 10-20x slower when threads outnumber free cores.
    """
    return max(1, cores // (workers + 1))


def set_cpu_threads(threads: int = 0, workers: int = 1) -> int:
    """Cap torch's CPU threads (0: this worker's share of the cores, see `thread_share`)."""
    n = threads or thread_share(available_cores(), workers)
    torch.set_num_threads(n)
    return n


def load_engine(model_name: str, device: str = "auto", hf_token: str = "", threads: int = 0,
                dtype: str = "auto", revision: str = "", workers: int = 1) -> StepEngine:
    """Load model and tokenizer from a local path or the Hugging Face cache, weights straight onto the device.

    `dtype` and `device` as in `pick_dtype`/`pick_device`; `revision` pins a Hub model's branch, tag or commit.
    """
    model_name = os.path.expanduser(model_name) if model_name.startswith("~") else model_name  # as a .env gives it
    n_threads = set_cpu_threads(threads, workers)
    target = pick_device(device)
    torch_dtype = pick_dtype(dtype, target)
    token = hf_token or None
    pinned = revision or None
    log.info("loading %s%s on %s (%s, %d torch threads)", model_name, f"@{revision}" if revision else "",
             target, str(torch_dtype).removeprefix("torch."), n_threads)
    tokenizer = AutoTokenizer.from_pretrained(model_name, token=token, revision=pinned)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # device_map: each tensor is read from the safetensors file straight into device memory (no CPU copy of the model)
    model = AutoModelForCausalLM.from_pretrained(model_name, token=token, revision=pinned, dtype=torch_dtype,
                                                 device_map=target)
    model.eval()
    engine = StepEngine(model=model, tokenizer=tokenizer, name=model_id(model_name),
                        fingerprint=_fingerprint(model_name, pinned))
    engine.cache_kind  # probe the slot cache now, at load, and log the choice
    return engine


def _fingerprint(model_name: str, revision: str | None) -> str:
    """The loaded model's files' fingerprint; "" (no comparison with other workers) when its folder cannot be read."""
    try:
        return files_fingerprint(model_folder(model_name, revision))
    except Exception as exc:  # noqa: BLE001 - the model is loaded: serving it matters more than this check
        log.warning("%s: could not fingerprint its files (%s); it is not compared with other workers'",
                    model_name, exc)
        return ""
