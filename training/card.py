"""Render the final training report and the model card (``models/demo/README.md``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from training import corpus, evaluate

if TYPE_CHECKING:
    from transformers import LlamaConfig

    from training.train_demo import TrainStats


def loss_table(stats: TrainStats) -> str:
    """Markdown table of the logged mean training loss."""
    rows = [f"| {step} | {loss:.3f} |" for step, loss in stats.loss_curve]
    return "\n".join(["| step | mean loss |", "| ---: | ---: |", *rows])


def final_report(stats: TrainStats, report: evaluate.Report) -> str:
    """Plain-text summary printed at the end of training."""
    curve = ", ".join(f"{step}:{loss:.2f}" for step, loss in stats.loss_curve)
    return "\n".join([
        "=== final report ===",
        f"parameters: {stats.parameters:,}",
        f"training tokens: {stats.train_tokens:,} ({stats.story_tokens:,} from generated stories)",
        f"tokens seen: {stats.tokens_seen:,}",
        f"wall time: {stats.seconds / 60:.1f} min (CPU time {stats.cpu_seconds / 60:.1f} min)",
        f"loss curve (step:loss): {curve}",
        evaluate.format_report(report),
    ])


def _samples(report: evaluate.Report) -> str:
    rows = [f"| {p} | {report.continuations[p]!r} |" for p in evaluate.PROMPTS]
    return "\n".join(["| prompt | greedy 8-token continuation |", "| --- | --- |", *rows])


def _top(report: evaluate.Report, prompt: str) -> str:
    rows = [f"| {token!r} | {prob:.3f} |" for token, prob in report.top_candidates[prompt]]
    return "\n".join(["| token | probability |", "| --- | ---: |", *rows])


def model_card(stats: TrainStats, report: evaluate.Report, config: LlamaConfig) -> str:
    """The model card, with every figure taken from this run."""
    story_share = 100 * stats.story_tokens / stats.train_tokens
    return f"""# demo: a small Llama that ships with the project

A tiny causal language model trained from scratch on this machine, so the
service shows real next-token prediction with no network and no Hugging Face
token. Load it exactly like `meta-llama/Llama-3.2-1B`:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained("models/demo")
model = AutoModelForCausalLM.from_pretrained("models/demo")
```

## Architecture

`LlamaForCausalLM`: {config.num_hidden_layers} layers, hidden size {config.hidden_size},
{config.num_attention_heads} attention heads, MLP size {config.intermediate_size}, RoPE,
context {config.max_position_embeddings} tokens, tied input/output embeddings,
**{stats.parameters:,} parameters**, fp32 weights (`model.safetensors`).

## Tokenizer

Byte-level BPE with {config.vocab_size} tokens trained with the `tokenizers` library on the
training text: any text, emoji included, encodes and decodes back exactly, and
every token decodes on its own to readable text (`" on"`, `" the"`). Encoding
prepends `<|bos|>` like Llama; `<|eos|>` is the end and padding token.

## Corpus and license

- **WordNet 3.0** (Princeton University), read from the Debian package
  `wordnet-base` (`/usr/share/wordnet/data.*`). License: the WordNet 3.0
  license (free to use, copy, modify and distribute with its copyright
  notice: "WordNet 3.0 Copyright 2006 by Princeton University. All rights
  reserved."). Each synset gives one paragraph: its definition phrased as a
  sentence ("The sun is the star that is the source of light and heat for the
  planets in the solar system.") followed by its example sentences ("The Earth
  revolves around the Sun."). {stats.wordnet_paragraphs:,} paragraphs for training; one
  synset in {corpus.HELDOUT_EVERY} (chosen by a hash of its id) is held out in
  `training/heldout.txt`.
- **Generated supplement** ({story_share:.0f}% of training tokens): {stats.stories:,} short
  everyday stories from a seeded grammar in `training/stories.py` ("Once upon a
  time, there was a little girl named Lily. The cat sat on the mat."), written
  for this project. It is never part of the held-out text.

Training text: {stats.train_tokens:,} tokens.

## Training

`python -m training.train_demo --out models/demo` (seed fixed, 2 CPU threads,
`torch.compile`): {stats.tokens_seen:,} tokens seen in {stats.steps} steps of AdamW, wall time
**{stats.seconds / 60:.1f} min** on 2 CPU cores ({stats.cpu_seconds / 60:.1f} min of CPU time), corpus
and tokenizer included.

{loss_table(stats)}

## Evaluation

`python -m training.evaluate models/demo` (exits non-zero if a bar fails):

- held-out perplexity **{report.perplexity:.1f}** vs add-one unigram perplexity
  **{report.unigram_perplexity:.1f}** on the same {report.heldout_tokens:,} tokens
  (ratio {report.ratio:.3f}; bar: at most {evaluate.MAX_PPL_RATIO})
- load time {report.load_seconds:.2f} s on CPU (bar: under {evaluate.MAX_LOAD_SECONDS:.0f} s)
- every greedy continuation below is made of words in Debian's `wamerican`
  list, and every prompt's top-{evaluate.TOP_K} next tokens are distinct and readable

{_samples(report)}

Top-{evaluate.TOP_K} next tokens after "The cat sat":

{_top(report, "The cat sat")}

## Reproduce

```sh
apt-get install wordnet-base wamerican
python -m training.train_demo --out models/demo
python -m training.evaluate models/demo
```

The same seed gives the same loss curve (up to floating-point noise from
different CPUs or thread counts).
"""
