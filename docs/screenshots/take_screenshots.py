"""Render the Dagster UI's asset graph and the last run's page into PNGs for the README.

    python docs/screenshots/take_screenshots.py [--home .tinybot] [--port 3333]

Needs Debian's `chromium` (`apt-get install chromium`) and a home where `tinybot-migration demo`
has run. Not part of CI. It starts `tinybot-migration dev` on a free loopback port, marks the UI's
first-visit dialog as seen (the `setNuxSeen` mutation its Skip button sends: the instance remembers
it, as after a click), and has headless Chromium screenshot each page itself (`--screenshot`, the
page given `--virtual-time-budget` to load its data and render; no DevTools client needed):
`asset-graph.png` and `run.png` next to this file, the asset graph and the newest run of the
relational stage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
WIDTH, HEIGHT = 1600, 1000


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


def graphql(base: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{base}/graphql", json.dumps({"query": query}).encode(), {"Content-Type": "application/json"}
    )
    answer = json.load(urllib.request.urlopen(request, timeout=30))
    if "errors" in answer:
        raise RuntimeError(f"the UI's GraphQL API refused {query!r}: {answer['errors']}")
    return answer["data"]


def last_run_id(base: str) -> str:
    """The newest run of the relational stage (the copy and its checks: the busiest page)."""
    runs = graphql(
        base,
        '{ runsOrError(filter: {pipelineName: "migration_stage_1_unpartitioned"}, limit: 1)'
        " { ... on Runs { results { runId } } } }",
    )["runsOrError"]["results"]
    if not runs:
        raise SystemExit("no run in this instance: run `tinybot-migration demo` first")
    return runs[0]["runId"]


def shoot(browser: str, url: str, out: Path, settle: float) -> None:
    """One headless Chromium, in a throwaway profile, writes one screenshot and exits."""
    # Written beside `out`, moved over it once complete (chromium picks the format by the suffix).
    new = out.with_name(f".{out.stem}.new{out.suffix}")
    new.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="tinybot-chromium-") as profile:
        done = subprocess.run(
            [
                browser,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={WIDTH},{HEIGHT}",
                # Virtual time stands still while a request is pending, so the page gets its data
                # and then `settle` seconds of timers (renders, layout of the graph) before the shot.
                f"--virtual-time-budget={int(settle * 1000)}",
                f"--screenshot={new}",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
    if done.returncode != 0 or not new.exists():
        said = [line for line in done.stderr.splitlines() if "dbus" not in line]  # dbus: harmless noise
        raise RuntimeError(
            f"chromium could not screenshot {url} (exit {done.returncode}): " + " | ".join(said[-5:])
        )
    new.replace(out)
    print(f"{out} ({out.stat().st_size / 1024:.0f} kB) from {url}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=Path(".tinybot"), help="TINYBOT_HOME of a demo")
    parser.add_argument("--port", type=int, default=0, help="the UI's port (default: a free one)")
    parser.add_argument(
        "--settle", type=float, default=20.0, help="seconds (of virtual time) a page gets to render"
    )
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
    try:
        wait_for(f"{base}/server_info")
        run_id = last_run_id(base)
        graphql(base, "mutation { setNuxSeen }")  # else "Join the Dagster community" covers the page
        shoot(browser, f"{base}/asset-groups", HERE / "asset-graph.png", args.settle)
        shoot(browser, f"{base}/runs/{run_id}", HERE / "run.png", args.settle)
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
