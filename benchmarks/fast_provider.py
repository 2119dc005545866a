"""A benchmark embeddings server whose own work per request is far below its latency.

    python benchmarks/fast_provider.py --latency 0.1      # prints http://127.0.0.1:PORT/v1

OpenAI-compatible: `POST /v1/embeddings` (or `/embeddings`) takes `model`, `input` (a string or a
list of strings), `dimensions` and `encoding_format` and answers like the OpenAI API, vectors as
base64 of little-endian float32 when asked (the `openai` client asks by default), floats
otherwise. Unlike the test server (`tinybot_migration_tests.helpers.openai_server`, which hashes
every text's words in Python), it computes nothing per text: a pool of `--pool` unit vectors is
drawn once at start-up and encoded once, and each text gets the pool vector at the CRC-32 of its
UTF-8 bytes, so vectors are deterministic per text (across restarts too) and an answer is a
join of pre-encoded bytes. Each request is answered `--latency` seconds after it arrived (or when
its work is done, if that takes longer), waiting without any lock, so requests in flight overlap
as they would at a real provider. Token usage is estimated as a third of the UTF-8 bytes.

`GET /stats` answers the running totals (requests, inputs, requests in flight at most, seconds
spent receiving, working (wall and CPU) and sending, the waits excluded), for a benchmark to
check that the server was never the bottleneck. The base URL is the first line on stdout.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

EMBEDDING_PATHS = {"/v1/embeddings", "/embeddings"}
STATS_PATHS = {"/v1/stats", "/stats"}
MAX_INPUTS = 2048  # OpenAI's limit per request


class Pool:
    """`size` unit vectors of `dimensions`, each one's answer fragment encoded once."""

    def __init__(self, size: int, dimensions: int, seed: int) -> None:
        vectors = np.random.default_rng(seed).standard_normal((size, dimensions)).astype("<f4")
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        self.size = size
        self.dimensions = dimensions
        self.vectors = vectors
        # `,"embedding":"<base64>"}`: what follows an item's index in a base64 answer.
        self.base64 = [b',"embedding":"' + base64.b64encode(row.tobytes()) + b'"}' for row in vectors]
        self._floats: dict[int, bytes] = {}  # the same with a JSON array, encoded when first asked for
        # `{"object":"embedding","index":N` (after a comma but for the first item).
        self.heads = [b'{"object":"embedding","index":0'] + [
            b',{"object":"embedding","index":%d' % index for index in range(1, MAX_INPUTS)
        ]

    def floats(self, index: int) -> bytes:
        encoded = self._floats.get(index)
        if encoded is None:
            array = json.dumps(self.vectors[index].tolist()).encode()
            encoded = self._floats[index] = b',"embedding":' + array + b"}"
        return encoded

    def answer(self, texts: list[str], model: str, as_base64: bool) -> bytes:
        """The JSON body answering `texts`: one join of pre-encoded fragments, one copy."""
        encoded = [text.encode("utf-8") for text in texts]
        fragments = self.base64 if as_base64 else None
        parts = [b'{"object":"list","data":[']
        for index, raw in enumerate(encoded):
            pick = zlib.crc32(raw) % self.size
            parts.append(self.heads[index])
            parts.append(fragments[pick] if fragments is not None else self.floats(pick))
        tokens = sum(max(1, -(-len(raw) // 3)) for raw in encoded)
        parts.append(
            b'],"model":%b,"usage":{"prompt_tokens":%d,"total_tokens":%d}}'
            % (json.dumps(model).encode(), tokens, tokens)
        )
        return b"".join(parts)


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()  # held for the counters only, never while waiting
        self.requests = 0
        self.inputs = 0
        self.in_flight = 0
        self.max_in_flight = 0
        # Summed over requests, the waits excluded. Work: parsing the request and encoding the
        # answer (the server's own, wall and CPU); receiving the body and sending the answer go
        # as fast as the client writes and reads.
        self.work_seconds = 0.0
        self.work_cpu_seconds = 0.0
        self.max_work_seconds = 0.0
        self.receive_seconds = 0.0
        self.send_seconds = 0.0
        self.max_send_seconds = 0.0

    def add(self, inputs: int, received: float, worked: float, cpu: float, sent: float) -> None:
        with self.lock:
            self.requests += 1
            self.inputs += inputs
            self.receive_seconds += received
            self.work_seconds += worked
            self.work_cpu_seconds += cpu
            self.max_work_seconds = max(self.max_work_seconds, worked)
            self.send_seconds += sent
            self.max_send_seconds = max(self.max_send_seconds, sent)

    def as_json(self) -> bytes:
        with self.lock:
            return json.dumps(
                {
                    "requests": self.requests,
                    "inputs": self.inputs,
                    "in_flight": self.in_flight,
                    "max_in_flight": self.max_in_flight,
                    "work_seconds": round(self.work_seconds, 6),
                    "work_cpu_seconds": round(self.work_cpu_seconds, 6),
                    "max_work_seconds": round(self.max_work_seconds, 6),
                    "receive_seconds": round(self.receive_seconds, 6),
                    "send_seconds": round(self.send_seconds, 6),
                    "max_send_seconds": round(self.max_send_seconds, 6),
                }
            ).encode()


def error_body(message: str, kind: str = "invalid_request_error") -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()


def make_handler(pool: Pool, stats: Stats, latency: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real API
        disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stall

        def log_message(self, *args) -> None:
            pass

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.rstrip("/") in STATS_PATHS:
                return self._send(200, stats.as_json())
            self._send(404, error_body(f"no route {self.path}", "not_found"))

        def do_POST(self) -> None:
            arrived = time.perf_counter()
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.rstrip("/") not in EMBEDDING_PATHS:
                return self._send(404, error_body(f"no route {self.path}", "not_found"))
            with stats.lock:
                stats.in_flight += 1
                stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            try:
                received, cpu = time.perf_counter(), time.thread_time()
                status, answer, inputs = self._answer(body)
                worked, cpu = time.perf_counter() - received, time.thread_time() - cpu
                wait = latency - (time.perf_counter() - arrived)
                if wait > 0:
                    time.sleep(wait)  # no lock held: requests in flight overlap
                started_sending = time.perf_counter()
                self._send(status, answer)
                sent = time.perf_counter() - started_sending
            finally:
                with stats.lock:
                    stats.in_flight -= 1
            stats.add(inputs, received - arrived, worked, cpu, sent)

        def _answer(self, body: bytes) -> tuple[int, bytes, int]:
            """(status, body, inputs) for one embeddings request."""
            try:
                payload = json.loads(body)
            except ValueError:
                return 400, error_body("the body is not JSON"), 0
            inputs = payload.get("input") if isinstance(payload, dict) else None
            if isinstance(inputs, str):
                inputs = [inputs]
            if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
                return 400, error_body("'input' must be a non-empty string or list of strings"), 0
            if len(inputs) > MAX_INPUTS:
                return 400, error_body(f"at most {MAX_INPUTS} inputs per request, got {len(inputs)}"), 0
            if not payload.get("model"):
                return 400, error_body("'model' is required"), 0
            dimensions = payload.get("dimensions")
            if dimensions is not None and dimensions != pool.dimensions:
                return (
                    400,
                    error_body(f"this server answers {pool.dimensions} dimensions, not {dimensions}"),
                    0,
                )
            answer = pool.answer(inputs, payload["model"], payload.get("encoding_format") == "base64")
            return 200, answer, len(inputs)

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per request")
    parser.add_argument("--dimensions", type=int, default=1536)
    parser.add_argument("--pool", type=int, default=4096, help="distinct vectors handed out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    args = parser.parse_args()
    pool = Pool(args.pool, args.dimensions, args.seed)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(pool, Stats(), args.latency))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    host, port = server.server_address[:2]
    print(f"http://{host}:{port}/v1", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
