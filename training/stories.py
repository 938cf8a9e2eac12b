"""Generated supplement: short, simple everyday stories from a seeded grammar.

WordNet's examples are real but terse; these few-sentence stories add the plain
narrative register ("Once upon a time ...", "The cat sat on the mat.") that
the teaching prompts use. They are a minority of the training text and never
part of the held-out set.
"""

from __future__ import annotations

import random

CHARACTERS = [
    ("a little girl", "Lily", "she"), ("a little boy", "Tom", "he"),
    ("an old man", "Sam", "he"), ("a kind woman", "Anna", "she"),
    ("a small cat", "Milo", "it"), ("a brown dog", "Max", "it"),
    ("a young king", "Leo", "he"), ("a clever fox", "Rusty", "it"),
    ("a happy bird", "Pip", "it"), ("a tall girl", "Mia", "she"),
]
ANIMALS = ["cat", "dog", "bird", "duck", "horse", "cow", "rabbit", "mouse"]
PLACES = ["a small house", "a big city", "a quiet village", "the forest", "a farm", "a castle"]
SEATS = ["mat", "chair", "bed", "floor", "wall", "roof", "grass", "rug", "bench", "step"]
PREPOSITIONS = ["on", "on", "under", "near", "beside"]
RESTS = ["sat", "sat", "slept", "lay", "waited"]
OPENABLES = ["door", "window", "box", "book", "letter", "gate", "bag", "cupboard"]
FINDS = ["a red ball", "an old key", "a small note", "a warm cake", "a little kitten",
         "a bright coin", "a map", "some flowers"]
WANTS = ["go to the park", "play with my friends", "read a book", "eat an apple",
         "see the sea", "learn to swim", "help my mother", "go home", "sleep now"]
SUN = ["warm", "bright", "hot", "high in the sky", "low in the sky", "shining"]
TIMES = ["today", "this morning", "in the summer", "at noon", "again"]
FEELINGS = ["happy", "sad", "tired", "hungry", "excited", "scared", "surprised"]
ENDINGS = ["They were very happy.", "It was a good day.", "Then everyone went to sleep.",
           "From that day on, they were friends.", "And they lived happily ever after."]


def _opening(rng: random.Random, who: tuple[str, str, str]) -> list[str]:
    kind, name, _ = who
    place = rng.choice(PLACES)
    return [f"Once upon a time, there was {kind} named {name}.", f"{name} lived in {place}."]


def _scene(rng: random.Random, who: tuple[str, str, str]) -> str:
    _, name, pronoun = who
    subject = rng.choice([name, pronoun.capitalize(), f"The {rng.choice(ANIMALS)}"])
    return rng.choice([
        f"{subject} {rng.choice(RESTS)} {rng.choice(PREPOSITIONS)} the {rng.choice(SEATS)}.",
        f"{subject} opened the {rng.choice(OPENABLES)} and found {rng.choice(FINDS)}.",
        f"The sun is {rng.choice(SUN)} {rng.choice(TIMES)}.",
        f'"I want to {rng.choice(WANTS)}," said {name}.',
        f"{name} felt {rng.choice(FEELINGS)}.",
        f"One day, {name} went to see a {rng.choice(ANIMALS)}.",
    ])


def story(rng: random.Random) -> str:
    """One story of three to seven sentences."""
    who = rng.choice(CHARACTERS)
    sentences = _opening(rng, who) if rng.random() < 0.5 else []
    sentences += [_scene(rng, who) for _ in range(rng.randint(2, 4))]
    if rng.random() < 0.5:
        sentences.append(rng.choice(ENDINGS))
    return " ".join(sentences)


def stories(count: int, seed: int) -> list[str]:
    """``count`` stories from a fixed seed."""
    rng = random.Random(seed)
    return [story(rng) for _ in range(count)]
