"""The offline embedder: deterministic, no network, no model.

Words and character trigrams of each word are hashed into the vector's dimensions with a sign
(the "hashing trick"), then the vector is scaled to unit length. Texts sharing words and word
pieces land close together under cosine distance, which is enough for local runs, demos and tests.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)


@lru_cache(maxsize=1 << 18)
def _word_slots(word: str, dimensions: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The (dimension, sign) of a word and its trigrams; cached, since words repeat a lot."""
    padded = f"<{word}>"
    features = [f"w:{word}"] + [f"g:{padded[i : i + 3]}" for i in range(len(padded) - 2)]
    slots, signs = [], []
    for feature in features:
        digest = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")
        slots.append(digest % dimensions)
        signs.append(1.0 if (digest >> 63) & 1 else -1.0)
    return tuple(slots), tuple(signs)


def hash_embedding(text: str, dimensions: int) -> np.ndarray:
    """A unit-length float32 vector for `text` (a fixed unit vector when it has no words)."""
    vector = np.zeros(dimensions, dtype=np.float32)
    slots: list[int] = []
    signs: list[float] = []
    for word in _WORD.findall(text.lower()):
        word_slots, word_signs = _word_slots(word, dimensions)
        slots += word_slots
        signs += word_signs
    if slots:
        np.add.at(vector, slots, signs)
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        vector[0] = 1.0
        return vector
    return vector / norm
