"""The job contract: what a client may ask for, and how each step is recorded.

Standard library only, so the web can import it without torch.
"""
from __future__ import annotations

import math
import unicodedata
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from contract.keys import is_job_id, normalize_room_code

MAX_SEED = 2**53 - 1  # the largest integer a page (JavaScript, JSON.parse) reads exactly
MAX_TEMPERATURE = 10.0
MIN_TEMPERATURE = 0.01  # below it (but above 0, greedy) logits / T overflow: every probability would be NaN
MIN_TOP_P = 1e-6  # a top_p that single precision (the device's) reads as 0 would keep no token at all
SINGLE_PRECISION_ONE = 1 - 2**-25  # every top_p from here on is 1.0 in single precision


class JobStatus(str, Enum):
    """Lifecycle of a job; values are the strings the API returns."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED})  # a job in one of these never changes


class FinishReason(str, Enum):
    """Why the step loop stopped."""

    LENGTH = "length"  # ran the requested number of steps
    EOS = "eos"  # the model produced its end-of-sequence token
    CANCELLED = "cancelled"
    DEADLINE = "deadline"  # hit JOB_DEADLINE_SECONDS
    CONTEXT = "context"  # ran the steps that fit the model's context window, fewer than requested


class ValidationError(ValueError):
    """A request field is invalid; `field` names it for the client."""

    def __init__(self, field_name: str | None, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message
        self.code = code

    def to_dict(self) -> dict[str, Any]:
        """The API error body: {"error": {"code", "field", "message"}}."""
        return {"error": {"code": self.code, "field": self.field, "message": self.message}}


@dataclass(frozen=True)
class GenerationParams:
    """How to run the step loop.

    Attributes:
        steps: how many tokens to generate at most.
        top_k: how many candidates to show per step (sampling itself uses top_p and temperature).
        temperature: 0 is greedy (the notebook's choice); > 0 samples from softmax(logits / T).
        top_p: nucleus sampling mass; 1.0 keeps every token.
        seed: makes sampling reproducible; the web fills it in when the client leaves it out.
    """

    steps: int = 5
    top_k: int = 10
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerationParams":
        """Inverse of to_dict."""
        return cls(**{k: data[k] for k in ("steps", "top_k", "temperature", "top_p", "seed") if k in data})


@dataclass(frozen=True)
class Branch:
    """Where a "what if" job came from: job `parent` at step `step`."""

    parent: str
    step: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


@dataclass(frozen=True)
class JobRequest:
    """A validated request to generate text.

    Attributes:
        prompt: the starting text.
        params: step loop parameters.
        model: which model's workers run it; None means the service default.
        forced_ids: token ids appended to the prompt before the first step (used by branching).
        branch: the job and step this one branches from, shown as a breadcrumb.
        room: the class room's join code, when submitted in one.
        nickname: what the teacher's room view calls the student (plain text, may be empty).
        score: text to score instead of generating: each of its tokens is forced in turn, and each
            step reports the model's probability and rank for it (the prompt, possibly empty, comes first).
        guess: "guess the next token": its page hides each step until the student has guessed it, and
            its room's projector shows its text only as far as the student has guessed.
    """

    prompt: str
    params: GenerationParams = field(default_factory=GenerationParams)
    model: str | None = None
    forced_ids: tuple[int, ...] = ()
    branch: Branch | None = None
    room: str | None = None
    nickname: str = ""
    score: str | None = None
    guess: bool = False


@dataclass(frozen=True)
class Limits:
    """Server-side caps applied by validate_request."""

    max_steps: int = 200
    max_top_k: int = 50
    max_prompt_chars: int = 2000


REQUEST_FIELDS = ("prompt", "steps", "top_k", "temperature", "top_p", "seed", "model", "forced_ids", "branch",
                  "room", "nickname", "score", "guess")
PARAM_FIELDS = ("steps", "top_k", "temperature", "top_p", "seed")
MAX_NICKNAME_CHARS = 24


def check_body(data: Any, fields: tuple[str, ...]) -> None:
    """A request body must be a JSON object naming only `fields`; else a ValidationError naming the first stranger."""
    if not isinstance(data, dict):
        raise ValidationError(None, "the request body must be a JSON object", "invalid_body")
    for name in data:
        if name not in fields:
            raise ValidationError(str(name), f"unknown field {str(name)[:40]!r}", "unknown_field")


def validate_request(data: Any, limits: Limits = Limits()) -> JobRequest:
    """Check a client's JSON body and build a JobRequest.

    Args:
        data: the decoded JSON body.
        limits: the caps in force.

    Returns:
        The request, with defaults filled in (seed stays None when absent).

    Raises:
        ValidationError: naming the first offending field.
    """
    check_body(data, REQUEST_FIELDS)

    score = _score_field(data.get("score"), limits)
    prompt = data.get("prompt", "" if score is not None else None)
    if prompt is None:
        raise ValidationError("prompt", "prompt is required", "required")
    if not isinstance(prompt, str):
        raise ValidationError("prompt", "prompt must be a string", "type")
    if not prompt.strip() and score is None:
        raise ValidationError("prompt", "prompt must contain some text", "empty")
    if len(prompt) > limits.max_prompt_chars:
        raise ValidationError(
            "prompt", f"prompt is {len(prompt)} characters; the limit is {limits.max_prompt_chars}", "too_long"
        )
    problem = text_problem(prompt)
    if problem:
        raise ValidationError("prompt", f"prompt {problem}", "invalid")

    params = validate_params(data, limits, default_steps=limits.max_steps if score is not None else None)

    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip() or len(model) > 200):
        raise ValidationError("model", "model must be a non-empty model name of at most 200 characters", "type")

    forced = data.get("forced_ids", [])
    if not isinstance(forced, list) or not all(_is_int(i) and 0 <= i < 2**31 for i in forced):
        raise ValidationError("forced_ids", "forced_ids must be a list of token ids (non-negative integers)", "type")
    if len(forced) > limits.max_steps:
        raise ValidationError("forced_ids", f"forced_ids may hold at most {limits.max_steps} ids", "too_long")

    branch = _branch_field(data.get("branch"))
    guess = data.get("guess", False)
    if not isinstance(guess, bool):
        raise ValidationError("guess", "guess must be true or false", "type")
    if score is not None and (forced or branch):
        raise ValidationError("score", "a score job cannot also force ids or branch from another job", "invalid")
    if score is not None and guess:
        raise ValidationError("guess", "a score job has nothing to guess: its tokens are the given text", "invalid")
    return JobRequest(
        prompt=prompt,
        params=params,
        model=model,
        forced_ids=tuple(forced),
        branch=branch,
        room=_room_field(data.get("room")),
        nickname=_nickname_field(data.get("nickname")),
        score=score,
        guess=guess,
    )


TEMPERATURE_RANGE = f"0 (always the most likely token) or between {MIN_TEMPERATURE:g} and {MAX_TEMPERATURE:g}"


def temperature_in_range(temperature: float) -> bool:
    """Whether a temperature is 0 (greedy) or between MIN_TEMPERATURE and MAX_TEMPERATURE (TEMPERATURE_RANGE)."""
    return temperature == 0.0 or MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE


def validate_params(data: dict[str, Any], limits: Limits = Limits(), default_steps: int | None = None) -> GenerationParams:
    """The step loop parameters of a request body (absent ones take their defaults).

    Raises:
        ValidationError: naming the first offending field.
    """
    defaults = GenerationParams()
    steps = _int_field(data, "steps", default_steps or defaults.steps, 1, limits.max_steps)
    top_k = _int_field(data, "top_k", defaults.top_k, 1, limits.max_top_k)
    temperature = _float_field(data, "temperature", defaults.temperature)
    if not temperature_in_range(temperature):
        raise ValidationError("temperature", f"temperature must be {TEMPERATURE_RANGE}", "range")
    top_p = _float_field(data, "top_p", defaults.top_p)
    if not MIN_TOP_P <= top_p <= 1.0:
        raise ValidationError("top_p", f"top_p must be between {MIN_TOP_P:g} and 1", "range")
    if top_p >= SINGLE_PRECISION_ONE:
        top_p = 1.0  # the device could not tell it from 1: the whole distribution on every path
    seed = data.get("seed")
    if seed is not None:
        seed = _int_field(data, "seed", 0, 0, MAX_SEED)
    return GenerationParams(steps=steps, top_k=top_k, temperature=temperature, top_p=top_p, seed=seed)


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored and shown as text, or None: a NUL character, or half of a surrogate pair."""
    if "\x00" in text:
        return "must not contain NUL characters"
    return unicode_problem(text)


def unicode_problem(text: str) -> str | None:
    """Why `text` is not valid Unicode, or None: half of a surrogate pair (JSON lets a body spell one, \\ud800;
    UTF-8, and so Redis and every page, cannot hold it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"must be valid Unicode text (it contains half of a surrogate pair, U+{ord(text[exc.start]):04X})"
    return None


def plain_text_problem(text: str) -> str | None:
    """Why `text` is not one line of plain text (control or invisible formatting characters), or None.

    The joiners that emoji sequences and Persian or Indic spelling need (ZWNJ, ZWJ, emoji tags) are text."""
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") and not _joiner(char):
            return f"must be plain text on one line (it contains the character U+{ord(char):04X})"
    if text and all(_joiner(char) for char in text):
        return "must contain a visible character"
    return None


def _joiner(char: str) -> bool:
    """ZERO WIDTH NON-JOINER, ZERO WIDTH JOINER, or an emoji tag character (subdivision flags)."""
    return char in "\u200c\u200d" or 0xE0020 <= ord(char) <= 0xE007F


def _score_field(value: Any, limits: Limits) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError("score", "score must be the text to score, a string", "type")
    if not value.strip():
        raise ValidationError("score", "score must contain some text", "empty")
    if len(value) > limits.max_prompt_chars:
        raise ValidationError("score", f"score is {len(value)} characters; the limit is {limits.max_prompt_chars}",
                              "too_long")
    problem = text_problem(value)
    if problem:
        raise ValidationError("score", f"score {problem}", "invalid")
    return value


def _room_field(value: Any) -> str | None:
    if value is None:
        return None
    code = normalize_room_code(value) if isinstance(value, str) else None
    if code is None:
        raise ValidationError("room", "room must be a 6-character room code, e.g. \"K7PM2Q\"", "type")
    return code


def _nickname_field(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValidationError("nickname", "nickname must be a string", "type")
    value = value.strip()
    if len(value) > MAX_NICKNAME_CHARS:
        raise ValidationError("nickname", f"nickname may have at most {MAX_NICKNAME_CHARS} characters", "too_long")
    problem = text_problem(value) or plain_text_problem(value)
    if problem:
        raise ValidationError("nickname", "nickname " + problem, "invalid")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_field(data: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = data.get(name, default)
    if not _is_int(value):
        raise ValidationError(name, f"{name} must be an integer", "type")
    if not low <= value <= high:
        raise ValidationError(name, f"{name} must be between {low} and {high}", "range")
    return value


def _float_field(data: dict[str, Any], name: str, default: float) -> float:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(name, f"{name} must be a number", "type")
    try:
        value = float(value)
    except OverflowError:  # an integer of hundreds of digits
        value = math.inf
    if not math.isfinite(value):
        raise ValidationError(name, f"{name} must be a finite number", "range")
    return value


def _branch_field(value: Any) -> Branch | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or set(value) != {"parent", "step"}
        or not isinstance(value["parent"], str)
        or not is_job_id(value["parent"])
        or not _is_int(value["step"])
        or not 1 <= value["step"] <= 10_000
    ):
        raise ValidationError("branch", 'branch must be {"parent": job id, "step": positive integer}', "type")
    return Branch(parent=value["parent"], step=value["step"])


@dataclass(frozen=True)
class TokenProb:
    """A token with its probability in the step's distribution."""

    token: str
    id: int
    prob: float


@dataclass(frozen=True)
class Step:
    """One turn of the loop: the context, the candidates, the token chosen.

    Attributes:
        index: 1-based step number.
        context: the text before this step (decoded from token ids, so it never drifts).
        top: the top_k most likely next tokens, most likely first.
        chosen: the token appended; its prob is in the same distribution as `top`.
        chosen_rank: where the chosen token ranks in the whole distribution (1 = most likely).
        entropy: of the distribution, in nats.
    """

    index: int
    context: str
    top: tuple[TokenProb, ...]
    chosen: TokenProb
    chosen_rank: int
    entropy: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON record stored in Redis and returned by the API."""
        return {
            "index": self.index,
            "context": self.context,
            "top": [asdict(t) for t in self.top],
            "chosen": asdict(self.chosen) | {"rank": self.chosen_rank},
            "entropy": self.entropy,
        }
