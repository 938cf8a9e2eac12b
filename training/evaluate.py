"""Measure the demo model against the quality bars of issue 3.

Usage: ``python -m training.evaluate models/demo`` (exit status 1 if a bar fails).
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

HERE = Path(__file__).resolve().parent
HELDOUT_PATH = HERE / "heldout.txt"
COUNTS_PATH = HERE / "unigram_counts.json"
WORDLIST_PATH = Path("/usr/share/dict/american-english")
PROMPTS = ("The cat sat", "Once upon a time", "I want to", "The sun is", "She opened the")
NEW_TOKENS = 8
TOP_K = 10
BLOCK = 128
MAX_PPL_RATIO = 0.2
MAX_LOAD_SECONDS = 3.0
MIN_DISTINCT_WORDS = 3

WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
_ALLOWED = re.compile(r"[A-Za-z' \n.,;:!?\"-]*")


@dataclass
class Report:
    """Figures measured by :func:`evaluate`, plus the bars that failed."""

    load_seconds: float
    heldout_tokens: int
    perplexity: float
    unigram_perplexity: float
    continuations: dict[str, str]
    top_candidates: dict[str, list[tuple[str, float]]]
    failures: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Model perplexity as a fraction of the unigram perplexity."""
        return self.perplexity / self.unigram_perplexity


def load(model_dir: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, float]:
    """Load model and tokenizer on CPU; also return the seconds it took."""
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    return model, tokenizer, time.perf_counter() - start


def blocks(tokenizer: PreTrainedTokenizerBase, text: str, size: int = BLOCK) -> list[torch.Tensor]:
    """Tokenize ``text`` and cut it into BOS-prefixed blocks of at most ``size`` ids."""
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    step = size - 1
    return [torch.tensor([tokenizer.bos_token_id, *ids[i : i + step]]) for i in range(0, len(ids), step)]


@torch.no_grad()
def model_perplexity(model: PreTrainedModel, chunks: list[torch.Tensor]) -> float:
    """Perplexity over every non-BOS token of ``chunks``."""
    total, count = 0.0, 0
    for chunk in chunks:
        logits = model(input_ids=chunk[None]).logits[0, :-1]
        total += torch.nn.functional.cross_entropy(logits, chunk[1:], reduction="sum").item()
        count += len(chunk) - 1
    return math.exp(total / count)


def unigram_perplexity(counts: list[int], chunks: list[torch.Tensor]) -> float:
    """Add-one smoothed unigram perplexity over the same tokens."""
    denominator = sum(counts) + len(counts)
    targets = torch.cat([chunk[1:] for chunk in chunks])
    log_probs = torch.log((torch.tensor(counts, dtype=torch.float64) + 1) / denominator)
    return math.exp(-log_probs[targets].mean().item())


@torch.no_grad()
def continuation(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    """Greedy continuation of ``NEW_TOKENS`` tokens."""
    inputs = tokenizer(prompt, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


@torch.no_grad()
def top_candidates(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, k: int = TOP_K
) -> list[tuple[str, float]]:
    """The ``k`` most likely next tokens, each decoded on its own, with probabilities."""
    logits = model(**tokenizer(prompt, return_tensors="pt")).logits[0, -1]
    probs, ids = logits.softmax(-1).topk(k)
    return [(tokenizer.decode([i]), p) for i, p in zip(ids.tolist(), probs.tolist())]


def load_words(path: Path = WORDLIST_PATH) -> set[str]:
    """The word list (Debian ``wamerican``)."""
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: apt-get install wamerican")
    return set(path.read_text(encoding="utf-8").split())


def non_words(text: str, words: set[str]) -> list[str]:
    """Words of ``text`` missing from the list, stray characters, or too few distinct words."""
    found = WORD.findall(text)
    missing = [w for w in found if w not in words and w.lower() not in words]
    if not _ALLOWED.fullmatch(text):
        missing.append(repr(text))
    if len({w.lower() for w in found}) < MIN_DISTINCT_WORDS:
        missing.append(f"fewer than {MIN_DISTINCT_WORDS} distinct words in {text!r}")
    return missing


def unreadable(candidates: list[tuple[str, float]]) -> list[str]:
    """Candidates that are blank, unprintable, partial UTF-8, or duplicates."""
    seen: set[str] = set()
    bad = []
    for token, _ in candidates:
        shown = token.strip()
        if not shown or "\ufffd" in token or not shown.isprintable() or shown in seen:
            bad.append(repr(token))
        seen.add(shown)
    return bad


def evaluate(model_dir: str | Path) -> Report:
    """Measure every bar; failures are listed in the report."""
    model, tokenizer, seconds = load(model_dir)
    chunks = blocks(tokenizer, HELDOUT_PATH.read_text(encoding="utf-8").strip())
    counts = json.loads(COUNTS_PATH.read_text())
    words = load_words()
    report = Report(
        load_seconds=seconds,
        heldout_tokens=sum(len(c) - 1 for c in chunks),
        perplexity=model_perplexity(model, chunks),
        unigram_perplexity=unigram_perplexity(counts, chunks),
        continuations={p: continuation(model, tokenizer, p) for p in PROMPTS},
        top_candidates={p: top_candidates(model, tokenizer, p) for p in PROMPTS},
    )
    if seconds >= MAX_LOAD_SECONDS:
        report.failures.append(f"load took {seconds:.2f} s")
    if report.ratio > MAX_PPL_RATIO:
        report.failures.append(f"perplexity ratio {report.ratio:.3f} > {MAX_PPL_RATIO}")
    for prompt in PROMPTS:
        if bad := non_words(report.continuations[prompt], words):
            report.failures.append(f"{prompt!r}: not words {bad}")
        if bad := unreadable(report.top_candidates[prompt]):
            report.failures.append(f"{prompt!r}: unreadable top-{TOP_K} {bad}")
    return report


def format_report(report: Report) -> str:
    """Human-readable summary of the figures."""
    lines = [
        f"load time: {report.load_seconds:.2f} s",
        f"held-out perplexity: {report.perplexity:.1f} over {report.heldout_tokens} tokens",
        f"unigram perplexity: {report.unigram_perplexity:.1f}",
        f"ratio: {report.ratio:.3f} (bar: at most {MAX_PPL_RATIO})",
    ]
    for prompt in PROMPTS:
        lines.append(f"{prompt!r} -> {report.continuations[prompt]!r}")
        top = ", ".join(f"{t!r} {p:.2f}" for t, p in report.top_candidates[prompt])
        lines.append(f"    top-{TOP_K}: {top}")
    lines += [f"FAIL: {f}" for f in report.failures] or ["all bars met"]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """CLI entry point."""
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    report = evaluate(argv[0])
    print(format_report(report))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
