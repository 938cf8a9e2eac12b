"""Score jobs on the worker side: which tokens to force, one per step, for the text being scored."""
from __future__ import annotations

from engine.step_engine import StepEngine


def score_tokens(engine: StepEngine, prompt: str, text: str) -> tuple[list[int], tuple[int, ...]]:
    """The context ids and the text's tokens to force in turn (forced_next).

    The prompt (possibly empty) is tokenized as usual, with the model's special tokens (e.g. BOS), and the
    text without them, so every token of the text gets a step. A tokenizer with no BOS and an empty
    prompt leaves nothing to predict the first token from: it becomes the context.

    Raises:
        ValueError: nothing of the text is left to score.
    """
    context = engine.tokenize(prompt)
    forced = list(engine.tokenizer(text, add_special_tokens=False)["input_ids"])
    if not context:
        context, forced = forced[:1], forced[1:]
    if not forced:
        raise ValueError("the text to score needs at least two tokens for this model (it has no start token)")
    return context, tuple(forced)
