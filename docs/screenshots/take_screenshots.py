"""Render the Dagster UI's asset graph and the last run's page into PNGs for the README.

    python docs/screenshots/take_screenshots.py [--home .tinybot] [--port 3333]

Needs Debian's `chromium` (`apt-get install chromium`) and a home where `tinybot-migration demo`
has run. Not part of CI. It starts `tinybot-migration dev` on a free loopback port, drives headless
Chromium over its DevTools protocol (a minimal WebSocket client below: the standard library has
none), dismisses the UI's first-visit dialog, and writes `asset-graph.png` and `run.png` next to
this file: the asset graph, and the newest run of the relational stage.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
WIDTH, HEIGHT = 1600, 1000
# Buttons that close Dagster's first-visit dialogs, tried in turn.
DISMISS = """
(() => {
  const labels = ['Dismiss', 'Got it', 'Close', 'Skip', 'No thanks', 'Not now'];
  let clicked = 0;
  for (const button of document.querySelectorAll('button')) {
    if (labels.includes(button.innerText.trim())) { button.click(); clicked++; }
  }
  document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true}));
  return clicked;
})()
"""


class DevTools:
    """Just enough of a WebSocket client for the DevTools protocol (text frames, masked)."""

    def __init__(self, url: str) -> None:
        host_port, path = url.removeprefix("ws://").split("/", 1)
        host, port = host_port.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        self.sock.sendall(
            (
                f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            response += self.sock.recv(4096)
        if b" 101 " not in response.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"DevTools refused the WebSocket: {response[:200]!r}")
        self.buffer = response.split(b"\r\n\r\n", 1)[1]
        self.next_id = 0

    def _send(self, text: str) -> None:
        payload = text.encode()
        header = bytes([0x81])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        elif len(payload) < 2**16:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", len(payload))
        mask = secrets.token_bytes(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _read(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("DevTools closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def _receive(self) -> str:
        message = b""
        while True:
            first, second = self._read(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            message += self._read(length)
            if first & 0x80:  # the final fragment
                return message.decode()

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            answer = json.loads(self._receive())
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"{url} did not answer within {seconds:.0f} s")


def last_run_id(base: str) -> str:
    """The newest run of the relational stage (the copy and its checks: the busiest page)."""
    query = {
        "query": '{ runsOrError(filter: {pipelineName: "migration_stage_1_unpartitioned"}, limit: 1)'
        " { ... on Runs { results { runId } } } }"
    }
    request = urllib.request.Request(
        f"{base}/graphql", json.dumps(query).encode(), {"Content-Type": "application/json"}
    )
    runs = json.load(urllib.request.urlopen(request, timeout=30))["data"]["runsOrError"]["results"]
    if not runs:
        raise SystemExit("no run in this instance: run `tinybot-migration demo` first")
    return runs[0]["runId"]


def shoot(tools: DevTools, url: str, out: Path, settle: float) -> None:
    tools.call("Page.navigate", url=url)
    time.sleep(settle)
    for _ in range(3):  # a dialog may open after the first render
        tools.call("Runtime.evaluate", expression=DISMISS)
        time.sleep(1.0)
    shot = tools.call("Page.captureScreenshot", format="png")
    out.write_bytes(base64.b64decode(shot["data"]))
    print(f"{out} ({out.stat().st_size / 1024:.0f} kB) from {url}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=Path(".tinybot"), help="TINYBOT_HOME of a demo")
    parser.add_argument("--port", type=int, default=0, help="the UI's port (default: a free one)")
    parser.add_argument("--settle", type=float, default=8.0, help="seconds a page gets to render")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium is not installed: apt-get install chromium")
    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TINYBOT_HOME": str(args.home.resolve())}
    dev = subprocess.Popen(
        [sys.executable, "-m", "tinybot_migration.cli", "dev", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    profile = tempfile.mkdtemp(prefix="tinybot-chromium-")
    debug_port = free_port()
    chrome = None
    try:
        wait_for(f"{base}/server_info")
        run_id = last_run_id(base)
        chrome = subprocess.Popen(
            [
                browser,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                f"--remote-debugging-port={debug_port}",
                f"--user-data-dir={profile}",
                f"--window-size={WIDTH},{HEIGHT}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(f"http://127.0.0.1:{debug_port}/json/version", 60)
        [page] = [
            t
            for t in json.load(urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json"))
            if t["type"] == "page"
        ]
        tools = DevTools(page["webSocketDebuggerUrl"])
        tools.call("Page.enable")
        tools.call(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH,
            height=HEIGHT,
            deviceScaleFactor=1,
            mobile=False,
        )
        shoot(tools, f"{base}/asset-groups", HERE / "asset-graph.png", args.settle)
        shoot(tools, f"{base}/runs/{run_id}", HERE / "run.png", args.settle)
    finally:
        if chrome is not None:
            chrome.terminate()
        os.killpg(dev.pid, signal.SIGTERM)
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
