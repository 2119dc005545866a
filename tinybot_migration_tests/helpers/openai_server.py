"""A local OpenAI-compatible embeddings server for tests and benchmarks (real HTTP, real client).

It answers `POST /v1/embeddings` with the offline hash embedding of each input (as floats or
base64, whichever the client asks for), reports usage, and can be told to fail: a queue of
scripted answers (429 with Retry-After, 500, …), a permanent failure, a wrong dimension, latency,
and malformed answers (zero vectors, NaN, a vector missing, vectors not of unit length).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from tinybot_migration.defs.resources.embedding_provider import EmbeddingProviderResource
from tinybot_migration.lib.embeddings.batches import estimate_tokens
from tinybot_migration.lib.embeddings.client import EmbeddingClient, EmbeddingSettings
from tinybot_migration.lib.embeddings.hash_embedder import hash_embedding


class OpenAITestServer:
    def __init__(self, dimensions: int = 1536, latency_seconds: float = 0.0) -> None:
        self.dimensions = dimensions
        self.latency_seconds = latency_seconds
        self.scripted: list[tuple[int, dict[str, str], str]] = []  # (status, headers, body) for next calls
        self.fail_always: int | None = None  # status to answer every request with
        self.fail_after: int | None = None  # answer this many requests, then 500 for good
        self.reject_marker: str | None = None  # 400 for any request with an input containing it
        self.fail_requests: set[int] = set()  # 500 for these requests (1 = the first to arrive)
        # A malformed answer from request number `vector_fault_from` on: "zero" vectors, "nan" in one
        # vector, one vector "missing", vectors "unnormalised" (length 3).
        self.vector_fault: str | None = None
        self.vector_fault_from = 1
        self.hang_seconds = 0.0  # wait this long before answering (a connection that never answers)
        self.requests: list[list[str]] = []  # inputs of every embeddings request, in arrival order
        self.in_flight = 0  # requests being answered right now
        self.max_in_flight = 0  # the most requests it was answering at once
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> OpenAITestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, status: int, headers: dict[str, str] | None = None, times: int = 1) -> None:
        body = json.dumps({"error": {"message": f"scripted {status}", "type": "test"}})
        self.scripted.extend([(status, headers or {}, body)] * times)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._answer()
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _answer(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                inputs = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
                with server._lock:
                    server.requests.append(list(inputs))
                    number = len(server.requests)
                    scripted = server.scripted.pop(0) if server.scripted else None
                    exhausted = server.fail_after is not None and len(server.requests) > server.fail_after
                    exhausted = exhausted or len(server.requests) in server.fail_requests
                if server.latency_seconds or server.hang_seconds:
                    time.sleep(server.latency_seconds + server.hang_seconds)
                if scripted is not None:
                    status, headers, body = scripted
                    return self._send(status, body.encode(), headers)
                if server.reject_marker and any(server.reject_marker in text for text in inputs):
                    body = json.dumps(
                        {"error": {"message": "invalid input", "type": "invalid_request_error"}}
                    )
                    return self._send(400, body.encode())
                if server.fail_always is not None or exhausted:
                    body = json.dumps({"error": {"message": "failing for good", "type": "test"}})
                    return self._send(server.fail_always or 500, body.encode())
                fault = server.vector_fault if number >= server.vector_fault_from else None
                data = []
                for index, text in enumerate(inputs):
                    if fault == "missing" and index == len(inputs) - 1:
                        break
                    vector = hash_embedding(text, server.dimensions).astype(np.float32)
                    if fault == "zero":
                        vector = np.zeros_like(vector)
                    elif fault == "nan" and index == 0:
                        vector[7] = np.nan
                    elif fault == "unnormalised":
                        vector = vector * 3
                    if payload.get("encoding_format") == "base64":
                        encoded = base64.b64encode(vector.tobytes()).decode()
                    else:
                        encoded = vector.tolist()
                    data.append({"object": "embedding", "index": index, "embedding": encoded})
                tokens = sum(estimate_tokens(t) for t in inputs)
                body = {
                    "object": "list",
                    "data": data,
                    "model": payload.get("model"),
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                }
                self._send(200, json.dumps(body).encode())

        return Handler


def settings_for(server: OpenAITestServer, api_key: str = "sk-test", **overrides) -> dict:
    """The openai provider's settings pointed at `server`, with short backoffs so retry tests stay fast."""
    return (
        dict(
            provider="openai",
            api_key=api_key,
            base_url=server.base_url,
            initial_backoff_seconds=0.01,
            max_backoff_seconds=0.2,
        )
        | overrides
    )


def provider_for(
    server: OpenAITestServer, api_key: str = "sk-test", **overrides
) -> EmbeddingProviderResource:
    """The provider resource (for assets) pointed at `server`."""
    return EmbeddingProviderResource(**settings_for(server, api_key, **overrides))


def client_for(server: OpenAITestServer, api_key: str = "sk-test", **overrides) -> EmbeddingClient:
    """The core's embedding client (for the core's functions) pointed at `server`."""
    return EmbeddingClient(EmbeddingSettings(**settings_for(server, api_key, **overrides)))


def offline_client() -> EmbeddingClient:
    """The offline hash embedder."""
    return EmbeddingClient(EmbeddingSettings(provider="hash"))


def main() -> None:
    """Serve until killed (for benchmarks and manual runs): prints the base URL on its first line."""
    import argparse

    parser = argparse.ArgumentParser(description="local OpenAI-compatible embeddings server")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to wait per request")
    parser.add_argument("--dimensions", type=int, default=1536)
    args = parser.parse_args()
    with OpenAITestServer(args.dimensions, args.latency) as server:
        print(server.base_url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
