"""The embedding provider through the real `openai` client against a local HTTP server."""

import numpy as np
import pytest

from tinybot_migration.defs.resources.embedding_provider import EmbeddingProviderResource
from tinybot_migration.lib.embeddings.batches import (
    MAX_TOKENS_PER_INPUT,
    estimate_tokens,
    plan_batches,
    truncate_for_embedding,
)
from tinybot_migration.lib.embeddings.client import (
    PROBE_TEXT,
    EmbeddingDeadlineError,
    EmbeddingDimensionError,
    EmbeddingProviderError,
    EmbeddingRefusedError,
    EmbeddingResponseError,
)
from tinybot_migration.lib.embeddings.hash_embedder import hash_embedding
from tinybot_migration.lib.progress import Notice
from tinybot_migration_tests.helpers.openai_server import OpenAITestServer, provider_for

API_KEY = "sk-test-never-printed-0123456789"
TEXTS = [f"{{user}}: message {i} about cats 🐈\n{{assistant}}: answer {i}" for i in range(35)]


def provider(server: OpenAITestServer, **overrides) -> EmbeddingProviderResource:
    return provider_for(server, api_key=API_KEY, **overrides)


def test_batches_respect_input_and_token_limits():
    texts = ["a" * 300] * 10 + ["b" * 30] * 50
    batches = plan_batches(texts, max_inputs=16, max_tokens=1000)
    assert [t for b in batches for t in texts[b.start : b.stop]] == texts  # all, in order
    for batch in batches:
        assert 1 <= len(batch) <= 16
        assert sum(estimate_tokens(t) for t in texts[batch.start : batch.stop]) <= 1000
    with pytest.raises(ValueError):
        plan_batches(texts, max_inputs=0)


def test_an_overlong_text_is_cut_on_a_character_boundary():
    text = "é" * (MAX_TOKENS_PER_INPUT * 3)
    cut, was_cut = truncate_for_embedding(text)
    assert was_cut and text.startswith(cut) and len(cut.encode()) <= MAX_TOKENS_PER_INPUT * 2
    assert truncate_for_embedding("short") == ("short", False)


def test_hash_embedding_is_deterministic_unit_length_and_meaningful():
    a, b = hash_embedding("the cat sat on the mat", 1536), hash_embedding("the cat sat on a mat", 1536)
    c = hash_embedding("quarterly revenue forecast", 1536)
    assert np.isclose(np.linalg.norm(a), 1.0) and np.array_equal(
        a, hash_embedding("the cat sat on the mat", 1536)
    )
    assert float(a @ b) > float(a @ c) + 0.3
    assert np.isclose(np.linalg.norm(hash_embedding("", 1536)), 1.0)


def test_auto_picks_hash_without_a_key_and_openai_with_one():
    assert EmbeddingProviderResource().effective_provider() == "hash"
    assert EmbeddingProviderResource(api_key="k").effective_provider() == "openai"
    with pytest.raises(ValueError, match="needs OPENAI_API_KEY"):
        EmbeddingProviderResource(provider="openai").effective_provider()
    result = EmbeddingProviderResource().embed(TEXTS[:3])
    assert result.vectors.shape == (3, 1536) and result.requests == 0 and result.estimated_cost_usd == 0


def test_openai_provider_batches_concurrently_and_reports_usage():
    with OpenAITestServer(latency_seconds=0.05) as server:
        result = provider(server, max_inputs_per_request=10, max_concurrent_requests=4).embed(TEXTS)
    assert result.requests == 4 and sorted(len(r) for r in server.requests) == [5, 10, 10, 10]
    expected = np.stack([hash_embedding(t, 1536) for t in TEXTS])
    assert np.allclose(result.vectors, expected, atol=1e-6)  # in input order whatever the arrival order
    assert result.tokens == sum(estimate_tokens(t) for t in TEXTS)
    assert result.estimated_cost_usd == pytest.approx(result.tokens / 1e6 * 0.02)


def test_429_with_retry_after_and_500s_are_retried():
    with OpenAITestServer() as server:
        server.script(429, {"Retry-After": "0"})
        server.script(500, times=2)
        result = provider(server).embed(TEXTS[:5])
    assert result.retries == 3 and result.requests == 4
    assert np.allclose(result.vectors[0], hash_embedding(TEXTS[0], 1536), atol=1e-6)


def test_a_provider_failing_for_good_names_the_batch_and_hides_the_key():
    with OpenAITestServer() as server:
        server.fail_always = 503
        with pytest.raises(EmbeddingProviderError) as failure:
            provider(server, max_retries=2, max_inputs_per_request=20).embed(TEXTS)
    message = str(failure.value)
    assert "batch 1/2" in message  # batches fail in order; the first one's error is raised
    assert "3 attempt(s)" in message and "HTTP 503" in message
    assert API_KEY not in message


def test_an_authentication_error_is_not_retried():
    with OpenAITestServer() as server:
        server.script(401)
        with pytest.raises(EmbeddingProviderError, match="HTTP 401") as failure:
            provider(server).embed(TEXTS[:2])
        assert len(server.requests) == 1
    assert API_KEY not in str(failure.value)


def test_a_refused_input_is_isolated_and_the_rest_of_its_batch_embedded():
    texts = [*TEXTS[:6], "this one is BAD input", *TEXTS[6:9]]
    with OpenAITestServer() as server:
        server.reject_marker = "BAD"
        result = provider(server, max_inputs_per_request=10).embed(texts)
    assert list(result.rejected) == [6] and "HTTP 400" in result.rejected[6]
    assert result.completed.sum() == 9 and not result.completed[6]
    good = [i for i in range(10) if i != 6]
    assert np.allclose(
        result.vectors[good], np.stack([hash_embedding(texts[i], 1536) for i in good]), atol=1e-6
    )
    # Halving: 10 → 5+5 → the bad half 2+3 → 1+1: seven requests for one bad text among ten, and
    # one probe with a one-word input (accepted: the provider refuses that text, not everything).
    probes = [r for r in server.requests if r == [PROBE_TEXT]]
    assert len(probes) == 1
    assert sorted(len(r) for r in server.requests if r != [PROBE_TEXT]) == [1, 1, 2, 3, 5, 5, 10]


def test_wrong_dimensions_fail_before_anything_is_returned():
    with (
        OpenAITestServer(dimensions=768) as server,
        pytest.raises(EmbeddingDimensionError, match="768-dimensional"),
    ):
        provider(server).embed(TEXTS[:3])


def test_requests_in_flight_are_limited_per_resource_across_threads():
    """Chunks embedding side by side share the resource's limit: never more than
    max_concurrent_requests at once, however many threads call `embed` (not threads × limit)."""
    from concurrent.futures import ThreadPoolExecutor

    with OpenAITestServer(latency_seconds=0.05) as server:
        shared = provider(server, max_inputs_per_request=2, max_concurrent_requests=2)
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(shared.embed, [TEXTS[i : i + 8] for i in range(0, 32, 8)]))
    assert sum(r.requests for r in results) == 16
    assert server.max_in_flight == 2


@pytest.mark.parametrize(
    "fault, reason",
    [
        ("zero", "all-zero vector"),
        ("nan", "NaN or infinite"),
        ("missing", "answered 4 vectors for 5 inputs"),
        ("unnormalised", "not of unit length"),
    ],
)
def test_a_malformed_answer_is_refused_for_good_naming_provider_and_model(fault, reason):
    with OpenAITestServer() as server:
        server.vector_fault = fault
        with pytest.raises(EmbeddingResponseError, match=reason) as refusal:
            provider(server).embed(TEXTS[:5])
        assert len(server.requests) == 1  # not retried: the answer is wrong, not the network
    assert not refusal.value.retryable
    assert "openai provider (text-embedding-3-small)" in str(refusal.value) and API_KEY not in str(
        refusal.value
    )


def test_vectors_not_of_unit_length_pass_when_the_provider_is_declared_unnormalised():
    with OpenAITestServer() as server:
        server.vector_fault = "unnormalised"
        result = provider(server, unit_vectors=False).embed(TEXTS[:5])
        server.vector_fault = "zero"
        with pytest.raises(EmbeddingResponseError, match="all-zero"):
            provider(server, unit_vectors=False).embed(TEXTS[:5])
    assert np.allclose(np.linalg.norm(result.vectors, axis=1), 3.0, atol=1e-4)


def test_a_provider_that_refuses_everything_is_stopped_at_once():
    """A proxy refusing the dimensions parameter answers 400 to everything: no halving storm."""
    with OpenAITestServer() as server:
        server.fail_always = 400
        with pytest.raises(EmbeddingRefusedError, match="refuses every request, even a one-word input"):
            provider(server, max_inputs_per_request=10, max_concurrent_requests=4).embed(TEXTS)
        assert len(server.requests) == 5  # the four batches, then one probe


def test_the_halving_of_refused_batches_is_bounded():
    """Every text refused but a one-word probe accepted: the halving stops at its bound."""
    with OpenAITestServer() as server:
        server.reject_marker = "cats"  # in every text of TEXTS
        with pytest.raises(EmbeddingRefusedError, match="more than 12 requests"):
            provider(
                server, max_inputs_per_request=10, max_concurrent_requests=1, max_refusal_requests=12
            ).embed(TEXTS)
        # The four batches and one probe, then at most 12 requests of halving.
        assert len(server.requests) <= 4 + 1 + 12
    with OpenAITestServer() as server:
        server.reject_marker = "cats"
        unbounded = provider(server, max_inputs_per_request=10, max_refusal_requests=1000).embed(TEXTS)
        # Without the bound every text is isolated: 31 halvings (35 texts from 4 batches).
        assert len(server.requests) == 4 + 1 + 62 and len(unbounded.rejected) == 35


def test_a_provider_that_never_answers_fails_within_the_batch_deadline_saying_what_was_tried():
    import time

    with OpenAITestServer() as server:
        server.hang_seconds = 30
        started = time.monotonic()
        with pytest.raises(EmbeddingDeadlineError) as failure:
            provider(server, request_timeout_seconds=0.3, batch_deadline_seconds=1.0).embed(TEXTS[:3])
        elapsed = time.monotonic() - started
    message = str(failure.value)
    assert elapsed < 2.0 and not failure.value.retryable
    assert "batch deadline of 1s" in message and "× APITimeoutError" in message and "0.3s" in message


def test_a_stalled_provider_is_waited_for_once_per_run_and_each_retry_is_said_as_it_happens():
    """The second memory asset of a run does not wait out the deadline again; each retry is a
    notice line (the CLI shows those on the terminal) saying what, how long and how many left."""
    import time

    said: list = []
    with OpenAITestServer() as server:
        server.hang_seconds = 30
        stalled = provider(server, request_timeout_seconds=0.3, batch_deadline_seconds=1.0)
        with pytest.raises(EmbeddingDeadlineError):
            stalled.embed(TEXTS[:3], log=said.append)
        requests = len(server.requests)
        started = time.monotonic()
        with pytest.raises(EmbeddingDeadlineError) as again:
            provider(server, request_timeout_seconds=0.3, batch_deadline_seconds=1.0).embed(TEXTS[3:6])
        assert time.monotonic() - started < 0.5 and len(server.requests) == requests  # nothing sent
    assert "not waiting again" in str(again.value)
    retries = [str(event) for event in said if isinstance(event, Notice)]
    assert retries and all(", retry " in r and " of 6 in " in r and "gives up in" in r for r in retries)
    assert "APITimeoutError" in retries[0] and "text-embedding-3-small" in retries[0]


def test_retry_after_is_read_in_seconds_in_milliseconds_and_as_an_http_date():
    from datetime import UTC, datetime

    import httpx
    import openai

    from tinybot_migration.lib.embeddings.client import retry_after_seconds

    def answer(**headers) -> openai.RateLimitError:
        request = httpx.Request("POST", "http://provider/embeddings")
        response = httpx.Response(429, headers=headers, request=request)
        return openai.RateLimitError("slow down", response=response, body=None)

    now = datetime(2026, 12, 4, 10, 0, 0, tzinfo=UTC)
    assert retry_after_seconds(answer(**{"retry-after": "7"}), now) == 7.0
    assert retry_after_seconds(answer(**{"retry-after-ms": "250"}), now) == 0.25
    assert retry_after_seconds(answer(**{"retry-after": "Fri, 04 Dec 2026 10:00:12 GMT"}), now) == 12.0
    assert retry_after_seconds(answer(**{"retry-after": "Fri, 04 Dec 2026 09:59:00 GMT"}), now) == 0.0
    assert retry_after_seconds(answer(**{"retry-after": "soon"}), now) is None
    assert retry_after_seconds(answer(), now) is None


def test_a_retry_after_date_is_waited_for():
    """A provider that says when to come back as an HTTP date is not asked again before then."""
    import time
    from email.utils import format_datetime

    with OpenAITestServer() as server:
        back_at = format_datetime(datetime_in(2.0), usegmt=True)
        server.script(429, {"Retry-After": back_at})
        started = time.monotonic()
        result = provider(server, max_backoff_seconds=5.0).embed(TEXTS[:2])
        waited = time.monotonic() - started
    assert result.retries == 1 and result.requests == 2
    assert waited >= 1.0  # the date has whole seconds: 2 s ahead is at least 1 s of waiting


def datetime_in(seconds: float):
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_one_client_sends_every_call_from_one_event_loop_and_ctrl_c_cancels_its_requests():
    """Calls share the client's loop (not a new loop each); Ctrl-C in the caller cancels every
    request in flight instead of leaving them to run (and be paid for) in the background."""
    import asyncio
    import signal
    import threading
    import time

    async def tasks_left() -> int:
        return len(asyncio.all_tasks()) - 1  # this one aside

    with OpenAITestServer(latency_seconds=0.01) as server:
        client = provider(server, max_inputs_per_request=1).client()
        client.embed(TEXTS[:3])
        loop = client._loop
        client.embed(TEXTS[3:6])
        assert client._loop is loop and loop.is_running()

        server.hang_seconds = 30
        threading.Timer(0.3, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)).start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            client.embed(TEXTS[:4])
        assert time.monotonic() - started < 5
        deadline = time.monotonic() + 2
        while asyncio.run_coroutine_threadsafe(tasks_left(), loop).result() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert asyncio.run_coroutine_threadsafe(tasks_left(), loop).result() == 0
        client.close()
    time.sleep(0.2)
    assert not loop.is_running()
