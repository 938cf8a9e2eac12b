"""Scoring text against the model: surprisal totals of a score job, and a student's guess at a step.

Pure functions over stored step records (standard library only: the web, the worker and the CLI use them).
"""
from __future__ import annotations

import math
import sys
from typing import Any

Step = dict[str, Any]


def surprisal(steps: list[Step]) -> dict[str, Any]:
    """How surprised the model was by each chosen token: -log2 p in bits, their sum, and the perplexity.

    perplexity = 2 ** (total_bits / tokens), the model's average branching factor over the text.
    """
    bits = [-math.log2(max(s["chosen"]["prob"], sys.float_info.min)) for s in steps]  # p underflowed to 0: ~1022 bits
    total = sum(bits)
    return {"bits": bits, "total_bits": total, "perplexity": 2 ** (total / len(bits)) if bits else None}


def match_guess(step: Step, guess: str) -> dict[str, Any] | None:
    """The candidate a typed guess names: its exact token text, else the same word after a space
    (students type "mat" for the token " mat"), without the spaces around it, and last in another case (a
    phone's keyboard sends "Mat " for "mat"). None when the guess is not among the step's candidates.

    Returns:
        {"token", "id", "prob", "rank"} (rank 1 = most likely).
    """
    candidates = [(i + 1, c) for i, c in enumerate(step["top"])]
    chosen = step["chosen"]
    if all(c["id"] != chosen["id"] for _, c in candidates):
        candidates.append((chosen["rank"], chosen))  # the chosen token, ranked outside the shown top-k
    word = guess.strip(" ")
    for same in (lambda a, b: a == b, lambda a, b: a.casefold() == b.casefold()):
        for text in (guess, " " + guess.lstrip(" "), word, " " + word):
            for rank, cand in candidates:
                if same(cand["token"], text):
                    return {"token": cand["token"], "id": cand["id"], "prob": cand["prob"], "rank": rank}
    return None
