"""Train the offline demo model (a small Llama) on WordNet prose plus simple stories.

Usage: ``python -m training.train_demo --out models/demo`` (needs Debian
``wordnet-base`` for the corpus and ``wamerican`` for the final evaluation).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from training import card, corpus, evaluate, stories
from training.tokenizer import train_tokenizer

SEED = 1234
VOCAB_SIZE = 4096
BLOCK = evaluate.BLOCK
BATCH = 32
STEPS = 550
PEAK_LR = 2e-3
WARMUP = 50
WEIGHT_DECAY = 0.1
LOG_EVERY = 25
STORY_COUNT = 6000
THREADS = 2
MODEL = dict(
    hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4
)


@dataclass
class TrainStats:
    """What the training run did, for the final report and the model card."""

    parameters: int = 0
    wordnet_paragraphs: int = 0
    stories: int = 0
    train_tokens: int = 0
    story_tokens: int = 0
    steps: int = 0
    tokens_seen: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    loss_curve: list[tuple[int, float]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Fix every source of randomness used here."""
    random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def lr_at(step: int, steps: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < WARMUP:
        return PEAK_LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, steps - WARMUP)
    return PEAK_LR * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def make_blocks(ids: list[int], bos: int) -> torch.Tensor:
    """Cut the token stream into full BOS-prefixed training blocks."""
    step = BLOCK - 1
    rows = [[bos, *ids[i : i + step]] for i in range(0, len(ids) - step + 1, step)]
    return torch.tensor(rows)


def batches(data: torch.Tensor, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled batches, reshuffled every epoch."""
    while True:
        order = torch.randperm(len(data), generator=generator)
        for i in range(0, len(order) - BATCH + 1, BATCH):
            yield data[order[i : i + BATCH]]


def build_model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A small Llama with tied input/output embeddings."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=2 * BLOCK,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **MODEL,
    )
    return LlamaForCausalLM(config)


def train(model: LlamaForCausalLM, data: torch.Tensor, steps: int, stats: TrainStats) -> None:
    """AdamW with warm-up and cosine decay; logs the mean loss every LOG_EVERY steps."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": rest, "weight_decay": 0.0}],
        lr=PEAK_LR,
        betas=(0.9, 0.95),
    )
    compiled = torch.compile(model)
    stream = batches(data, torch.Generator().manual_seed(SEED))
    window: list[float] = []
    model.train()
    with tqdm(range(steps), desc="training", unit="step") as bar:
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, steps)
            batch = next(stream)
            loss = compiled(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            window.append(loss.item())
            if (step + 1) % LOG_EVERY == 0:
                stats.loss_curve.append((step + 1, sum(window) / len(window)))
                bar.set_postfix(loss=f"{stats.loss_curve[-1][1]:.3f}")
                window.clear()
    stats.steps, stats.tokens_seen = steps, steps * BATCH * BLOCK
    model.eval()


def main() -> None:
    """Build corpus and tokenizer, train, save, evaluate, write the model card."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models/demo"))
    parser.add_argument("--steps", type=int, default=STEPS, help="optimizer steps (shorter for smoke runs)")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    seed_everything(SEED)
    start, cpu_start = time.perf_counter(), time.process_time()
    stats = TrainStats()

    texts = corpus.build_corpus()
    supplement = stories.stories(STORY_COUNT, SEED)
    paragraphs = texts.train + supplement
    random.Random(SEED).shuffle(paragraphs)
    stats.wordnet_paragraphs, stats.stories = len(texts.train), len(supplement)
    evaluate.HELDOUT_PATH.write_text("\n".join(texts.heldout) + "\n", encoding="utf-8")

    tokenizer = train_tokenizer(paragraphs, VOCAB_SIZE, max_length=2 * BLOCK)
    ids = tokenizer("\n".join(paragraphs), add_special_tokens=False, verbose=False)["input_ids"]
    stats.train_tokens = len(ids)
    stats.story_tokens = sum(len(x) for x in tokenizer(supplement, add_special_tokens=False)["input_ids"])
    counts = torch.bincount(torch.tensor(ids), minlength=len(tokenizer)).tolist()
    evaluate.COUNTS_PATH.write_text(json.dumps(counts) + "\n")

    model = build_model(tokenizer)
    stats.parameters = model.num_parameters()
    print(f"{stats.parameters:,} parameters; {stats.train_tokens:,} training tokens")
    train(model, make_blocks(ids, tokenizer.bos_token_id), args.steps, stats)
    stats.seconds = time.perf_counter() - start
    stats.cpu_seconds = time.process_time() - cpu_start

    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    report = evaluate.evaluate(args.out)
    (args.out / "README.md").write_text(card.model_card(stats, report, model.config), encoding="utf-8")
    print(card.final_report(stats, report))
    if report.failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
