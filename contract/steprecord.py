"""The stored form of one step: numbers only, packed as little-endian float64, one row of a worker's batch.

A worker writes a whole batch step's records as one buffer cut straight from the device's result,
with no per-step text formatting; the reader turns a record into the API's step (token texts come
from the model's vocabulary table, see `TokenTexts`). Layout of a record with k candidates:

    [k, flags, computed_at, chosen_id, chosen_prob, chosen_rank, entropy, p_1, id_1, ..., p_k, id_k]

Ids and counts are whole numbers, exact in a double. Probabilities and entropy are already rounded
to 6 significant digits on the device.
"""
from __future__ import annotations

import struct
from typing import Any, Iterable, Mapping

HEAD = 7  # fields before the candidates
FORCED = 1  # flags bit: the chosen token was forced (scoring), not sampled
_FORMATS: dict[int, struct.Struct] = {}


def record_width(k: int) -> int:
    """Doubles in a record with k candidates."""
    return HEAD + 2 * k


def _format(k: int) -> struct.Struct:
    fmt = _FORMATS.get(k)
    if fmt is None:
        fmt = _FORMATS[k] = struct.Struct(f"<{record_width(k)}d")
    return fmt


def pack_record(top: Iterable[tuple[int, float]], chosen: tuple[int, float, int], entropy: float,
                computed_at: float, forced: bool = False) -> bytes:
    """One record from plain values: top (id, prob) pairs, chosen (id, prob, rank)."""
    pairs = [x for token_id, prob in top for x in (prob, token_id)]
    k = len(pairs) // 2
    return _format(k).pack(k, FORCED if forced else 0, computed_at, *chosen, entropy, *pairs)


def unpack_record(raw: bytes) -> tuple[float, ...]:
    """A record's values, in the layout above."""
    return _format(int(struct.unpack_from("<d", raw)[0])).unpack(raw)


def chosen_id(values: tuple[float, ...]) -> int:
    """The chosen token's id."""
    return int(values[3])


def record_ids(values: tuple[float, ...]) -> list[int]:
    """Every token id a record mentions: the chosen one, then the candidates."""
    return [int(values[3])] + [int(i) for i in values[HEAD + 1::2]]


def to_step(values: tuple[float, ...], index: int, texts: Mapping[int, str]) -> dict[str, Any]:
    """The API step (without `context`) from a record's values; `texts` maps token ids to display texts."""
    chosen = int(values[3])
    step = {
        "index": index,
        "top": [{"token": texts[i], "id": i, "prob": p} for i, p in zip(map(int, values[HEAD + 1::2]), values[HEAD::2])],
        "chosen": {"token": texts[chosen], "id": chosen, "prob": values[4], "rank": int(values[5])},
        "entropy": values[6],
        "computed_at": values[2],
    }
    if int(values[1]) & FORCED:
        step["forced"] = True
    return step
