"""The step engine on the Llama-3.2-1B shape in bf16: steps/s at 1, 64 and 256 jobs, ms/step for one job,
and what a step costs when new jobs take the place of some that left (their prefill runs in that step, eagerly).

    python -m bench.gpu_engine                      on a machine with CUDA (bench/gpu.sh runs it)
    python -m bench.gpu_engine --tiny --device cpu  anywhere: a tiny shape, to check the script itself

Random weights from the config (nothing is downloaded or saved), the demo tokenizer for prompts
and text. Each row runs with CUDA graphs (after their self-check) and eagerly, on the same card
in the same process, and says whether the graphs passed their check. Those slots hold just what
the jobs need; one more row runs the most jobs with graphs in the slots a worker gives its batch by
default (MAX_PROMPT_TOKENS + MAX_STEPS positions), where a decode reads only the keys its rows reached.
"""
from __future__ import annotations

import argparse
import logging
import time

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from bench.engine_bench import prompt_ids
from bench.models import LLAMA_32_1B, TINY
from contract.jobs import GenerationParams
from contract.settings import DEMO_MODEL_PATH, Settings
from engine.batch import SequenceSpec
from engine.step_engine import StepEngine


def build(shape: dict, device: str, dtype: torch.dtype) -> StepEngine:
    """A random-weight Llama of `shape`, made directly on `device` in `dtype`."""
    tokenizer = AutoTokenizer.from_pretrained(DEMO_MODEL_PATH)
    config = LlamaConfig(**shape, bos_token_id=tokenizer.bos_token_id, eos_token_id=None, pad_token_id=0)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype).eval()
    model.generation_config.eos_token_id = None  # random weights: every job runs its full length
    return StepEngine(model, tokenizer, "llama-3.2-1b-shape")


def service_slot() -> int:
    """The slot length a worker gives its batch: MAX_PROMPT_TOKENS + MAX_STEPS, as this environment sets them."""
    defaults = Settings()
    return defaults.max_prompt_tokens + defaults.max_steps


def steps_per_second(engine: StepEngine, jobs: int, steps: int, graphs: bool,
                     slot: int | None = None) -> tuple[float, bool]:
    """`jobs` concurrent jobs (half greedy, half sampled) for `steps` steps: (total steps/s, graphs on).

    `slot`: positions each slot holds; by default just what the jobs need.
    """
    prompts = prompt_ids(engine, jobs)
    batch = engine.batch(jobs, max_length=slot or max(map(len, prompts)) + steps + 1,
                         graphs=None if graphs else False)
    batch.eos_ids = frozenset()
    for i, ids in enumerate(prompts):
        params = GenerationParams(steps=steps, top_k=10, temperature=0.0 if i % 2 == 0 else 0.8, seed=i)
        batch.add(SequenceSpec(str(i), ids, params))
    batch.step()  # admission: the prefill is not a decode step
    if engine.device.type == "cuda":
        torch.cuda.synchronize()
    done, start = 0, time.perf_counter()
    while len(batch):
        done += len(batch.step())  # each step ends with its results on the host: no sync needed
    return done / (time.perf_counter() - start), batch.graphs_on


def join_cost(engine: StepEngine, running: int, joining: int, graphs: bool, steps: int = 12) -> tuple[float, float, bool]:
    """(median ms of a plain step, median ms of a step in which `joining` jobs join, graphs on) at `running` jobs.

    Every other step, the `joining` oldest jobs leave and as many new ones take their slots, as jobs that
    end and students who submit again do: the batch keeps `running` rows.
    """
    prompts = prompt_ids(engine, running + steps * joining)
    batch = engine.batch(running + joining, max_length=max(map(len, prompts)) + 4 * steps + 1,
                         graphs=None if graphs else False)
    batch.eos_ids = frozenset()
    pending = [SequenceSpec(str(i), ids, GenerationParams(steps=4 * steps, top_k=10, temperature=0.8, seed=i))
               for i, ids in enumerate(prompts)]
    for spec in pending[:running]:
        batch.add(spec)
    live, pending = [s.key for s in pending[:running]], pending[running:]
    batch.step()
    plain, joined = [], []
    for step in range(2 * steps):
        with_join = step % 2 == 1
        if with_join:
            for key in live[:joining]:
                batch.drop(key)
            for spec in pending[:joining]:
                batch.add(spec)
            live = live[joining:] + [s.key for s in pending[:joining]]
            pending = pending[joining:]
        began = time.perf_counter()
        batch.step()  # ends with its results on the host, as in steps_per_second (with graphs: the next decode runs on)
        (joined if with_join else plain).append(1000 * (time.perf_counter() - began))
    return sorted(plain)[len(plain) // 2], sorted(joined)[len(joined) // 2], batch.graphs_on


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a tiny shape instead of Llama-3.2-1B (script check)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--joins", type=int, nargs=2, action="append", metavar=("RUNNING", "JOINING"),
                        help="measure a step where JOINING jobs join RUNNING ones (default: 255 1 and 240 16)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dtype = torch.bfloat16
    engine = build(TINY if args.tiny else LLAMA_32_1B, args.device, dtype)
    params = sum(p.numel() for p in engine.model.parameters()) / 1e6
    card = torch.cuda.get_device_name() if engine.device.type == "cuda" else "CPU"
    print(f"\n## Step engine, {'tiny' if args.tiny else 'Llama-3.2-1B'} shape ({params:.0f} M, random weights), "
          f"bf16, {card}, batch cache: {engine.cache_kind}\n", flush=True)
    print("| jobs | mode | slot | steps/s | ms/step |\n| --- | --- | --- | --- | --- |", flush=True)
    # each jobs count with slots just long enough, graphs and eager; then the most jobs in a worker's own slots
    runs = [(jobs, graphs, None) for jobs in args.jobs for graphs in (True, False)]
    for jobs, graphs, slot in runs + [(max(args.jobs), True, service_slot())]:
        rate, on = steps_per_second(engine, jobs, args.steps, graphs, slot)
        mode = "CUDA graphs" if on else ("eager (graphs failed their check)" if graphs else "eager")
        if graphs and not on and engine.device.type != "cuda":
            continue  # CPU: no graphs to compare
        where = f"{slot:,} (a worker's: MAX_PROMPT_TOKENS + MAX_STEPS)" if slot else "what the jobs need"
        print(f"| {jobs} | {mode} | {where} | {rate:,.0f} | {1000 * jobs / rate:.2f} |", flush=True)
    print("\n### A step in which jobs join (their prefill runs in it)\n", flush=True)
    print("| running | joining | mode | plain step (ms) | step with the join (ms) |\n| --- | --- | --- | --- | --- |",
          flush=True)
    for running, joining in args.joins or [(255, 1), (240, 16)]:
        for graphs in (True, False):
            plain, joined, on = join_cost(engine, running, joining, graphs)
            if graphs and not on and engine.device.type != "cuda":
                continue
            mode = "CUDA graphs" if on else ("eager (graphs failed their check)" if graphs else "eager")
            print(f"| {running} | {joining} | {mode} | {plain:.2f} | {joined:.2f} |", flush=True)


if __name__ == "__main__":
    main()
