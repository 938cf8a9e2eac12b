"""The notebook's printed trace, one step at a time: context, top-k with bars, SELECTED, NEW context."""
from __future__ import annotations

import json
import math
import re
from typing import Any

RULE = "=" * 80
THIN = "\u2500" * 80
BAR = "\u2588"
BAR_WIDTH = 50  # a bar of 50 blocks is probability 1, as in the notebook


def quoted(text: str) -> str:
    """Text in double quotes with newlines and every control character escaped."""
    return re.sub(r"[\x7f-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", json.dumps(text, ensure_ascii=False))


def header(job: dict[str, Any]) -> str:
    """Printed once, when the job is accepted."""
    p = job["params"]
    how = f"temperature {p['temperature']:g} (sampling)" if p["temperature"] > 0 else "temperature 0 (greedy)"
    return "\n".join([
        "AUTOREGRESSIVE GENERATION",
        RULE,
        f"Job {job['id']} · model {job['model']} · {how} · top-p {p['top_p']:g} · seed {p['seed']}",
        f"Starting context: {quoted(job['prompt'])}",
        f"Generating {job['steps_total']} tokens...",
    ])


def step_block(step: dict[str, Any], temperature: float) -> str:
    """One STEP k block with every top-k candidate."""
    lines = [THIN, f"STEP {step['index']}", THIN, f"Current context: {quoted(step['context'])}", "",
             f"Top {len(step['top'])} next-token predictions (entropy {step['entropy'] / math.log(2):.2f} bits):"]
    chosen = step["chosen"]
    width = max(len(quoted(c["token"])) for c in step["top"])
    for rank, cand in enumerate(step["top"], 1):
        mark = "  <- selected" if cand["id"] == chosen["id"] else ""
        bar = BAR * int(cand["prob"] * BAR_WIDTH)
        lines.append(f"  {rank:>2}. {quoted(cand['token']):<{width}} {bar} {cand['prob']:.4f} "
                     f"({cand['prob'] * 100:.2f}%){mark}")
    how = f", rank {chosen['rank']}" if temperature > 0 else ""
    lines += ["", f"SELECTED: {quoted(chosen['token'])} (probability: {chosen['prob']:.4f}{how})",
              f"NEW context: {quoted(step['context'] + chosen['token'])}", ""]
    return "\n".join(lines)


def footer(job: dict[str, Any]) -> str:
    """Printed when the job ends."""
    outcome = {"done": "GENERATION COMPLETE!", "cancelled": "CANCELLED", "failed": "FAILED"}[job["status"]]
    lines = [RULE, outcome]
    if job.get("error"):
        lines.append(f"Error: {job['error']}")
    if job.get("finish_reason"):
        lines.append(f"Finish reason: {job['finish_reason']}")
    lines.append(f"Final output: {quoted(job['text'])}")
    return "\n".join(lines)


def score_table(steps: list[dict[str, Any]], surprisal: dict[str, Any]) -> str:
    """A scored text: one line per token (probability, rank, surprisal in bits), then the totals."""
    width = max([len(quoted(s["chosen"]["token"])) for s in steps] + [5])
    lines = ["HOW SURPRISED IS THE MODEL?", RULE, f"{'token':<{width}}  {'probability':>11}  {'rank':>6}  {'surprisal':>10}"]
    for step, bits in zip(steps, surprisal["bits"]):
        chosen = step["chosen"]
        lines.append(f"{quoted(chosen['token']):<{width}}  {chosen['prob'] * 100:>10.2f}%  {chosen['rank']:>6}  "
                     f"{bits:>6.2f} bits")
    lines += [RULE, f"{len(steps)} tokens · total surprisal {surprisal['total_bits']:.2f} bits · "
                    f"{surprisal['total_bits'] / len(steps):.2f} bits per token · perplexity {surprisal['perplexity']:.2f}"]
    return "\n".join(lines)


def partly_scored_note(job: dict[str, Any]) -> str:
    """For a score job that took its most steps before the end of its text, a note saying so; otherwise ""."""
    if not job["steps_done"] < (job.get("score_tokens") or 0):
        return ""
    return (f"note: only the first {job['steps_done']} of the text's {job['score_tokens']} tokens were scored "
            f"(a job takes at most {job['steps_total']} steps)")
