"""Small generated datasets for the task recipes in configs/finetune/ and for tests: deterministic per seed.

Written here from word lists (nothing copied): sentiment (short reviews with one positive or negative
verdict word among neutral words), translation (English noun phrases to French, with gender and adjective
order), summarization (weather reports to a one-line summary), and string reversal (a synthetic task a
model can only solve by learning it). `write_examples` writes the shipped ``configs/finetune/data/*.jsonl``.
"""

from __future__ import annotations

import random
from pathlib import Path

from cerebras_gpt import jsonl

POSITIVE = [
    "wonderful",
    "excellent",
    "delightful",
    "superb",
    "brilliant",
    "great",
    "lovely",
    "fantastic",
    "charming",
    "moving",
    "enjoyable",
    "beautiful",
]
NEGATIVE = [
    "terrible",
    "awful",
    "boring",
    "dreadful",
    "dull",
    "horrible",
    "weak",
    "tedious",
    "clumsy",
    "disappointing",
    "painful",
    "bad",
]
SUBJECTS = [
    "The film",
    "The book",
    "This album",
    "The show",
    "The play",
    "The novel",
    "The concert",
    "The restaurant",
    "This game",
    "The museum",
    "The hotel",
    "The series",
]
VERDICTS = [
    "was {w}",
    "felt {w} from start to finish",
    "is simply {w}",
    "turned out {w}",
    "seemed {w} to me",
    "was {w} in every way",
]
ENDINGS = ["", " I saw it last week.", " My friends went too.", " It lasted two hours.", " We went on Sunday."]


def sentiment_records(n: int, seed: int = 0) -> list[dict]:
    """Reviews labelled " positive" / " negative" (balanced); the label word alone decides the answer."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        positive = i % 2 == 0
        word = rng.choice(POSITIVE if positive else NEGATIVE)
        text = f"{rng.choice(SUBJECTS)} {rng.choice(VERDICTS).format(w=word)}.{rng.choice(ENDINGS)}"
        out.append({"prompt": f"Review: {text}\nSentiment:", "completion": " positive" if positive else " negative"})
    rng.shuffle(out)
    return out


# English -> French: (english, french, gender) nouns and (english, french masc, french fem, before-noun) adjectives.
NOUNS = [
    ("cat", "chat", "m"),
    ("dog", "chien", "m"),
    ("house", "maison", "f"),
    ("car", "voiture", "f"),
    ("book", "livre", "m"),
    ("table", "table", "f"),
    ("tree", "arbre", "m"),
    ("flower", "fleur", "f"),
    ("bird", "oiseau", "m"),
    ("door", "porte", "f"),
    ("garden", "jardin", "m"),
    ("city", "ville", "f"),
]
ADJECTIVES = [
    ("red", "rouge", "rouge", False),
    ("black", "noir", "noire", False),
    ("white", "blanc", "blanche", False),
    ("green", "vert", "verte", False),
    ("small", "petit", "petite", True),
    ("big", "grand", "grande", True),
    ("old", "vieux", "vieille", True),
    ("new", "nouveau", "nouvelle", True),
]


def translation_records(n: int, seed: int = 0) -> list[dict]:
    """ "the small red cat" -> "le petit chat rouge": articles by gender, adjectives before or after the noun."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        en_noun, fr_noun, gender = rng.choice(NOUNS)
        adj = rng.choice(ADJECTIVES)
        en = f"the {adj[0]} {en_noun}"
        fr_adj = adj[1] if gender == "m" else adj[2]
        article = "le" if gender == "m" else "la"
        vowel = fr_noun[0] in "aeiou"
        if adj[3]:  # adjective first: "le petit chat"; vieux/nouveau become vieil/nouvel before a vowel
            if vowel and gender == "m":
                fr_adj = {"vieux": "vieil", "nouveau": "nouvel"}.get(fr_adj, fr_adj)
            fr = f"{article} {fr_adj} {fr_noun}"
        else:  # noun first, elided article before a vowel: "l'arbre vert"
            fr = f"l'{fr_noun} {fr_adj}" if vowel else f"{article} {fr_noun} {fr_adj}"
        out.append({"prompt": f"English: {en}\nFrench:", "completion": f" {fr}"})
    return out


CITIES = ["Paris", "Berlin", "Madrid", "Rome", "Oslo", "Vienna", "Lisbon", "Dublin", "Prague", "Warsaw"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
SKIES = ["sunny", "cloudy", "foggy", "windy", "overcast"]
RAIN = [
    ("no rain fell all day", "dry"),
    ("light rain fell in the afternoon", "light rain"),
    ("heavy showers came in the evening", "heavy rain"),
    ("snow fell in the morning", "snow"),
]


def summarization_records(n: int, seed: int = 0) -> list[dict]:
    """Three-sentence weather reports summarized as "City, Day: sky, N degrees, rain"."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        city, day, sky, (rain, rain_short) = rng.choice(CITIES), rng.choice(DAYS), rng.choice(SKIES), rng.choice(RAIN)
        temp = rng.randint(-5, 32)
        report = (
            f"On {day} the weather in {city} was mostly {sky}. The temperature reached {temp} degrees "
            f"at its highest. Residents reported that {rain}."
        )
        out.append(
            {
                "prompt": f"Report: {report}\nSummary:",
                "completion": f" {city}, {day}: {sky}, {temp} degrees, {rain_short}.",
            }
        )
    return out


LETTERS = "abcdefghij"


def reverse_records(n: int, seed: int = 0, min_len: int = 3, max_len: int = 5) -> list[dict]:
    """Short strings of letters and their reversal, one letter per token (space separated)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = [rng.choice(LETTERS) for _ in range(rng.randint(min_len, max_len))]
        out.append({"prompt": f"reverse: {' '.join(s)} =", "completion": f" {' '.join(reversed(s))}"})
    return out


def write_jsonl(records: list[dict], path: str | Path) -> Path:
    """Write ``records`` to ``path``, one JSON object per line (`cerebras_gpt.jsonl.write`)."""
    return jsonl.write(path, records)


def write_examples(directory: str | Path) -> list[Path]:
    """The example datasets of configs/finetune/data: train and held-out files per task."""
    directory = Path(directory)
    made = []
    for name, make, n_train, n_test in [
        ("sentiment", sentiment_records, 400, 100),
        ("translation", translation_records, 400, 100),
        ("summarization", summarization_records, 300, 50),
    ]:
        made.append(write_jsonl(make(n_train, seed=1), directory / f"{name}_train.jsonl"))
        made.append(write_jsonl(make(n_test, seed=2), directory / f"{name}_test.jsonl"))
    return made


__all__ = [
    "reverse_records",
    "sentiment_records",
    "summarization_records",
    "translation_records",
    "write_examples",
    "write_jsonl",
]
