"""Next-token logits in fp32 for a half-precision model on CUDA: the output head reads bf16/fp16 and writes fp32.

A bf16 head rounds each logit to about 3 significant digits, so the probabilities a student sees
move in steps (a logit of 20 moves by 0.125 at least: 13% in probability) and close
candidates tie. `Fp32Head` keeps the model's output weights and multiplies them with fp32
accumulation and fp32 output (`torch.mm(..., out_dtype=torch.float32)`), at the cost of the same
matrix product. It replaces the model's head only after a probe matches an fp32 reference on the
model's own device; otherwise the model keeps its head and the log says why.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def linear_fp32(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (..., in) @ weight (out, in)^T [+ bias] in fp32, from half-precision operands without upcasting them."""
    out = torch.mm(x.reshape(-1, x.shape[-1]), weight.t(), out_dtype=torch.float32)
    if bias is not None:
        out = out + bias.float()
    return out.reshape(*x.shape[:-1], weight.shape[0])


class Fp32Head(torch.nn.Module):
    """The model's output Linear (same weight and bias tensors, tying kept), returning fp32 logits."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_fp32(x, self.weight, self.bias)


def use_fp32_head(model: torch.nn.Module) -> str:
    """Give a half-precision model an fp32-output head if the probe agrees; returns what happened, for the log.

    The product exists on CUDA; elsewhere (a CPU) the probe fails and the model keeps its head.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear):
        return "logits as the model makes them (no output Linear to replace)"
    dtype = head.weight.dtype
    if dtype == torch.float32:
        return "logits in fp32 (fp32 weights)"
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, head.in_features, generator=gen).to(head.weight.device, dtype)
    try:
        got = linear_fp32(x, head.weight, head.bias)
    except Exception as exc:  # an unsupported kernel raises on the host: the device stays usable
        return f"logits in {str(dtype).removeprefix('torch.')}: no fp32-output product here ({type(exc).__name__})"
    want = F.linear(x.float(), head.weight.float(), None if head.bias is None else head.bias.float())
    worst = (got - want).abs().max().item()
    if got.dtype != torch.float32 or not worst <= 1e-3 * (want.abs().max().item() + 1e-6):
        return f"logits in {str(dtype).removeprefix('torch.')}: the fp32-output product differs by {worst:.3g}"
    model.set_output_embeddings(Fp32Head(head))
    return f"logits in fp32 ({str(dtype).removeprefix('torch.')} head, fp32 output)"
