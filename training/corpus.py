"""Build the training corpus from WordNet 3.0 (Debian package ``wordnet-base``).

Each synset becomes one short paragraph: its definition phrased as a sentence
("The sun is the star that ...") followed by its example sentences ("The Earth
revolves around the Sun."). A fixed, hash-based slice of synsets is held out.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

WORDNET_DIR = Path(os.environ.get("WORDNET_DIR", "/usr/share/wordnet"))
POS_NAMES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
HELDOUT_EVERY = 40
MIN_EXAMPLE_WORDS = 4

_QUOTED = re.compile(r'"([^"]*)"')
_PARENS = re.compile(r"\s*\([^()]*\)")
_SPACES = re.compile(r"\s+")
_PLAIN_LEMMA = re.compile(r"[a-z]+(?:[ -][a-z]+)*")
_THE_X_OF = re.compile(r"the [a-z]+ of ")


@dataclass(frozen=True)
class Synset:
    """One WordNet synset: part of speech, lemmas, definition and examples."""

    key: str
    pos: str
    lemmas: tuple[str, ...]
    definition: str
    examples: tuple[str, ...]


@dataclass(frozen=True)
class Corpus:
    """Training and held-out paragraphs."""

    train: list[str]
    heldout: list[str]


def parse_line(line: str, pos: str) -> Synset | None:
    """Parse one line of a WordNet ``data.*`` file (license lines give None)."""
    if line.startswith(" ") or " | " not in line:
        return None
    head, gloss = line.split(" | ", 1)
    fields = head.split()
    count = int(fields[3], 16)
    lemmas = tuple(fields[4 + 2 * i].replace("_", " ") for i in range(count))
    examples = tuple(_clean(e) for e in _QUOTED.findall(gloss))
    parts = [_clean(p) for p in _QUOTED.sub("", gloss).split(";")]
    definition = next((p for p in parts if p), "")
    return Synset(f"{pos}{fields[0]}", pos, lemmas, definition, examples)


def _clean(text: str) -> str:
    """Drop parentheticals, normalise quotes and whitespace."""
    text = _PARENS.sub("", text).replace("`", "'")
    return _SPACES.sub(" ", text).strip(" :,;")


def as_sentence(text: str) -> str:
    """Capitalise the first letter and end with punctuation."""
    text = text[:1].upper() + text[1:]
    return text if text[-1:] in ".!?" else text + "."


def definition_sentence(synset: Synset) -> str | None:
    """Phrase a noun or verb definition as a sentence, or None if awkward."""
    lemma, definition = synset.lemmas[0], synset.definition
    if not _PLAIN_LEMMA.fullmatch(lemma) or not definition:
        return None
    if synset.pos == "v":
        return as_sentence(f"to {lemma} is to {definition}")
    if synset.pos != "n":
        return None
    article = definition.split(" ", 1)[0]
    if _THE_X_OF.match(definition):
        return as_sentence(f"{lemma} is {definition}")
    if article == "the":
        return as_sentence(f"the {lemma} is {definition}")
    if article in ("a", "an"):
        return as_sentence(f"{_indefinite(lemma)} {lemma} is {definition}")
    return None


def _indefinite(word: str) -> str:
    """Return "an" before a vowel letter, else "a"."""
    return "an" if word[0] in "aeiou" else "a"


def paragraph(synset: Synset) -> str | None:
    """Definition sentence plus example sentences, or None if nothing is left."""
    sentences = [definition_sentence(synset)]
    sentences += [as_sentence(e) for e in synset.examples if len(e.split()) >= MIN_EXAMPLE_WORDS]
    text = " ".join(s for s in sentences if s)
    return text or None


def read_synsets(wordnet_dir: Path = WORDNET_DIR) -> Iterator[Synset]:
    """Yield every synset of the four ``data.*`` files in file order."""
    for pos, name in POS_NAMES.items():
        path = wordnet_dir / f"data.{name}"
        if not path.exists():
            raise FileNotFoundError(f"{path} missing: apt-get install wordnet-base")
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                synset = parse_line(line, pos)
                if synset is not None:
                    yield synset


def is_heldout(synset: Synset) -> bool:
    """Deterministic ~1/HELDOUT_EVERY slice keyed on the synset id."""
    return zlib.crc32(synset.key.encode()) % HELDOUT_EVERY == 0


def build_corpus(wordnet_dir: Path = WORDNET_DIR) -> Corpus:
    """Split WordNet paragraphs into training and held-out lists."""
    corpus = Corpus(train=[], heldout=[])
    for synset in read_synsets(wordnet_dir):
        text = paragraph(synset)
        if text:
            (corpus.heldout if is_heldout(synset) else corpus.train).append(text)
    return corpus
