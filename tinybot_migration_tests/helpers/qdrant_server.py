"""A stand-in for a Qdrant server's REST API, enough for the real qdrant-client to meet the
failures a server can give (no Qdrant server ships in pip or Debian): a refused API key, and a
scroll that never answers in time. Every other request answers as an empty store would."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QdrantStubServer:
    def __init__(self, api_key: str = "right-key", collections: tuple[str, ...] = ("persona-x",)) -> None:
        self.api_key = api_key
        self.collections = collections
        self.scroll_seconds = 0.0  # how long a scroll request takes to answer
        self.scroll_limits: list[int] = []  # the page size of every scroll asked
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> QdrantStubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _answer(self, status: int, result) -> None:
                body = json.dumps({"result": result, "status": "ok", "time": 0.0}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorised(self) -> bool:
                if self.headers.get("api-key") == stub.api_key:
                    return True
                self._answer(401, None)
                return False

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self._authorised():
                    self._answer(200, {"collections": [{"name": c} for c in stub.collections]})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                if not self._authorised():
                    return
                if self.path.endswith("/points/scroll"):
                    stub.scroll_limits.append(int(request.get("limit", 0)))
                    time.sleep(stub.scroll_seconds)
                    self._answer(200, {"points": [], "next_page_offset": None})
                else:
                    self._answer(200, {"count": 0})

        return Handler
