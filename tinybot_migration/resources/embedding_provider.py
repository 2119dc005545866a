"""The embedding provider: OpenAI (or any OpenAI-compatible server) or the offline hash embedder.

`embed(texts)` packs the texts into requests (`embeddings.batches`), keeps several in flight,
retries 429/5xx/timeouts with exponential backoff and jitter that honours `Retry-After`, and checks
every vector's length before returning anything, so a wrong model never reaches the database.
Requests in flight are limited per resource and process, however many threads call `embed` at
once (the memory rebuild runs several chunks side by side).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np
import openai
from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from tinybot_migration.embeddings.batches import (
    MAX_INPUTS_PER_REQUEST,
    MAX_TOKENS_PER_REQUEST,
    estimate_tokens,
    plan_batches,
    truncate_for_embedding,
)
from tinybot_migration.embeddings.hash_embedder import hash_embedding
from tinybot_migration.progress import Log, notice_line
from tinybot_migration.schema import EMBEDDING_DIMENSIONS
from tinybot_migration.settings import embedding_deadline_seconds

DEFAULT_MODEL = "text-embedding-3-small"
DIMENSIONS = EMBEDDING_DIMENSIONS
USD_PER_MILLION_TOKENS = {"text-embedding-3-small": 0.02, "text-embedding-3-large": 0.13}
RETRYABLE_STATUS = {408, 409, 429}  # and every 5xx
# Answers about the input itself: the batch is split to find the texts at fault, which are
# rejected one by one while the rest of the batch is embedded (one bad text never fails a run).
INPUT_REJECTED_STATUS = {400, 413, 422}
# How often a request waiting for a slot looks again (slots are shared across threads and loops).
SLOT_POLL_SECONDS = 0.002
_slots_lock = threading.Lock()
# (base_url, model) -> when a batch missed its deadline, in this process (see _refuse_if_stalled).
_stalled: dict[tuple[str | None, str], float] = {}


class EmbeddingProviderError(RuntimeError):
    """The provider failed for good on a batch (retries exhausted, or a non-retryable answer).

    `partial` holds what the other batches returned (`completed` marks those rows), so a caller
    can keep what was paid for before re-raising.
    """

    partial: EmbeddingResult | None = None
    retryable: bool = True  # False when running again cannot help (bad key, wrong model)


class EmbeddingDimensionError(EmbeddingProviderError):
    """The provider's vectors do not have the configured dimensions: nothing may be written."""

    retryable = False


class EmbeddingDeadlineError(EmbeddingProviderError):
    """A batch got no answer within its deadline, retries included; the step is not run again
    (its retries would only wait as long again)."""

    retryable = False


class EmbeddingRefusedError(EmbeddingProviderError):
    """The provider refuses requests whatever they hold (a wrong model, an unsupported parameter),
    or so many that isolating the refused texts would cost more than a bounded number of requests."""

    retryable = False


class EmbeddingResponseError(EmbeddingProviderError):
    """The provider answered a batch with something that is not a vector per input (too few or too
    many, NaN or infinite values, zero vectors, not unit length): not transient, so not retried.
    What other batches returned and passed the same checks may be kept."""

    retryable = False


# Sent once when a batch is refused, to tell a refused text from a provider that refuses everything.
PROBE_TEXT = "hello"
# OpenAI's embeddings have length 1; a vector further from it than this is refused.
UNIT_NORM_TOLERANCE = 0.01
ZERO_NORM = 1e-6


def _decoded_vector(embedding: str | list) -> np.ndarray:
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4").astype(np.float32, copy=False)
    return np.asarray(embedding, dtype=np.float32)


def vector_problem(vectors: np.ndarray, unit_vectors: bool) -> str | None:
    """What is wrong with a batch of vectors (one per row), or None: every value finite, no zero
    vector, and with `unit_vectors` every norm within UNIT_NORM_TOLERANCE of 1."""
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        return f"{int((~finite).sum())} vector(s) with NaN or infinite values (first at row {int(np.argmin(finite))})"
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    zero = norms < ZERO_NORM
    if zero.any():
        return f"{int(zero.sum())} all-zero vector(s) (first at row {int(np.argmax(zero))})"
    if unit_vectors:
        off = np.abs(norms - 1.0) > UNIT_NORM_TOLERANCE
        if off.any():
            first = int(np.argmax(off))
            return (
                f"{int(off.sum())} vector(s) not of unit length (row {first} has norm {norms[first]:.4g}); "
                "set unit_vectors=false for a provider whose vectors are not normalised"
            )
    return None


def usd_for_tokens(model: str, tokens: int) -> float:
    """OpenAI's list price for `tokens` of `model` (0 for a model without a known price)."""
    return tokens / 1_000_000 * USD_PER_MILLION_TOKENS.get(model, 0.0)


@dataclass
class EmbeddingResult:
    vectors: np.ndarray  # float32, one row per input text, in input order
    model: str
    provider: str
    requests: int = 0
    retries: int = 0
    tokens: int = 0  # as billed by the provider (estimated for the offline provider)
    truncated: int = 0  # inputs cut to fit the per-input token limit (their full text is kept)
    seconds: float = 0.0
    completed: np.ndarray | None = None  # bool per input: its vector is real (all True on success)
    rejected: dict[int, str] = field(default_factory=dict)  # input position -> the provider's reason

    @property
    def estimated_cost_usd(self) -> float:
        return usd_for_tokens(self.model, self.tokens) if self.provider == "openai" else 0.0


@dataclass
class _EmbeddingCall:
    """What the batches of one `embed` call share."""

    client: openai.AsyncOpenAI
    texts: list[str]
    result: EmbeddingResult
    log: Log | None
    probe: asyncio.Future | None = None  # the one-word probe, after the first refusal
    halving_requests: int = 0


# The resource's settings that come from the environment, and their variables.
PROVIDER_ENVIRONMENT = {
    "provider": "EMBEDDING_PROVIDER",
    "model": "EMBEDDING_MODEL",
    "api_key": "OPENAI_API_KEY",
    "base_url": "OPENAI_BASE_URL",
}


def provider_numbers_from_environment() -> dict:
    """The provider's numeric settings the environment sets (not secrets: plain values, not EnvVar)."""
    deadline = embedding_deadline_seconds()
    return {} if deadline is None else {"batch_deadline_seconds": deadline}


class EmbeddingProviderResource(ConfigurableResource):
    """Embeddings for memories.

    `provider`: "openai" (the official client; `base_url` for any OpenAI-compatible server),
    "hash" (offline and deterministic), or "auto": openai when an API key is set, else hash.
    """

    provider: str = Field(default="auto", description="auto | openai | hash (env EMBEDDING_PROVIDER)")
    model: str = Field(default=DEFAULT_MODEL, description="env EMBEDDING_MODEL")
    dimensions: int = Field(default=DIMENSIONS)
    api_key: str | None = Field(default=None, description="env OPENAI_API_KEY")
    base_url: str | None = Field(default=None, description="env OPENAI_BASE_URL")
    max_inputs_per_request: int = Field(default=MAX_INPUTS_PER_REQUEST)
    max_tokens_per_request: int = Field(default=MAX_TOKENS_PER_REQUEST)
    max_concurrent_requests: int = Field(default=4)
    max_retries: int = Field(default=6, description="retries per batch after the first attempt")
    initial_backoff_seconds: float = Field(default=1.0)
    max_backoff_seconds: float = Field(default=60.0)
    request_timeout_seconds: float = Field(default=60.0, description="the longest one request may take")
    batch_deadline_seconds: float = Field(
        default=120.0,
        description="the longest one batch may take, every retry included; then the run fails, and every "
        "later call in the same process fails at once (a provider that stopped answering is waited for once)",
    )
    max_refusal_requests: int = Field(
        default=64, description="requests one embed call may spend isolating texts the provider refuses"
    )
    unit_vectors: bool = Field(
        default=True,
        description="the provider's vectors have length 1 (OpenAI's and the offline embedder's do); "
        "false for an OpenAI-compatible server whose vectors are not normalised (then only zero, NaN "
        "and infinite vectors are refused)",
    )

    _request_slots: threading.BoundedSemaphore | None = PrivateAttr(default=None)

    @classmethod
    def from_environment(cls) -> EmbeddingProviderResource:
        """The provider the environment configures, outside Dagster (the CLI's search)."""
        return cls(
            **{
                field: os.environ[name]
                for field, name in PROVIDER_ENVIRONMENT.items()
                if os.environ.get(name)
            },
            **provider_numbers_from_environment(),
        )

    @asynccontextmanager
    async def _request_slot(self) -> AsyncIterator[None]:
        """One of `max_concurrent_requests` slots, shared by every thread using this resource."""
        with _slots_lock:
            if self._request_slots is None:
                self._request_slots = threading.BoundedSemaphore(max(1, self.max_concurrent_requests))
        slots = self._request_slots
        while not slots.acquire(blocking=False):
            await asyncio.sleep(SLOT_POLL_SECONDS)
        try:
            yield
        finally:
            slots.release()

    def effective_provider(self) -> str:
        choice = (self.provider or "auto").lower()
        if choice == "auto":
            return "openai" if self.api_key else "hash"
        if choice not in ("openai", "hash"):
            raise ValueError(f"EMBEDDING_PROVIDER must be auto, openai or hash, not {self.provider!r}")
        if choice == "openai" and not self.api_key:
            raise ValueError("EMBEDDING_PROVIDER=openai needs OPENAI_API_KEY")
        return choice

    def embed(self, texts: Sequence[str], log: Log | None = None) -> EmbeddingResult:
        """Vectors for `texts`, in order. Raises before returning anything if any vector is wrong."""
        started = time.perf_counter()
        prepared, truncated = [], 0
        for text in texts:
            cut, was_cut = truncate_for_embedding(text)
            prepared.append(cut)
            truncated += was_cut
        provider = self.effective_provider()
        if provider == "hash":
            vectors = np.stack([hash_embedding(t, self.dimensions) for t in prepared]) if prepared else None
            result = EmbeddingResult(
                vectors if vectors is not None else np.zeros((0, self.dimensions), np.float32),
                model=f"hash-{self.dimensions}",
                provider="hash",
                tokens=sum(estimate_tokens(t) for t in prepared),
                completed=np.ones(len(prepared), dtype=bool),
            )
        else:
            result = asyncio.run(self._embed_openai(prepared, log))
        result.truncated = truncated
        result.seconds = time.perf_counter() - started
        return result

    def _stall_key(self) -> tuple[str | None, str]:
        return (self.base_url, self.model)

    def _refuse_if_stalled(self) -> None:
        """A provider that missed a batch deadline earlier in this process (this run) is not waited
        for again: every memory asset after the first fails at once."""
        since = _stalled.get(self._stall_key())
        if since is not None:
            raise EmbeddingDeadlineError(
                f"the openai provider ({self.model}) gave no answer within the batch deadline of "
                f"{self.batch_deadline_seconds:g}s {time.time() - since:.0f}s ago in this run; not waiting again: "
                "check OPENAI_BASE_URL and the provider's status, then run again"
            )

    async def _embed_openai(self, texts: list[str], log: Log | None) -> EmbeddingResult:
        self._refuse_if_stalled()
        batches = plan_batches(texts, self.max_inputs_per_request, self.max_tokens_per_request)
        result = EmbeddingResult(
            np.zeros((len(texts), self.dimensions), np.float32),
            model=self.model,
            provider="openai",
            completed=np.zeros(len(texts), dtype=bool),
        )
        # Retries are ours (with Retry-After and a clear final error), not the client's.
        async with openai.AsyncOpenAI(
            api_key=self.api_key, base_url=self.base_url, max_retries=0, timeout=self.request_timeout_seconds
        ) as client:
            call = _EmbeddingCall(client, texts, result, log)
            outcomes = await asyncio.gather(
                *(
                    self._embed_batch(call, b.start, b.stop, f"batch {b.index + 1}/{len(batches)}")
                    for b in batches
                ),
                return_exceptions=True,
            )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            # A dimension error first: it means the model is wrong, not that the network was.
            error = next((f for f in failures if isinstance(f, EmbeddingDimensionError)), failures[0])
            if isinstance(error, EmbeddingProviderError) and not isinstance(error, EmbeddingDimensionError):
                error.partial = result  # what the other batches returned may be kept
            raise error
        return result

    def _request_options(self) -> dict:
        return {"dimensions": self.dimensions} if self.model.startswith("text-embedding-3") else {}

    async def _embed_batch(self, call: _EmbeddingCall, start: int, stop: int, label: str) -> None:
        where = f"{label} (texts {start}–{stop - 1})"
        result = call.result
        deadline = time.monotonic() + self.batch_deadline_seconds
        tried: Counter[str] = Counter()
        attempt = 0
        while True:
            try:
                async with self._request_slot():
                    result.requests += 1
                    # The raw answer, vectors as base64: the client's own parsing builds a model and a
                    # list of 1536 Python floats per text, about 2/3 of our CPU (benchmarks/memory_rebuild.py).
                    response = await call.client.embeddings.with_raw_response.create(
                        model=self.model,
                        input=call.texts[start:stop],
                        encoding_format="base64",
                        timeout=max(0.1, min(self.request_timeout_seconds, deadline - time.monotonic())),
                        **self._request_options(),
                    )
                break
            except (openai.APIStatusError, openai.APITimeoutError, openai.APIConnectionError) as exc:
                status = getattr(exc, "status_code", None)
                if status in INPUT_REJECTED_STATUS:
                    return await self._split_rejected(call, start, stop, label, exc)
                retryable = status is None or status in RETRYABLE_STATUS or status >= 500
                reason = f"HTTP {status}" if status is not None else type(exc).__name__
                tried[reason] += 1
                if not retryable or attempt >= self.max_retries:
                    detail = "" if retryable or status in (401, 403) else f" ({self._scrubbed(exc)})"
                    error = EmbeddingProviderError(
                        f"embedding {where} with {self.model} failed after {attempt + 1} attempt(s): {reason}{detail}"
                    )
                    error.retryable = retryable
                    raise error from None
                delay = self._backoff(attempt, exc)
                if time.monotonic() + delay >= deadline:
                    _stalled[self._stall_key()] = time.time()
                    raise EmbeddingDeadlineError(
                        f"embedding {where} with {self.model}: no answer within the batch deadline of "
                        f"{self.batch_deadline_seconds:g}s after {attempt + 1} attempt(s) ("
                        + ", ".join(f"{n} × {what}" for what, n in tried.items())
                        + f"; each request waits at most {self.request_timeout_seconds:g}s): check "
                        "OPENAI_BASE_URL and the provider's status, or raise EMBEDDING_DEADLINE_SECONDS"
                    ) from None
                result.retries += 1
                if call.log is not None:
                    call.log(
                        notice_line(
                            f"embedding {where} with {self.model}: {reason}, retry {attempt + 1} of "
                            f"{self.max_retries} in {delay:.1f}s (gives up in "
                            f"{max(0.0, deadline - time.monotonic()):.0f}s)"
                        )
                    )
                await asyncio.sleep(delay)
                attempt += 1
        answer = self._answer_json(response.content, where)
        result.vectors[start:stop] = self._checked_vectors(answer, stop - start, where)
        result.completed[start:stop] = True
        usage = answer.get("usage") or {}
        result.tokens += usage.get("total_tokens") or sum(estimate_tokens(t) for t in call.texts[start:stop])

    def _answer_json(self, content: bytes, where: str) -> dict:
        try:
            answer = json.loads(content)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
            raise EmbeddingResponseError(
                f"embedding {where}: the openai provider ({self.model}) answered something that is not an "
                f"embeddings list ({content[:80]!r})"
            )
        return answer

    def _checked_vectors(self, answer: dict, inputs: int, where: str) -> np.ndarray:
        """The answer's vectors in input order, or a non-retryable error saying what is wrong. A vector
        is base64 of little-endian float32 (as asked), or a list of floats from a server that ignores
        encoding_format."""
        try:
            items = sorted(answer["data"], key=lambda item: item["index"])
            vectors = [_decoded_vector(item["embedding"]) for item in items]
        except (KeyError, TypeError, ValueError, binascii.Error) as error:
            raise EmbeddingResponseError(
                f"embedding {where}: the openai provider ({self.model}) answered a malformed vector ({error})"
            ) from None
        if len(vectors) != inputs:
            raise EmbeddingResponseError(
                f"embedding {where}: the openai provider ({self.model}) answered {len(vectors)} vectors "
                f"for {inputs} inputs"
            )
        wrong = next((len(v) for v in vectors if len(v) != self.dimensions), None)
        if wrong is not None:
            raise EmbeddingDimensionError(
                f"embedding {where}: {self.model} returned {wrong}-dimensional vectors, expected {self.dimensions}"
            )
        array = np.stack(vectors) if vectors else np.empty((0, self.dimensions), dtype=np.float32)
        problem = vector_problem(array, self.unit_vectors)
        if problem is not None:
            raise EmbeddingResponseError(
                f"embedding {where}: the openai provider ({self.model}) answered {problem}; "
                "nothing of this batch was cached or stored"
            )
        return array

    async def _split_rejected(self, call: _EmbeddingCall, start: int, stop: int, label: str, exc) -> None:
        """The provider refused a batch for its input: halve it until the refused texts stand alone.

        Unless the refusal is not about the input at all: the first refusal of a call is followed by
        one probe with a one-word input, and if that is refused too (a wrong model, a parameter
        the server does not take) the call stops at once. The halving is bounded too.
        """
        reason = f"HTTP {exc.status_code}: {self._scrubbed(exc)}"
        await self._refuse_everything_check(call, reason)
        if stop - start == 1:
            call.result.rejected[start] = reason
            if call.log is not None:
                call.log(f"embedding {label}: text {start} rejected by the provider ({reason})")
            return
        call.halving_requests += 2
        if call.halving_requests > self.max_refusal_requests:
            raise EmbeddingRefusedError(
                f"embedding {label}: the openai provider ({self.model}) refused so many batches that isolating "
                f"the refused texts would take more than {self.max_refusal_requests} requests; last answer: "
                f"{reason}"
            )
        middle = (start + stop) // 2
        await asyncio.gather(
            self._embed_batch(call, start, middle, f"{label}a"),
            self._embed_batch(call, middle, stop, f"{label}b"),
        )

    async def _refuse_everything_check(self, call: _EmbeddingCall, reason: str) -> None:
        """Raise when the provider refuses even a one-word input (probed once per call)."""
        if call.probe is None:
            call.probe = asyncio.ensure_future(self._probe_refused(call))
        refused = await call.probe
        if refused is not None:
            raise EmbeddingRefusedError(
                f"the openai provider ({self.model}) refuses every request, even a one-word input "
                f"({refused}; the batch got {reason}): check EMBEDDING_MODEL, the dimensions "
                f"({self.dimensions}) and OPENAI_BASE_URL"
            )

    async def _probe_refused(self, call: _EmbeddingCall) -> str | None:
        try:
            async with self._request_slot():
                call.result.requests += 1
                await call.client.embeddings.create(
                    model=self.model, input=[PROBE_TEXT], **self._request_options()
                )
        except openai.APIStatusError as exc:
            if exc.status_code in INPUT_REJECTED_STATUS:
                return f"HTTP {exc.status_code}: {self._scrubbed(exc)}"
        except (openai.APITimeoutError, openai.APIConnectionError):
            pass  # the network, not a refusal: the halving goes on and meets its own errors
        return None

    def _scrubbed(self, exc: Exception) -> str:
        """The provider's message, short, with the API key masked wherever it appears."""
        text = str(getattr(exc, "message", "") or exc)[:200]
        return text.replace(self.api_key, "***") if self.api_key else text

    def _backoff(self, attempt: int, exc: Exception) -> float:
        response = getattr(exc, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after:
            try:
                return min(self.max_backoff_seconds, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date: fall back to our own backoff
        base = min(self.max_backoff_seconds, self.initial_backoff_seconds * 2**attempt)
        return base * random.uniform(0.5, 1.0)  # jitter spreads simultaneous retries
