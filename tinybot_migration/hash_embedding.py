"""The offline embedder: deterministic, no network, no model.

Words and character trigrams of each word are hashed into the vector's dimensions with a sign
(the "hashing trick"), then the vector is scaled to unit length. Texts sharing words and word
pieces land close together under cosine distance, which is enough for local runs, demos and tests.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)


def _features(text: str) -> list[str]:
    features: list[str] = []
    for word in _WORD.findall(text.lower()):
        features.append(f"w:{word}")
        padded = f"<{word}>"
        features.extend(f"g:{padded[i : i + 3]}" for i in range(len(padded) - 2))
    return features


def hash_embedding(text: str, dimensions: int) -> np.ndarray:
    """A unit-length float32 vector for `text` (a fixed unit vector when it has no words)."""
    vector = np.zeros(dimensions, dtype=np.float32)
    for feature in _features(text):
        digest = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")
        vector[digest % dimensions] += 1.0 if (digest >> 63) & 1 else -1.0
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        vector[0] = 1.0
        return vector
    return vector / norm
