"""Packing texts into embedding requests without a tokenizer (nothing may be downloaded).

OpenAI takes up to 2048 inputs and 300k tokens a request, 8192 tokens an input. Tokens are
estimated from UTF-8 bytes: English runs about 4 bytes a token, CJK about 3, so a third of the
bytes over-counts the common cases and keeps requests under the limits; truncation for the
per-input limit uses half the bytes, which holds even for punctuation-heavy text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_INPUTS_PER_REQUEST = 2048
MAX_TOKENS_PER_REQUEST = 300_000
MAX_TOKENS_PER_INPUT = 8192
BYTES_PER_TOKEN_ESTIMATE = 3
BYTES_PER_TOKEN_WORST_CASE = 2


def estimate_tokens(text: str) -> int:
    return max(1, -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN_ESTIMATE))


def truncate_for_embedding(text: str, max_tokens: int = MAX_TOKENS_PER_INPUT) -> tuple[str, bool]:
    """(text cut to fit one input, whether it was cut); cuts on a character boundary."""
    limit = max_tokens * BYTES_PER_TOKEN_WORST_CASE
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text, False
    return encoded[:limit].decode("utf-8", errors="ignore"), True


@dataclass(frozen=True)
class Batch:
    index: int
    start: int  # position of the first text in the caller's sequence
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def plan_batches(
    texts: Sequence[str],
    max_inputs: int = MAX_INPUTS_PER_REQUEST,
    max_tokens: int = MAX_TOKENS_PER_REQUEST,
) -> list[Batch]:
    """Consecutive slices of `texts`, each within the input-count and token limits."""
    if max_inputs < 1 or max_tokens < 1:
        raise ValueError("max_inputs and max_tokens must be positive")
    batches: list[Batch] = []
    start, tokens = 0, 0
    for position, text in enumerate(texts):
        cost = estimate_tokens(text)
        if position > start and (position - start >= max_inputs or tokens + cost > max_tokens):
            batches.append(Batch(len(batches), start, position))
            start, tokens = position, 0
        tokens += cost
    if start < len(texts):
        batches.append(Batch(len(batches), start, len(texts)))
    return batches
