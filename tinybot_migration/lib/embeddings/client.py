"""The embedding client: OpenAI (or any OpenAI-compatible server) or the offline hash embedder.

`embed(texts)` packs the texts into requests (`embeddings.batches`) and sends them from one event
loop per client (a background thread), at most `max_concurrent_requests` in flight however many
threads call it (an `asyncio.Semaphore`). Each request is retried by tenacity: 408/409/429/5xx,
timeouts and connection errors, with jittered exponential backoff that honours `Retry-After` (in
seconds or as an HTTP date), a bounded number of attempts and a deadline per batch. Refusals about
the input (400/413/422) are isolated by halving instead; any other refusal fails at once. Every
vector's length and values are checked before anything is returned, so a wrong model never
reaches the database.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import numpy as np
import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from tinybot_migration.lib.embeddings.batches import (
    MAX_INPUTS_PER_REQUEST,
    MAX_TOKENS_PER_REQUEST,
    estimate_tokens,
    plan_batches,
    truncate_for_embedding,
)
from tinybot_migration.lib.embeddings.hash_embedder import hash_embedding
from tinybot_migration.lib.progress import Notice, Progress
from tinybot_migration.lib.schema import EMBEDDING_DIMENSIONS
from tinybot_migration.lib.settings import embedding_deadline_seconds, embedding_environment

DEFAULT_MODEL = "text-embedding-3-small"
DIMENSIONS = EMBEDDING_DIMENSIONS
USD_PER_MILLION_TOKENS = {"text-embedding-3-small": 0.02, "text-embedding-3-large": 0.13}
RETRYABLE_STATUS = {408, 409, 429}  # and every 5xx
# Answers about the input itself: the batch is split to find the texts at fault, which are
# rejected one by one while the rest of the batch is embedded (one bad text never fails a run).
INPUT_REJECTED_STATUS = {400, 413, 422}
# Sent once when a batch is refused, to tell a refused text from a provider that refuses everything.
PROBE_TEXT = "hello"
# OpenAI's embeddings have length 1; a vector further from it than this is refused.
UNIT_NORM_TOLERANCE = 0.01
ZERO_NORM = 1e-6
_REQUEST_ERRORS = (openai.APIStatusError, openai.APITimeoutError, openai.APIConnectionError)
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


@dataclass(frozen=True)
class EmbeddingSettings:
    """What the client needs. `provider`: "openai" (the official client; `base_url` for any
    OpenAI-compatible server), "hash" (offline and deterministic), or "auto": openai when an API key
    is set, else hash."""

    provider: str = "auto"
    model: str = DEFAULT_MODEL
    dimensions: int = DIMENSIONS
    api_key: str | None = None
    base_url: str | None = None
    max_inputs_per_request: int = MAX_INPUTS_PER_REQUEST
    max_tokens_per_request: int = MAX_TOKENS_PER_REQUEST
    max_concurrent_requests: int = 4
    max_retries: int = 6  # retries per batch after the first attempt
    initial_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    request_timeout_seconds: float = 60.0  # the longest one request may take
    # The longest one batch may take, every retry included; then the call fails, and every later
    # call in the same process fails at once (a provider that stopped answering is waited for once).
    batch_deadline_seconds: float = 120.0
    max_refusal_requests: int = 64  # requests one call may spend isolating refused texts
    unit_vectors: bool = True  # false for a server whose vectors are not normalised

    @classmethod
    def from_environment(cls) -> EmbeddingSettings:
        """The provider the environment configures (EMBEDDING_PROVIDER, EMBEDDING_MODEL,
        OPENAI_API_KEY, OPENAI_BASE_URL, EMBEDDING_DEADLINE_SECONDS)."""
        return cls(**embedding_environment(), **numbers_from_environment())

    def effective_provider(self) -> str:
        choice = (self.provider or "auto").lower()
        if choice == "auto":
            return "openai" if self.api_key else "hash"
        if choice not in ("openai", "hash"):
            raise ValueError(f"EMBEDDING_PROVIDER must be auto, openai or hash, not {self.provider!r}")
        if choice == "openai" and not self.api_key:
            raise ValueError("EMBEDDING_PROVIDER=openai needs OPENAI_API_KEY")
        return choice


def numbers_from_environment() -> dict[str, float]:
    """The numeric settings the environment sets (plain values, not secrets)."""
    deadline = embedding_deadline_seconds()
    return {} if deadline is None else {"batch_deadline_seconds": float(deadline)}


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


def retry_after_seconds(exc: BaseException, now: datetime | None = None) -> float | None:
    """The wait the provider asked for: `retry-after-ms`, or `Retry-After` in seconds or as an HTTP
    date; None when it gave none (or nothing readable)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    given = headers.get("retry-after")
    if not given:
        return None
    try:
        return max(0.0, float(given))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(given)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def is_transient(exc: BaseException) -> bool:
    """A timeout, a lost connection, 408/409/429 or any 5xx: worth the same request again."""
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRYABLE_STATUS or exc.status_code >= 500
    return isinstance(exc, openai.APITimeoutError | openai.APIConnectionError)


def failure_reason(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    return f"HTTP {status}" if status is not None else type(exc).__name__


def _decoded_vector(embedding: str | list) -> np.ndarray:
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4").astype(np.float32, copy=False)
    return np.asarray(embedding, dtype=np.float32)


class _RetryPolicy:
    """One batch's tenacity policy: the wait (Retry-After, else jittered exponential backoff), the
    stop (attempts, or a wait that would end past the batch's deadline), and the retry notice."""

    def __init__(self, settings: EmbeddingSettings, where: str, log: Progress | None):
        self.settings = settings
        self.where = where
        self.log = log
        self.deadline = time.monotonic() + settings.batch_deadline_seconds
        self.tried: Counter[str] = Counter()  # the failures retried or given up on, by reason
        self.attempts = 0  # requests sent for this batch
        self.past_deadline = False

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception()
        given = retry_after_seconds(exc)
        if given is not None:
            return min(self.settings.max_backoff_seconds, given)
        base = min(
            self.settings.max_backoff_seconds,
            self.settings.initial_backoff_seconds * 2 ** (state.attempt_number - 1),
        )
        return base * random.uniform(0.5, 1.0)  # jitter spreads simultaneous retries

    def stop(self, state: RetryCallState) -> bool:
        self.tried[failure_reason(state.outcome.exception())] += 1
        if stop_after_attempt(self.settings.max_retries + 1)(state):
            return True
        # tenacity computes the wait before asking whether to stop.
        self.past_deadline = time.monotonic() + state.upcoming_sleep >= self.deadline
        return self.past_deadline

    def announce(self, state: RetryCallState) -> None:
        if self.log is not None:
            self.log(
                Notice(
                    f"embedding {self.where} with {self.settings.model}: "
                    f"{failure_reason(state.outcome.exception())}, retry {state.attempt_number} of "
                    f"{self.settings.max_retries} in {state.upcoming_sleep:.1f}s (gives up in "
                    f"{max(0.0, self.seconds_left()):.0f}s)"
                )
            )

    def retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=self.wait,
            stop=self.stop,
            before_sleep=self.announce,
            reraise=True,
        )


@dataclass
class _EmbeddingCall:
    """What the batches of one `embed` call share."""

    texts: list[str]
    result: EmbeddingResult
    log: Progress | None
    probe: asyncio.Future | None = None  # the one-word probe, after the first refusal
    halving_requests: int = 0


class EmbeddingClient:
    """Embeddings for memories, from any thread; requests run on the client's own event loop."""

    def __init__(self, settings: EmbeddingSettings):
        self.settings = settings
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._openai: openai.AsyncOpenAI | None = None

    @classmethod
    def from_environment(cls) -> EmbeddingClient:
        return cls(EmbeddingSettings.from_environment())

    @property
    def model(self) -> str:
        return self.settings.model

    @property
    def dimensions(self) -> int:
        return self.settings.dimensions

    def effective_provider(self) -> str:
        return self.settings.effective_provider()

    def embed(self, texts: Sequence[str], log: Progress | None = None) -> EmbeddingResult:
        """Vectors for `texts`, in order. Raises before returning anything if any vector is wrong."""
        started = time.perf_counter()
        prepared, truncated = [], 0
        for text in texts:
            cut, was_cut = truncate_for_embedding(text)
            prepared.append(cut)
            truncated += was_cut
        if self.effective_provider() == "hash":
            result = self._embed_offline(prepared)
        else:
            result = self._run(self._embed_openai(prepared, log))
        result.truncated = truncated
        result.seconds = time.perf_counter() - started
        return result

    def close(self) -> None:
        """Close the HTTP client and stop the event loop (a later `embed` starts them again)."""
        with self._lock:
            loop, client = self._loop, self._openai
            self._loop = self._semaphore = self._openai = None
        if loop is None:
            return
        if client is not None:
            asyncio.run_coroutine_threadsafe(client.close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)

    def _embed_offline(self, texts: list[str]) -> EmbeddingResult:
        dims = self.settings.dimensions
        vectors = (
            np.stack([hash_embedding(t, dims) for t in texts]) if texts else np.zeros((0, dims), np.float32)
        )
        return EmbeddingResult(
            vectors,
            model=f"hash-{dims}",
            provider="hash",
            tokens=sum(estimate_tokens(t) for t in texts),
            completed=np.ones(len(texts), dtype=bool),
        )

    def _run(self, coroutine):
        """Run `coroutine` on the client's loop and wait for it; an interrupt (Ctrl-C) in the caller
        cancels it, and with it every request in flight."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._event_loop())
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="embedding-client", daemon=True).start()
                self._loop = loop
            return self._loop

    def _client(self) -> openai.AsyncOpenAI:
        """The HTTP client and request slots, made on the loop's thread (their first use)."""
        if self._openai is None:
            self._semaphore = asyncio.Semaphore(max(1, self.settings.max_concurrent_requests))
            # Retries are ours (tenacity, with Retry-After, a deadline and a clear final error).
            self._openai = openai.AsyncOpenAI(
                api_key=self.settings.api_key,
                base_url=self.settings.base_url,
                max_retries=0,
                timeout=self.settings.request_timeout_seconds,
            )
        return self._openai

    def _stall_key(self) -> tuple[str | None, str]:
        return (self.settings.base_url, self.settings.model)

    def _refuse_if_stalled(self) -> None:
        """A provider that missed a batch deadline earlier in this process (this run) is not waited
        for again: every memory asset after the first fails at once."""
        since = _stalled.get(self._stall_key())
        if since is not None:
            raise EmbeddingDeadlineError(
                f"the openai provider ({self.model}) gave no answer within the batch deadline of "
                f"{self.settings.batch_deadline_seconds:g}s {time.time() - since:.0f}s ago in this run; not "
                "waiting again: check OPENAI_BASE_URL and the provider's status, then run again"
            )

    async def _embed_openai(self, texts: list[str], log: Progress | None) -> EmbeddingResult:
        self._refuse_if_stalled()
        self._client()
        s = self.settings
        batches = plan_batches(texts, s.max_inputs_per_request, s.max_tokens_per_request)
        result = EmbeddingResult(
            np.zeros((len(texts), s.dimensions), np.float32),
            model=s.model,
            provider="openai",
            completed=np.zeros(len(texts), dtype=bool),
        )
        call = _EmbeddingCall(texts, result, log)
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
        policy = _RetryPolicy(self.settings, where, call.log)
        try:
            content = await self._request_with_retries(call, start, stop, policy)
        except _REQUEST_ERRORS as exc:
            if getattr(exc, "status_code", None) in INPUT_REJECTED_STATUS:
                return await self._split_rejected(call, start, stop, label, exc)
            raise self._final_error(exc, where, policy) from None
        answer = self._answer_json(content, where)
        call.result.vectors[start:stop] = self._checked_vectors(answer, stop - start, where)
        call.result.completed[start:stop] = True
        usage = answer.get("usage") or {}
        call.result.tokens += usage.get("total_tokens") or sum(
            estimate_tokens(t) for t in call.texts[start:stop]
        )

    async def _request_with_retries(
        self, call: _EmbeddingCall, start: int, stop: int, policy: _RetryPolicy
    ) -> bytes:
        async for attempt in policy.retrying():
            with attempt:
                policy.attempts = attempt.retry_state.attempt_number
                if policy.attempts > 1:
                    call.result.retries += 1
                async with self._semaphore:
                    call.result.requests += 1
                    # The raw answer, vectors as base64: the client's own parsing builds a model and a
                    # list of 1536 Python floats per text, about 2/3 of our CPU (benchmarks/memory_rebuild.py).
                    response = await self._openai.embeddings.with_raw_response.create(
                        model=self.model,
                        input=call.texts[start:stop],
                        encoding_format="base64",
                        timeout=max(0.1, min(self.settings.request_timeout_seconds, policy.seconds_left())),
                        **self._request_options(),
                    )
                return response.content
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def _final_error(self, exc: BaseException, where: str, policy: _RetryPolicy) -> EmbeddingProviderError:
        s = self.settings
        attempts = policy.attempts
        if policy.past_deadline:
            _stalled[self._stall_key()] = time.time()
            return EmbeddingDeadlineError(
                f"embedding {where} with {s.model}: no answer within the batch deadline of "
                f"{s.batch_deadline_seconds:g}s after {attempts} attempt(s) ("
                + ", ".join(f"{n} × {what}" for what, n in policy.tried.items())
                + f"; each request waits at most {s.request_timeout_seconds:g}s): check "
                "OPENAI_BASE_URL and the provider's status, or raise EMBEDDING_DEADLINE_SECONDS"
            )
        retryable = is_transient(exc)
        status = getattr(exc, "status_code", None)
        detail = "" if retryable or status in (401, 403) else f" ({self._scrubbed(exc)})"
        error = EmbeddingProviderError(
            f"embedding {where} with {s.model} failed after {attempts} attempt(s): {failure_reason(exc)}{detail}"
        )
        error.retryable = retryable
        return error

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
        problem = vector_problem(array, self.settings.unit_vectors)
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
        if call.halving_requests > self.settings.max_refusal_requests:
            raise EmbeddingRefusedError(
                f"embedding {label}: the openai provider ({self.model}) refused so many batches that isolating "
                f"the refused texts would take more than {self.settings.max_refusal_requests} requests; last "
                f"answer: {reason}"
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
            async with self._semaphore:
                call.result.requests += 1
                await self._openai.embeddings.create(
                    model=self.model, input=[PROBE_TEXT], **self._request_options()
                )
        except openai.APIStatusError as exc:
            if exc.status_code in INPUT_REJECTED_STATUS:
                return f"HTTP {exc.status_code}: {self._scrubbed(exc)}"
        except (openai.APITimeoutError, openai.APIConnectionError):
            pass  # the network, not a refusal: the halving goes on and meets its own errors
        return None

    def _scrubbed(self, exc: BaseException) -> str:
        """The provider's message, short, with the API key masked wherever it appears."""
        text = str(getattr(exc, "message", "") or exc)[:200]
        key = self.settings.api_key
        return text.replace(key, "***") if key else text
