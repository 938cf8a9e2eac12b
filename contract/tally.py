"""What a class sampled, step by step, set against the model's probabilities (a room's tally).

Pure functions over stored step records. Jobs that share a prompt share the context at step 1;
at step k, the jobs that chose the same tokens at steps 1..k-1 share a context again. For every
context reached by at least two jobs the tally counts the tokens they chose there, beside the
model's probabilities for that context (taken from the jobs' own step records).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

Step = dict[str, Any]


def tally(jobs_steps: list[list[Step]], max_steps: int) -> list[dict[str, Any]]:
    """Count chosen tokens per (step, shared context) over jobs' step records (each list ordered from step 1).

    Returns:
        One entry per step and context reached by at least two jobs, steps in order, larger groups first:
        {"step", "context", "total", "chosen": [{"token", "id", "count"}], "model": [{"token", "id", "prob"}]}.
    """
    entries: list[dict[str, Any]] = []
    groups: dict[tuple[int, ...], list[list[Step]]] = {(): jobs_steps}
    for index in range(1, max_steps + 1):
        following: dict[tuple[int, ...], list[list[Step]]] = defaultdict(list)
        level = []
        for prefix, members in groups.items():
            reached = [steps for steps in members if len(steps) >= index]
            if len(reached) < 2:
                continue  # a context one job reached is no class statistic, and no later one can come from it
            level.append(entry(index, [steps[index - 1] for steps in reached]))
            for steps in reached:
                following[prefix + (steps[index - 1]["chosen"]["id"],)].append(steps)
        if not level:
            break
        entries += sorted(level, key=lambda e: -e["total"])
        groups = following
    return entries


def entry(index: int, records: list[Step]) -> dict[str, Any]:
    """The tally of one shared context: how often each token was chosen, and the model's probabilities."""
    counts = Counter(r["chosen"]["id"] for r in records)
    model: dict[int, dict[str, Any]] = {}
    for r in records:
        for cand in list(r["top"]) + [r["chosen"]]:
            model.setdefault(cand["id"], {"token": cand["token"], "id": cand["id"], "prob": cand["prob"]})
    chosen = [{"token": model[i]["token"], "id": i, "count": n} for i, n in counts.items()]
    return {
        "step": index,
        "context": records[0]["context"],
        "total": len(records),
        "chosen": sorted(chosen, key=lambda c: (-c["count"], -model[c["id"]]["prob"])),
        "model": sorted(model.values(), key=lambda c: -c["prob"]),
    }
