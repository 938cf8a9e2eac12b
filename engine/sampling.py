"""Turn a batch of next-token logits into what a step shows: top-k, the chosen token, entropy.

All of it runs on the logits' device, row by row independent, with one host transfer per step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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


_MASK64 = (1 << 64) - 1


def step_uniform(seed: int, index: int) -> float:
    """The uniform draw that picks job `seed`'s token at step `index`: splitmix64 of (seed, index), in [0, 1).

    Keyed by (seed, index) alone, so a resumed or batched job draws exactly what it would alone;
    a few integer operations, cheap enough to compute for every sampled row at every step.
    """
    x = (seed * 0x9E3779B97F4A7C15 + index * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return ((x ^ (x >> 31)) >> 11) * (1.0 / (1 << 53))


def step_uniforms(seeds: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """step_uniform for many rows at once: uint64 seeds and int64 step numbers (n,) -> float64 draws (n,).

    The same splitmix64 in numpy's wrapping uint64 arithmetic, so each draw equals step_uniform's.
    """
    with np.errstate(over="ignore"):
        x = seeds * np.uint64(0x9E3779B97F4A7C15) + indices.astype(np.uint64) * np.uint64(0xD1B54A32D192ED03)
        x += np.uint64(0x632BE59BD9B4E019)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return ((x ^ (x >> np.uint64(31))) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


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
        temperature: per row; 0 means greedy: the highest logit, the lowest id among ties (as `generate`).
        top_p: per row nucleus mass in (0, 1]; only used when sampling.
        uniform: per row draw in [0, 1) (see step_uniform); only used when sampling.
        top_k: per row number of candidates to report.
        forced: per row token id to take instead of choosing one (-1: choose); None: no row is forced.

    Returns:
        One RowChoice per row. Probabilities are softmax(logits / T) (T > 0) or softmax(logits) (T = 0).
    """
    k = min(max(top_k), logits.shape[-1])
    packed = pack_choices(logits, temperature, top_p, uniform, forced or [-1] * len(temperature), k)
    return [RowChoice(ids[:n], probs[:n], chosen, prob, rank, entropy)
            for ids, probs, (chosen, prob, rank, entropy, _), n in zip(*unpack(packed.cpu(), k), top_k)]


def unpack(packed: torch.Tensor, k: int) -> tuple[list[list[int]], list[list[float]], list[tuple]]:
    """Host (B, 2k + 5) packed choices -> (top ids, top probs, (chosen, prob, rank, entropy, short)) per row."""
    ids = packed[:, k:2 * k].long().tolist()
    probs = packed[:, :k].tolist()
    tails = [(int(c), p, int(r), e, s) for c, p, r, e, s in packed[:, 2 * k:].tolist()]
    return ids, probs, tails


def _distribution(logits: torch.Tensor, scale: torch.Tensor):
    """probs (B, V) and entropy (B,), row by row independent."""
    logp = torch.log_softmax(logits.float() / scale[:, None], dim=-1)  # (B, V)
    probs = logp.exp()
    entropy = -(probs * logp.clamp_min(torch.finfo(logp.dtype).min)).sum(-1)  # 0 * -inf -> 0
    return probs, entropy


def _describe(logits: torch.Tensor, scale: torch.Tensor, k: int):
    """probs (B, V), entropy (B,), top-k probs and ids (B, k), all row by row independent."""
    probs, entropy = _distribution(logits, scale)
    top_probs, top_ids = probs.topk(k, dim=-1)  # (B, k), descending
    return probs, entropy, top_probs, top_ids


def _pack(probs, entropy, top_probs, top_ids, chosen, short) -> torch.Tensor:
    """Everything a step shows, in one (B, 2k + 5) float64 tensor: one host transfer.

    Probabilities and entropy are reported to 6 significant digits (rounded here, on the device):
    plenty for bars and surprisal, and a short decimal that the host writes out twice as fast.
    """
    chosen_prob = probs.gather(1, chosen[:, None]).squeeze(1)
    rank = (probs > chosen_prob[:, None]).sum(-1) + 1  # 1-based rank in the whole distribution
    return torch.cat([six_digits(top_probs.double()), top_ids.double(), chosen[:, None].double(),
                      six_digits(chosen_prob[:, None].double()), rank[:, None].double(),
                      six_digits(entropy[:, None].double()), short[:, None].double()], dim=1)


def six_digits(x: torch.Tensor) -> torch.Tensor:
    """x rounded to 6 significant digits (0 stays 0); dividing by an exact power of ten gives the nearest double."""
    magnitude = torch.floor(torch.log10(x.abs().clamp_min(1e-300)))
    scale = torch.pow(10.0, 5 - magnitude)
    return torch.where(x != 0, torch.round(x * scale) / scale, x)


@torch.no_grad()
def pack_choices(logits: torch.Tensor, temperature: list[float], top_p: list[float], uniform: list[float],
                 forced: list[int], k: int) -> torch.Tensor:
    """The eager choice: rows split by kind on the host; returns the packed (B, 2k + 5) tensor on the device."""
    device = logits.device
    scale = torch.tensor([t if t > 0 else 1.0 for t in temperature], dtype=torch.float32, device=device)
    probs, entropy, top_probs, top_ids = _describe(logits, scale, k)
    sampled = [b for b, t in enumerate(temperature) if t > 0 and forced[b] < 0]  # decided on the host: no sync
    if len(sampled) == len(temperature):  # every row samples (a class at one temperature): no (B, V) copy
        chosen = _sample(probs, top_p, uniform)
    else:
        chosen = logits.argmax(-1)  # greedy rows: the most likely token, the lowest id among ties (as generate)
        if sampled:
            rows = torch.tensor(sampled, device=device)
            chosen[rows] = _sample(probs[rows], [top_p[b] for b in sampled], [uniform[b] for b in sampled])
    pinned = [b for b, f in enumerate(forced) if f >= 0]
    if pinned:
        chosen[torch.tensor(pinned, device=device)] = torch.tensor([forced[b] for b in pinned], device=device)
    return _pack(probs, entropy, top_probs, top_ids, chosen, torch.zeros_like(entropy))


@torch.no_grad()
def pack_choices_fixed(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, uniform: torch.Tensor,
                       forced: torch.Tensor, k: int) -> torch.Tensor:
    """The same choice with no host decisions (fixed shapes, no sync): what a CUDA graph captures.

    Every row computes every kind of draw and keeps its own. Nucleus rows look only among the
    top NUCLEUS_CANDIDATES tokens; a row whose nucleus reaches beyond them is flagged `short`
    (last packed column) and must be redone with `pack_choices`.
    """
    scale = torch.where(temperature > 0, temperature, torch.ones_like(temperature))
    probs, entropy = _distribution(logits, scale)
    whole = _inverse_cdf_t(probs, uniform.to(probs.dtype))
    candidates = min(max(NUCLEUS_CANDIDATES, k), probs.shape[-1])
    sorted_probs, sorted_ids = probs.topk(candidates, dim=-1)  # one selection serves the shown k and the nucleus
    top_probs, top_ids = sorted_probs[:, :k], sorted_ids[:, :k]
    limit = top_p.to(probs.dtype)
    nucleus = _nucleus(sorted_probs, sorted_ids, limit, uniform.to(probs.dtype))
    sampled = torch.where(top_p >= 1.0, whole, nucleus)
    chosen = torch.where(temperature > 0, sampled, logits.argmax(-1))  # greedy: as pack_choices, ties included
    chosen = torch.where(forced >= 0, forced, chosen)
    short = (temperature > 0) & (top_p < 1.0) & (forced < 0) & (sorted_probs.sum(-1) < limit)
    if candidates == probs.shape[-1]:
        short = torch.zeros_like(short)
    return _pack(probs, entropy, top_probs, top_ids, chosen, short)


def _inverse_cdf_t(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    cdf = probs.cumsum(-1)
    pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)
    return pick.clamp_max(probs.shape[-1] - 1).squeeze(1)


NUCLEUS_CANDIDATES = 1024  # top_p is looked for among this many tokens first; a full sort only if they fall short


def _sample(probs: torch.Tensor, top_p: list[float], uniform: list[float]) -> torch.Tensor:
    """Inverse-CDF sampling of each row, driven by the given uniforms; probs (B, V) -> (B,) token ids.

    Rows with top_p = 1 sample the whole distribution in vocabulary order (no sort); the others
    sample their nucleus in descending order. A row's result never depends on the other rows.
    """
    whole = [b for b, p in enumerate(top_p) if p >= 1.0]
    nucleus = [b for b, p in enumerate(top_p) if p < 1.0]
    if not nucleus:  # the usual case: every row samples its whole distribution, no (B, V) copy
        return _inverse_cdf(probs, uniform)
    chosen = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    if whole:
        rows = torch.tensor(whole, device=probs.device)
        chosen[rows] = _inverse_cdf(probs[rows], [uniform[b] for b in whole])
    rows = torch.tensor(nucleus, device=probs.device)
    chosen[rows] = _sample_nucleus(probs[rows], [top_p[b] for b in nucleus], [uniform[b] for b in nucleus])
    return chosen


def _inverse_cdf(probs: torch.Tensor, uniform: list[float]) -> torch.Tensor:
    """Index where each row's running sum first exceeds u * total; probs (B, N) -> (B,)."""
    return _inverse_cdf_t(probs, torch.tensor(uniform, dtype=probs.dtype, device=probs.device))


def _sample_nucleus(probs: torch.Tensor, top_p: list[float], uniform: list[float]) -> torch.Tensor:
    """Sample each row from its smallest set of most likely tokens whose mass reaches top_p.

    Only a row whose nucleus outruns the candidates is sorted whole: tied tokens may come out of a
    sort in another order than out of the candidates' selection, so a row's draw never depends on
    whether a batch-mate needed the sort.
    """
    limit = torch.tensor(top_p, dtype=probs.dtype, device=probs.device)
    u = torch.tensor(uniform, dtype=probs.dtype, device=probs.device)
    candidates = min(NUCLEUS_CANDIDATES, probs.shape[-1])
    sorted_probs, sorted_ids = probs.topk(candidates, dim=-1)
    chosen = _nucleus(sorted_probs, sorted_ids, limit, u)
    if candidates < probs.shape[-1]:
        flat = (sorted_probs.sum(-1) < limit).nonzero().squeeze(1)  # their nucleus needs every token
        if flat.numel():
            whole_probs, whole_ids = probs[flat].sort(dim=-1, descending=True)
            chosen[flat] = _nucleus(whole_probs, whole_ids, limit[flat], u[flat])
    return chosen


def _nucleus(sorted_probs: torch.Tensor, sorted_ids: torch.Tensor, limit: torch.Tensor,
             u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw among each row's most likely tokens (B, N), descending, while the mass before them is below
    `limit` (B,); returns (B,) token ids. The most likely token is always kept."""
    keep = (sorted_probs.cumsum(-1) - sorted_probs) < limit[:, None]
    last = (keep.sum(-1) - 1).clamp_min(0)  # a limit of 0 keeps nothing: index 0 then, never -1 (a device-side assert)
    pick = torch.minimum(_inverse_cdf_t(sorted_probs * keep, u), last)  # never land on a dropped token
    return sorted_ids.gather(1, pick[:, None]).squeeze(1)
