"""Turn a batch of next-token logits into what a step shows: top-k, the chosen token, entropy.

All of it runs on the logits' device, row by row independent, with one host transfer per step.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RowChoice:
    """What one row's distribution gives at one step (host values)."""

    top_ids: list[int]
    top_probs: list[float]
    chosen_id: int
    chosen_prob: float
    chosen_rank: int  # 1-based rank of the chosen token in the whole distribution
    entropy: float  # nats


def step_uniform(seed: int, index: int) -> float:
    """The uniform draw that picks job `seed`'s token at step `index`.

    Keyed by (seed, index) alone, so a resumed or batched job draws exactly what it would alone.
    """
    return random.Random(f"{seed}:{index}").random()


@torch.no_grad()
def choose(
    logits: torch.Tensor,
    temperature: list[float],
    top_p: list[float],
    uniform: list[float],
    top_k: list[int],
    forced: list[int] | None = None,
) -> list[RowChoice]:
    """Pick the next token of every row and describe its distribution.

    Args:
        logits: (B, V) next-token logits, any float dtype, on any device.
        temperature: per row; 0 means greedy over softmax(logits).
        top_p: per row nucleus mass in (0, 1]; only used when sampling.
        uniform: per row draw in [0, 1) (see step_uniform); only used when sampling.
        top_k: per row number of candidates to report.
        forced: per row token id to take instead of choosing one (-1: choose); None: no row is forced.

    Returns:
        One RowChoice per row. Probabilities are softmax(logits / T) (T > 0) or softmax(logits) (T = 0).
    """
    device = logits.device
    scale = torch.tensor([t if t > 0 else 1.0 for t in temperature], dtype=torch.float32, device=device)
    logp = torch.log_softmax(logits.float() / scale[:, None], dim=-1)  # (B, V)
    probs = logp.exp()
    entropy = -(probs * logp.clamp_min(torch.finfo(logp.dtype).min)).sum(-1)  # 0 * -inf -> 0

    k = max(top_k)
    top_probs, top_ids = probs.topk(min(k, probs.shape[-1]), dim=-1)  # (B, k), descending

    chosen = top_ids[:, 0].clone()  # greedy rows: the most likely token
    forced = forced or [-1] * len(temperature)
    sampled = [b for b, t in enumerate(temperature) if t > 0 and forced[b] < 0]  # decided on the host: no sync
    if sampled:
        rows = torch.tensor(sampled, device=device)
        chosen[rows] = _sample(probs[rows], [top_p[b] for b in sampled], [uniform[b] for b in sampled])
    pinned = [b for b, f in enumerate(forced) if f >= 0]
    if pinned:
        chosen[torch.tensor(pinned, device=device)] = torch.tensor([forced[b] for b in pinned], device=device)
    chosen_prob = probs.gather(1, chosen[:, None]).squeeze(1)
    rank = (probs > chosen_prob[:, None]).sum(-1) + 1

    # one transfer: pack everything into a single (B, 2k + 4) float64 tensor
    packed = torch.cat(
        [top_probs.double(), top_ids.double(), chosen[:, None].double(), chosen_prob[:, None].double(),
         rank[:, None].double(), entropy[:, None].double()],
        dim=1,
    ).cpu()
    width = top_probs.shape[1]
    rows = []
    for b, row in enumerate(packed.tolist()):
        n = min(top_k[b], width)
        rows.append(
            RowChoice(
                top_ids=[int(i) for i in row[width : width + n]],
                top_probs=row[:n],
                chosen_id=int(row[2 * width]),
                chosen_prob=row[2 * width + 1],
                chosen_rank=int(row[2 * width + 2]),
                entropy=row[2 * width + 3],
            )
        )
    return rows


NUCLEUS_CANDIDATES = 1024  # top_p is looked for among this many tokens first; a full sort only if they fall short


def _sample(probs: torch.Tensor, top_p: list[float], uniform: list[float]) -> torch.Tensor:
    """Inverse-CDF sampling of each row, driven by the given uniforms; probs (B, V) -> (B,) token ids.

    Rows with top_p = 1 sample the whole distribution in vocabulary order (no sort); the others
    sample their nucleus in descending order. A row's result never depends on the other rows.
    """
    chosen = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    whole = [b for b, p in enumerate(top_p) if p >= 1.0]
    nucleus = [b for b, p in enumerate(top_p) if p < 1.0]
    if whole:
        rows = torch.tensor(whole, device=probs.device)
        chosen[rows] = _inverse_cdf(probs[rows], [uniform[b] for b in whole])
    if nucleus:
        rows = torch.tensor(nucleus, device=probs.device)
        chosen[rows] = _sample_nucleus(probs[rows], [top_p[b] for b in nucleus], [uniform[b] for b in nucleus])
    return chosen


def _inverse_cdf(probs: torch.Tensor, uniform: list[float]) -> torch.Tensor:
    """Index where each row's running sum first exceeds u * total; probs (B, N) -> (B,)."""
    u = torch.tensor(uniform, dtype=probs.dtype, device=probs.device)
    cdf = probs.cumsum(-1)
    pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)
    return pick.clamp_max(probs.shape[-1] - 1).squeeze(1)


def _sample_nucleus(probs: torch.Tensor, top_p: list[float], uniform: list[float]) -> torch.Tensor:
    """Sample each row from its smallest set of most likely tokens whose mass reaches top_p."""
    limit = torch.tensor(top_p, dtype=probs.dtype, device=probs.device)
    candidates = min(NUCLEUS_CANDIDATES, probs.shape[-1])
    sorted_probs, sorted_ids = probs.topk(candidates, dim=-1)
    if candidates < probs.shape[-1] and bool((sorted_probs.sum(-1) < limit).any()):
        sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True)  # flat distribution: needs every token
    # keep a token while the mass before it is below top_p (the most likely token is always kept)
    keep = (sorted_probs.cumsum(-1) - sorted_probs) < limit[:, None]
    pick = _inverse_cdf(sorted_probs * keep, uniform)
    pick = torch.minimum(pick, keep.sum(-1) - 1)  # never land on a dropped token
    return sorted_ids.gather(1, pick[:, None]).squeeze(1)
