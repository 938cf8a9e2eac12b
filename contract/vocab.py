"""TokenTexts: the display texts of a model's token ids, read from the vocabulary table its workers publish.

Step records hold token ids only. A worker publishes its tokenizer's whole table to
`keys.vocab_key(model)` before its first step (and again if Redis lost it); an id past the
tokenizer's goes in the same script call as the first record that mentions it. Readers cache the
texts per model in process, so a poll fetches only ids it has never seen.
"""
from __future__ import annotations

from typing import Any, Iterable

from contract import keys


class _Texts(dict):
    """token id -> text; an id whose text is not there (a lost table) shows as its number."""

    def __missing__(self, token_id: int) -> str:
        return f"<token {token_id}>"


class TokenTexts:
    """Per-model token texts from Redis, cached in this process (texts of an id never change)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._models: dict[str, _Texts] = {}

    def of(self, model: str, ids: Iterable[int]) -> dict[int, str]:
        """A mapping that has the text of every id in `ids` that the table holds."""
        known = self._models.get(model)
        if known is None:
            known = self._models[model] = _Texts()
        missing = list({i for i in ids if i not in known})
        if missing:
            for token_id, text in zip(missing, self.redis.hmget(keys.vocab_key(model), missing)):
                if text is not None:
                    known[token_id] = text.decode()
        return known
