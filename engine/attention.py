"""Which fused attention kernel a CUDA worker's model uses.

PyTorch's `scaled_dot_product_attention` prefers cuDNN's attention on Hopper when a mask is given. cuDNN
builds an execution plan for every new shape on the host, and the engine's shapes change all the time:
an eager step reads keys up to the longest row (one more each step) and every prefill has its own
length. On an H200 (bench/gpu.sh, 2026-11-28) that plan-building cost 65 ms of host time per eager
step of Llama-3.2-1B, against about 8 ms for the step's kernels, so every step with a joining job
stalled the batch. With cuDNN's kernel off, PyTorch takes its memory-efficient kernel (flash attention
takes no mask), which has no per-shape set-up.
"""
from __future__ import annotations

import torch


def prefer_attention_kernels(device: torch.device) -> str:
    """Turn cuDNN's attention off for this process when the model runs on CUDA; returns what was done, for the log.

    The switch is process-wide (PyTorch has no per-model one): a worker process holds one model.
    """
    if device.type != "cuda":
        return "attention: PyTorch's default kernels"
    torch.backends.cuda.enable_cudnn_sdp(False)
    return "attention: cuDNN's kernel off (per-shape plans cost the host; memory-efficient kernel instead)"
