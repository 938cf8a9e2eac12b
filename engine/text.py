"""Token ids -> text, cheaply and exactly: each row's context grows by decoding only its tail.

A row's context must always equal tokenizer.decode(ids, skip_special_tokens=True). Decoding the
whole context every step is O(context); `RowText` keeps the decoded text and decodes only the
tokens since the last clean boundary (a point where the text did not end inside a character),
so each step costs O(1) tokenizer work. Candidates that carry only part of a character are
shown as their bytes (`<0xE2><0x80>`), never as U+FFFD.
"""
from __future__ import annotations

import codecs
import logging
from dataclasses import dataclass

from tokenizers import decoders

log = logging.getLogger(__name__)
REPLACEMENT = "\ufffd"
SELF_CHECK_TEXT = "Hello, world! Ça va? 日本語のテキスト. Ελληνικά — emoji 🙂👍🏽 and tabs\tand  spaces.\n"


def _hex_bytes(error: UnicodeDecodeError) -> tuple[str, int]:
    bad = error.object[error.start:error.end]
    return "".join(f"<0x{b:02X}>" for b in bad), error.end


codecs.register_error("autoregress-hex", _hex_bytes)


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: byte-level BPE symbol -> byte."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(keep, chars)}


_BYTE_OF = _byte_decoder()


@dataclass
class Decoder:
    """The tokenizer's decode, with what incremental decoding needs to know about it.

    Attributes:
        tokenizer: a Hugging Face tokenizer.
        incremental: False when decoding tails is not exact for this tokenizer (then every step
            decodes the whole context, which is exact and O(context)).
    """

    tokenizer: object
    incremental: bool = True

    def __post_init__(self) -> None:
        self._pieces: list[str] | None = None
        self._candidates: list[str] | None = None
        self._extra: dict[int, str] = {}
        backend = self._backend = getattr(self.tokenizer, "_tokenizer", None)
        self._fast = backend.decode if backend is not None else None
        decoder = getattr(backend, "decoder", None)
        self.byte_level = isinstance(decoder, decoders.ByteLevel)
        if getattr(self.tokenizer, "clean_up_tokenization_spaces", False) or self._fast is None:
            self._fast = None  # the tokenizer's own decode post-processes text across token boundaries
            self.incremental = False
            log.info("incremental detokenisation off: the tokenizer cleans up spaces across tokens")
        elif not self._self_check():
            self.incremental = False
            log.warning("incremental detokenisation off: it did not reproduce tokenizer.decode on a sample")

    def decode(self, ids: list[int]) -> str:
        """Text of token ids, special tokens left out (exactly tokenizer.decode(ids, skip_special_tokens=True))."""
        if self._fast is not None:
            return self._fast(ids, True)
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def piece(self, token_id: int) -> str:
        """decode([token_id]) from a table made once: a byte-level row's whole window after a clean boundary.

        Only for incremental decoders (which have the fast backend).
        """
        table = self._pieces
        if table is None:
            table = self._pieces = self._backend.decode_batch([[i] for i in range(len(self.tokenizer))], True)
        return table[token_id] if token_id < len(table) else self.decode([token_id])

    def row(self, ids: list[int]) -> "RowText":
        """Incremental text of one sequence, starting from context `ids` (decoded once, in full)."""
        return RowText(self, list(ids))

    def candidates(self) -> list[str]:
        """candidate(i) for every id of the tokenizer, made once (one batched decode) and shared by every batch."""
        if self._candidates is None:
            size = len(self.tokenizer)
            texts = self.tokenizer.batch_decode([[i] for i in range(size)])
            self._candidates = [self.candidate(i) if REPLACEMENT in t else t for i, t in enumerate(texts)]
        return self._candidates

    def candidate_text(self, token_id: int) -> str:
        """candidate(token_id) from the table (ids past the tokenizer's, which some models have, memoised apart)."""
        table = self.candidates()
        if token_id < len(table):
            return table[token_id]
        text = self._extra.get(token_id)
        if text is None:
            text = self._extra[token_id] = self.candidate(token_id)
        return text

    def candidate(self, token_id: int) -> str:
        """Text shown for one candidate token: its bytes (<0xE2><0x80>) where it holds part of a character."""
        text = self.tokenizer.decode([token_id])
        if REPLACEMENT not in text:
            return text
        symbol = self.tokenizer.convert_ids_to_tokens(token_id)
        if self.byte_level and symbol and all(c in _BYTE_OF for c in symbol):
            return bytes(_BYTE_OF[c] for c in symbol).decode("utf-8", errors="autoregress-hex")
        if symbol and symbol.startswith("<0x") and symbol.endswith(">"):  # SentencePiece byte fallback
            return symbol
        return text.replace(REPLACEMENT, "<part of a character>")

    def _self_check(self) -> bool:
        ids = list(self.tokenizer(SELF_CHECK_TEXT, add_special_tokens=False)["input_ids"])
        for start in (1, 2):
            row = RowText(self, ids[:start])
            for n in range(start, len(ids)):
                row.append(ids[n])
                if row.text != self.tokenizer.decode(ids[: n + 1], skip_special_tokens=True):
                    return False
        return True


class RowText:
    """One sequence's decoded context, kept equal to decode(ids) by decoding only the tail.

    Invariant: text == decode(ids); text[:stable] == decode(ids[:clean]); decode(ids[:start]) is
    text[:base] and the tail window decode(ids[start:]) begins with `head` == decode(ids[start:clean]).
    For byte-level BPE start == clean (head is ""); other decoders keep one clean token of left
    context, because they treat a sequence's first token specially (e.g. drop its leading space), or
    more while that token shows nothing alone (a skipped special token, a space the decoder strips).
    """

    __slots__ = ("decoder", "ids", "text", "clean", "stable", "start", "head")

    def __init__(self, decoder: Decoder, ids: list[int]) -> None:
        self.decoder = decoder
        self.ids = ids
        self.text = decoder.decode(ids)
        self._restart()

    def _restart(self) -> None:
        """After a full decode: the next window starts at the end, unless the text ends inside a character
        (then the window covers the whole context until a clean boundary, so the character is decoded whole)."""
        if self.decoder.byte_level and not self.text.endswith(REPLACEMENT):
            self._settle(len(self.ids), len(self.text), len(self.ids), "")
        else:
            self._settle(len(self.ids), len(self.text), 0, self.text)

    def _settle(self, clean: int, stable: int, start: int, head: str) -> None:
        self.clean, self.stable, self.start, self.head = clean, stable, start, head

    def append(self, token_id: int) -> tuple[int, str]:
        """Add one token; returns (keep, tail): the new text is the old text[:keep] + tail."""
        old = self.text
        ids = self.ids
        ids.append(token_id)
        dec = self.decoder
        if self.start == len(ids) - 1 and dec.byte_level and dec.incremental:
            # the common case: the window is this one token, its text memoised; a clean end settles here
            tail = dec.piece(token_id)
            self.text = text = old + tail
            if not tail.endswith(REPLACEMENT):
                self.clean = self.start = len(ids)
                self.stable = len(text)
            return len(old), tail
        if not dec.incremental:
            self.text = dec.decode(ids)
            return _edit(old, self.text, 0)
        window = dec.decode(ids[self.start:])
        head = self.head
        if head and not window.startswith(head):  # the decoder re-joined across the boundary: decode in full once
            self.text = dec.decode(ids)
            self._restart()
            return _edit(old, self.text, 0)
        floor = self.stable
        tail = window[len(head):] if head else window
        self.text = text = (old + tail) if floor == len(old) else old[:floor] + tail
        if not window.endswith(REPLACEMENT):  # a clean boundary: the next window starts here
            if dec.byte_level:
                self._settle(len(ids), len(text), len(ids), "")
            else:
                head = dec.decode(ids[self.clean:])
                if head:  # one clean token of left context
                    self._settle(len(ids), len(text), self.clean, head)
                else:  # it shows nothing alone (a skipped special token, a stripped space): keep the window's start
                    self._settle(len(ids), len(text), self.start, window)
        if floor == len(old):
            return floor, tail
        return _edit(old, text, floor)


def _edit(old: str, new: str, floor: int) -> tuple[int, str]:
    """(keep, tail) with new == old[:keep] + tail, keep as large as a short scan from `floor` finds."""
    floor = min(floor, len(old), len(new))
    keep = floor
    limit = min(len(old), len(new))
    while keep < limit and old[keep] == new[keep]:
        keep += 1
    return keep, new[keep:]
