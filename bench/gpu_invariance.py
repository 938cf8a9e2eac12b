"""What batching does to a job's steps in bf16 on this device: batched vs alone, graphs vs eager, greedy vs generate.

    python -m bench.gpu_invariance                      on a machine with CUDA (bench/gpu.sh runs it)
    python -m bench.gpu_invariance --tiny --device cpu  anywhere: a tiny shape, to check the script itself

A random-weight Llama (bench.gpu_engine.build) with its final norm scaled so that the logits
spread like a trained model's (std about 3) instead of the near-uniform distribution random
weights give: ties between candidates are then as rare as in real use. Prints one table:
for each comparison, how many jobs gave the same tokens and the largest probability difference
over the steps whose contexts still agreed.
"""
from __future__ import annotations

import argparse
import logging

import torch

from bench.engine_bench import PROMPT
from bench.gpu_engine import build
from bench.models import LLAMA_32_1B, TINY
from contract.jobs import GenerationParams
from engine.batch import SequenceSpec
from engine.step_engine import StepEngine

LOGIT_STD = 3.0


def spread_logits(engine: StepEngine) -> float:
    """Scale the final norm so that next-token logits have std LOGIT_STD; returns the scale."""
    ids = torch.tensor([engine.tokenize(PROMPT)], device=engine.device)
    with torch.no_grad():
        std = engine.model(ids).logits[0, -1].float().std().item()
        engine.model.model.norm.weight.mul_(LOGIT_STD / std)
    return LOGIT_STD / std


def jobs(engine: StepEngine, n: int, steps: int) -> list[SequenceSpec]:
    """n jobs: greedy, T 0.8, T 1.2 with top_p 0.9, in turn; prompts of different lengths."""
    kinds = [(0.0, 1.0), (0.8, 1.0), (1.2, 0.9)]
    out = []
    for i in range(n):
        temperature, top_p = kinds[i % len(kinds)]
        ids = engine.tokenize(f"{PROMPT} {'on the mat ' * (i % 5)}".strip())
        out.append(SequenceSpec(str(i), ids, GenerationParams(steps=steps, top_k=10, temperature=temperature,
                                                              top_p=top_p, seed=i)))
    return out


def run(engine: StepEngine, specs: list[SequenceSpec], slots: int, graphs: bool, stagger: int = 0) -> dict:
    """Step the specs in one batch (spec i joins at step i * stagger // len); steps per key."""
    length = max(len(s.ids) for s in specs) + specs[0].params.steps + 1
    batch = engine.batch(slots, max_length=length, graphs=None if graphs else False)
    batch.eos_ids = frozenset()
    out: dict[str, list] = {s.key: [] for s in specs}
    pending, tick = list(specs), 0
    while pending or len(batch):
        while pending and int(pending[0].key) * stagger // len(specs) <= tick:
            batch.add(pending.pop(0))
        for r in batch.step():
            out[r.key].append((r.chosen_id, r.top_ids, r.top_probs))
        tick += 1
    return out, batch.graphs_on


def compare(a: dict, b: dict) -> tuple[int, int, float]:
    """(jobs with the same tokens, jobs, largest |prob difference| while the two runs' contexts agree)."""
    same, worst = 0, 0.0
    for key, steps_a in a.items():
        steps_b = b[key]
        same += [s[0] for s in steps_a] == [s[0] for s in steps_b]
        for (tok_a, ids_a, probs_a), (tok_b, ids_b, probs_b) in zip(steps_a, steps_b):
            by_id = dict(zip(ids_b, probs_b))
            worst = max([worst] + [abs(p - by_id[i]) for i, p in zip(ids_a, probs_a) if i in by_id])
            if tok_a != tok_b:
                break  # the contexts differ from here on
    return same, len(a), worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a tiny shape instead of Llama-3.2-1B (script check)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--jobs", type=int, default=48)
    parser.add_argument("--steps", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    engine = build(TINY if args.tiny else LLAMA_32_1B, args.device, torch.bfloat16)
    scale = spread_logits(engine)
    specs = jobs(engine, args.jobs, args.steps)
    slots = 64
    together, graphs_on = run(engine, specs, slots, graphs=True, stagger=8)
    again, _ = run(engine, specs, slots, graphs=True, stagger=8)
    eager, _ = run(engine, specs, slots, graphs=False, stagger=8)
    alone = {}
    for spec in specs:
        alone |= run(engine, [SequenceSpec(spec.key, spec.ids, spec.params)], 1, graphs=False)[0]
    greedy = specs[0]
    ids = torch.tensor([greedy.ids], device=engine.device)
    generated = engine.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.steps,
                                      do_sample=False, eos_token_id=None, pad_token_id=0)[0, ids.shape[1]:].tolist()
    mine = [s[0] for s in alone[greedy.key]]
    agree = next((i for i, (x, y) in enumerate(zip(mine, generated)) if x != y), len(mine))
    card = torch.cuda.get_device_name() if engine.device.type == "cuda" else "CPU"
    mode = "CUDA graphs" if graphs_on else "eager"
    print(f"\n## Batch invariance, {'tiny' if args.tiny else 'Llama-3.2-1B'} shape, random weights (final norm x"
          f"{scale:.3g}: logit std {LOGIT_STD}), bf16, {card}\n")
    print(f"{args.jobs} jobs x {args.steps} steps (greedy / T 0.8 / T 1.2 top_p 0.9 in turn), batch of {slots} "
          f"slots joining over 8 steps ({mode})\n")
    print("| comparison | jobs with the same tokens | largest prob difference while contexts agree |")
    print("| --- | --- | --- |")
    for name, a, b in [(f"batched ({mode}) vs the same batch again", together, again),
                       (f"batched ({mode}) vs batched eager", together, eager),
                       (f"batched ({mode}) vs each job alone (eager)", together, alone),
                       ("batched eager vs each job alone (eager)", eager, alone)]:
        same, n, worst = compare(a, b)
        print(f"| {name} | {same}/{n} | {worst:.3g} |")
    print(f"| greedy alone vs `generate` | {agree}/{len(mine)} first tokens equal | |")


if __name__ == "__main__":
    main()
