"""The Qdrant store the migration replaces, opened read-only (../shared/QDRANT.md): a server or
Qdrant Cloud from QDRANT_URL (+ QDRANT_API_KEY), or a local-mode store folder from QDRANT_PATH.

Every failure is one line that names what to fix and never shows the key: both set; a path that is
not a store (local mode would create one there); a store another process has open (local mode
allows one client per folder); a refused key; a server unreachable after bounded retries (its URL
masked); a scroll that keeps timing out (pages shrink on timeouts only, down to a floor; the error
names the collection and the offset).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from qdrant_client import QdrantClient
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from tinybot_migration.lib.postgres import QDRANT_STORE_LOCK, advisory_lock
from tinybot_migration.lib.progress import Notice, Progress, quiet
from tinybot_migration.lib.settings import (
    QDRANT_API_KEY,
    QDRANT_PATH,
    QDRANT_URL,
    demo_qdrant_dir,
    qdrant_environment,
)

LOCAL_STORE_MARKER = "meta.json"  # what qdrant-client's local mode keeps at a store's top
DEFAULT_TIMEOUT_SECONDS = 60  # qdrant-client's 5 s is too short for pages of vectors behind a proxy
CONNECT_ATTEMPTS = 4
DEFAULT_PAGE_SIZE = 256
MIN_PAGE_SIZE = 8  # a scroll still timing out at this size fails


class QdrantSourceError(RuntimeError):
    """Qdrant cannot be read as configured; the message is one line saying what to fix."""


@dataclass(frozen=True)
class QdrantLocation:
    """Where the store is: a server `url` (with `api_key`) or a local-mode folder `path`."""

    url: str | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)
    path: str | None = None
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        if self.url and self.path:
            raise QdrantSourceError(
                f"both {QDRANT_URL} and {QDRANT_PATH} are set: set {QDRANT_URL} for a server or {QDRANT_PATH} "
                "for a local-mode store folder, not both"
            )
        if not self.url and not self.path:
            raise QdrantSourceError(f"no Qdrant configured: set {QDRANT_URL} or {QDRANT_PATH}")

    @classmethod
    def from_environment(cls) -> QdrantLocation | None:
        """The configured store; unset, the demo's store when there is one; else None."""
        values = qdrant_environment()
        if not values.get("url") and not values.get("path"):
            return cls.demo()
        return cls(**values)

    @classmethod
    def demo(cls) -> QdrantLocation | None:
        """The demo's local store under $TINYBOT_HOME, when `tinybot-migration demo` wrote one."""
        folder = demo_qdrant_dir()
        return cls(path=str(folder)) if (folder / LOCAL_STORE_MARKER).is_file() else None

    @property
    def is_demo(self) -> bool:
        return self.path is not None and Path(self.path).expanduser().resolve() == demo_qdrant_dir().resolve()

    def describe(self) -> str:
        """Where it is, safe to show: the path, or the URL without credentials or query."""
        return f"local store {self.path}" if self.path else f"Qdrant at {masked_url(self.url or '')}"


def masked_url(url: str) -> str:
    """`url` with any user, password and query (where a key could ride) left out."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def open_qdrant(location: QdrantLocation, log: Progress | None = None) -> QdrantClient:
    """A client on the store, proven by listing its collections."""
    if location.path:
        return _open_local(Path(location.path).expanduser())
    return _open_server(location, log or quiet)


def _open_local(path: Path) -> QdrantClient:
    if not (path / LOCAL_STORE_MARKER).is_file():
        raise QdrantSourceError(
            f"{QDRANT_PATH} {path} is not a Qdrant local-mode store (no {LOCAL_STORE_MARKER} in it); "
            "point it at the folder a QdrantClient(path=...) wrote"
        )
    try:
        return QdrantClient(path=str(path))
    except RuntimeError as error:
        if "already accessed by another instance" in str(error):
            raise QdrantSourceError(
                f"{QDRANT_PATH} {path} is open in another process (local mode allows one client per folder): "
                "stop that process, or serve the store with a Qdrant server and set QDRANT_URL"
            ) from None
        raise


def _open_server(location: QdrantLocation, log: Progress) -> QdrantClient:
    where = location.describe()
    # No version probe: listing the collections below proves the server, and says why when it cannot.
    client = QdrantClient(
        url=location.url,
        api_key=location.api_key,
        timeout=location.timeout_seconds,
        check_compatibility=False,
    )

    def said_retry(state) -> None:
        log(Notice(f"{where}: not reachable ({_cause(state.outcome.exception())}), trying again"))

    try:
        for attempt in Retrying(
            stop=stop_after_attempt(CONNECT_ATTEMPTS),
            wait=wait_exponential(multiplier=0.5, max=8),
            retry=retry_if_exception(_unreachable),
            before_sleep=said_retry,
            reraise=True,
        ):
            with attempt:
                client.get_collections()
    except UnexpectedResponse as error:
        client.close()
        if error.status_code in (401, 403):
            raise QdrantSourceError(
                f"{where} refused the API key ({error.status_code}): check {QDRANT_API_KEY}"
            ) from None
        raise QdrantSourceError(f"{where} answered {error.status_code} to listing its collections") from None
    except (ResponseHandlingException, httpx.HTTPError) as error:
        client.close()
        raise QdrantSourceError(
            f"{where} is unreachable after {CONNECT_ATTEMPTS} attempts ({_cause(error)}): check {QDRANT_URL} "
            "and the network"
        ) from None
    return client


def _unreachable(error: BaseException) -> bool:
    return isinstance(error, ResponseHandlingException | httpx.TransportError)


def _timed_out(error: BaseException) -> bool:
    cause = getattr(error, "source", None) or error.__cause__
    return isinstance(error, httpx.TimeoutException | TimeoutError) or isinstance(
        cause, httpx.TimeoutException | TimeoutError
    )


def _cause(error: BaseException | None) -> str:
    """The error's kind, never its text (which may carry the URL with a key in it)."""
    cause = getattr(error, "source", None) or error
    return type(cause).__name__


def scroll_points(
    client: QdrantClient,
    collection: str,
    page_size: int = DEFAULT_PAGE_SIZE,
    log: Progress | None = None,
) -> Iterator[list]:
    """Every point of `collection` with payload and vector, a page (list of Records) at a time, following
    `next_page_offset` (a point id, never a position). A page that times out is asked again at half
    the size, down to MIN_PAGE_SIZE; other errors are not retried here."""
    log = log or quiet
    offset = None
    size = page_size
    while True:
        try:
            points, next_offset = client.scroll(
                collection, limit=size, offset=offset, with_payload=True, with_vectors=True
            )
        except (ResponseHandlingException, httpx.TimeoutException, TimeoutError) as error:
            if not _timed_out(error):
                raise
            if size <= MIN_PAGE_SIZE:
                raise QdrantSourceError(
                    f"scrolling collection {collection!r} timed out at offset {offset!r} even with pages of "
                    f"{size} points: raise the timeout or check the server"
                ) from None
            size = max(MIN_PAGE_SIZE, size // 2)
            log(Notice(f"qdrant: {collection}: a page timed out at offset {offset!r}; pages of {size} now"))
            continue
        yield points
        if next_offset is None:
            return
        offset = next_offset


STORE_IN_USE = "qdrant: another run has the local store open (one client per folder); waiting for it"


@contextmanager
def opened_store(
    location: QdrantLocation, conn: psycopg.Connection | None = None, log: Progress | None = None
) -> Iterator[QdrantClient]:
    """A client on the store for the block, closed after. A local store admits one client: runs
    sharing the new DB `conn` take turns on it (an advisory lock) instead of failing."""
    log = log or quiet
    with (
        advisory_lock(conn, QDRANT_STORE_LOCK, STORE_IN_USE, log)
        if conn is not None and location.path
        else nullcontext()
    ):
        client = open_qdrant(location, log)
        try:
            yield client
        finally:
            client.close()
