"""The shipped demo model (models/demo) is a real, standard, offline language model."""

from __future__ import annotations

import json
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from training import evaluate

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "demo"
HELDOUT_LINES = 400
MAX_WEIGHTS_BYTES = 25 * 1024 * 1024
MAX_PARAMETERS = 5_000_000  # the model card says 3.7 M: a classroom CPU loads and steps it in moments


class Loaded(NamedTuple):
    """The demo model and its tokenizer as the tests load them."""

    model: Any
    tokenizer: Any
    network_attempts: list[tuple]  # the lookups and connections tried while loading (each refused)


@contextmanager
def network_refused() -> Iterator[list[tuple]]:
    """Refuse every DNS lookup and socket connection in the block, and record what was tried."""
    attempts: list[tuple] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        attempts.append(args)
        raise OSError("this test runs offline")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", refuse)
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket.socket, "connect_ex", refuse)
        yield attempts


@pytest.fixture(scope="module")
def loaded() -> Loaded:
    """Model and tokenizer through the same calls as for Llama-3.2-1B, with the network refused."""
    with network_refused() as attempts:
        tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
        model = AutoModelForCausalLM.from_pretrained(MODEL_DIR).eval()
    return Loaded(model, tokenizer, attempts)


@pytest.fixture(scope="module")
def words() -> set[str]:
    """Debian's wamerican word list (fails, not skips, when it is missing)."""
    return evaluate.load_words()


def test_standard_files_and_size():
    config = json.loads((MODEL_DIR / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    for name in ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "README.md"):
        assert (MODEL_DIR / name).is_file(), name
    assert (MODEL_DIR / "model.safetensors").stat().st_size <= MAX_WEIGHTS_BYTES


def test_is_small_and_loads_from_its_folder_without_the_network(loaded):
    assert loaded.network_attempts == []
    assert Path(loaded.model.name_or_path) == MODEL_DIR
    assert loaded.model.num_parameters() <= MAX_PARAMETERS


@pytest.mark.parametrize(
    "text",
    [
        "The cat sat",
        "Hello, world! 🐱🚀 🇫🇷",
        "naïve café — 你好",
        "  two spaces\tand a tab\nnew line",
        "",
    ],
)
def test_text_round_trips(loaded, text):
    tokenizer = loaded.tokenizer
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_tokens_decode_individually(loaded):
    tokenizer = loaded.tokenizer
    ids = tokenizer("The cat sat on the mat", add_special_tokens=False)["input_ids"]
    pieces = [tokenizer.decode([i]) for i in ids]
    assert "".join(pieces) == "The cat sat on the mat"
    assert " on" in pieces and " the" in pieces
    assert tokenizer.eos_token is not None and tokenizer.pad_token_id is not None


@pytest.mark.parametrize("prompt", evaluate.PROMPTS)
def test_greedy_continuation_is_real_words(loaded, words, prompt):
    model, tokenizer, _ = loaded
    text = evaluate.continuation(model, tokenizer, prompt)
    assert evaluate.non_words(text, words) == [], text


@pytest.mark.parametrize("prompt", evaluate.PROMPTS)
def test_top_ten_are_distinct_and_readable(loaded, prompt):
    model, tokenizer, _ = loaded
    candidates = evaluate.top_candidates(model, tokenizer, prompt)
    assert len(candidates) == evaluate.TOP_K
    assert evaluate.unreadable(candidates) == [], candidates


def test_checks_reject_junk(words):
    assert evaluate.non_words(" on the mat.", words) == []
    assert evaluate.non_words(" on the blorf xqzt", words) == ["blorf", "xqzt"]
    assert evaluate.non_words(" the cat sat 42", words) != []
    assert evaluate.non_words(" a a a a a a a a", words) != []
    assert evaluate.unreadable([(" the", 0.5), (" the", 0.1), ("\ufffd", 0.1), (" ", 0.1)]) != []


@pytest.mark.slow
def test_heldout_perplexity_beats_unigram_fivefold(loaded):
    model, tokenizer, _ = loaded
    lines = evaluate.HELDOUT_PATH.read_text(encoding="utf-8").splitlines()[:HELDOUT_LINES]
    chunks = evaluate.blocks(tokenizer, "\n".join(lines))
    counts = json.loads(evaluate.COUNTS_PATH.read_text())
    perplexity = evaluate.model_perplexity(model, chunks)
    unigram = evaluate.unigram_perplexity(counts, chunks)
    assert perplexity <= evaluate.MAX_PPL_RATIO * unigram, (perplexity, unigram)
