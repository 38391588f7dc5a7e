"""The Directory HTTP API client: one pooled httpx.Client shared by every thread of a refresh."""

from __future__ import annotations

import contextlib
import email.utils
import functools
import json
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from jobs.errors import PermanentUpstreamError, TransientUpstreamError, UpstreamInconsistencyError
from jobs.redact import split_credentials, url_redactor
from jobs.upstream import shapes
from jobs.upstream.base import Hospital, Region, RequestCounter, RequestGate, no_count
from jobs.upstream.listing import Listing, Page
from jobs.upstream.retry import Backoff, Sleep, call_with_retries, region_verdict

T = TypeVar("T")

PAGE_SIZE = 500
TRANSIENT_STATUSES = frozenset({408, 425, 429})


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    return str(error)[:200] if error else response.reason_phrase


def check_status(response: httpx.Response, what: str) -> None:
    """Turn an unsuccessful status into the error the contract gives it."""
    status = response.status_code
    if status < 300:
        return
    if status == 404:
        raise PermanentUpstreamError(f"{what}: 404 not found: {_error_text(response)}")
    if status >= 500 or status in TRANSIENT_STATUSES:
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        raise TransientUpstreamError(f"{what}: HTTP {status}", retry_after=retry_after)
    if status in (401, 403):
        raise PermanentUpstreamError(f"{what}: HTTP {status}: the upstream rejected the credentials")
    raise PermanentUpstreamError(f"{what}: HTTP {status}: {_error_text(response)}")


def status_outcome(status: int) -> str:
    """How a response counts in the upstream counters (see RequestCounter)."""
    if status < 300:
        return "ok"
    if status == 429:
        return "http_429"
    return "http_5xx" if status >= 500 else "http_4xx"


@functools.cache
def shared_tls_context() -> ssl.SSLContext:
    """One TLS context per process (loading the CA bundle costs ~40 ms of CPU); a work-horse forked
    from a worker that built it inherits it instead of building its own per job."""
    return httpx.create_ssl_context()


def pooled_client(
    concurrency: int, timeout: float, headers: dict[str, str], auth: tuple[str, str] | None = None
) -> httpx.Client:
    """An httpx.Client holding at most `concurrency` connections, all kept alive between requests.

    `auth`: HTTP Basic credentials, given apart from the URL so that no request URL (which httpx
    logs and puts in its errors) ever holds them.
    """
    return httpx.Client(
        verify=shared_tls_context(),
        headers=headers,
        auth=httpx.BasicAuth(*auth) if auth else None,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        # pool=None: more threads than connections wait their turn instead of failing.
        timeout=httpx.Timeout(timeout, pool=None),
    )


class HttpDirectoryClient:
    """An Upstream over the Directory HTTP API; thread-safe, retries transient failures itself."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        concurrency: int = 16,
        timeout: float = 30.0,
        max_attempts: int = 5,
        request_gate: RequestGate | None = None,
        backoff: Backoff | None = None,
        sleep: Sleep = time.sleep,
        count: RequestCounter = no_count,
    ) -> None:
        # Credentials in the URL (http://user:pass@host/v1) are sent as Basic auth, never in a request URL.
        bare_url, credentials = split_credentials(base_url)
        self.base_url = bare_url.rstrip("/")
        self.concurrency = concurrency
        self._max_attempts = max_attempts
        self._gate = request_gate or contextlib.nullcontext
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self._count = count
        self._redact = url_redactor(base_url, token)
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = pooled_client(concurrency, timeout, headers, credentials)
        self._count_lock = threading.Lock()
        self._requests_made = 0

    def __repr__(self) -> str:
        return f"HttpDirectoryClient(base_url={self.base_url!r}, concurrency={self.concurrency})"

    @property
    def requests_made(self) -> int:
        """HTTP requests sent so far, retries included."""
        with self._count_lock:
            return self._requests_made

    def provinces(self) -> list[Region]:
        return self._get("/regions", None, _provinces)

    def children(self, region: Region) -> list[Region]:
        return self._get(f"/regions/{quote(region['code'], safe='')}/children", None, shapes.regions)

    def hospitals(self, region: Region) -> list[Hospital]:
        """Every hospital of a leaf, its pages checked against each other (see jobs.upstream.listing);
        an inconsistent listing is read again from page 1, and after the last attempt fails the region."""
        path = f"/regions/{quote(region['code'], safe='')}/hospitals"
        return call_with_retries(
            lambda: self._listing(path),
            what=f"GET {path}",
            max_attempts=self._max_attempts,
            backoff=self._backoff,
            sleep=self._sleep,
            give_up=region_verdict,
            # Only whole-listing contradictions restart it; a failed page was already retried on its own.
            retry_on=UpstreamInconsistencyError,
        )

    def _listing(self, path: str) -> list[Hospital]:
        listing, number = Listing(f"GET {path}", PAGE_SIZE), 1
        while not listing.add(number, self._get(path, {"page": number, "page_size": PAGE_SIZE}, _hospital_page)):
            number += 1
        return listing.hospitals

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpDirectoryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _get(self, path: str, params: dict[str, Any] | None, parse: Callable[[object], T]) -> T:
        what = f"GET {path}" + (f"?page={params['page']}" if params else "")
        return call_with_retries(
            lambda: self._attempt(path, params, parse, what),
            what=what,
            max_attempts=self._max_attempts,
            backoff=self._backoff,
            sleep=self._sleep,
            give_up=region_verdict,
        )

    def _attempt(self, path: str, query: dict[str, Any] | None, parse: Callable[[object], T], what: str) -> T:
        with self._count_lock:
            self._requests_made += 1
        outcome: str | None = None  # what the counters are told once this attempt is over (None: never sent)
        try:
            try:
                with self._gate():
                    outcome = "transport"
                    response = self._client.get(self.base_url + path, params=query)
            except httpx.TransportError as error:  # timeouts, refused and reset connections
                outcome = "timeout" if isinstance(error, httpx.TimeoutException) else "transport"
                raise TransientUpstreamError(self._redact(f"{what}: {type(error).__name__}: {error}")) from None
            outcome = status_outcome(response.status_code)
            check_status(response, what)
            outcome = "invalid"
            try:
                value = parse(json.loads(response.content))
            except shapes.ItemShapeError as error:  # the body arrived whole, its data breaks the contract
                raise UpstreamInconsistencyError(self._redact(f"{what}: invalid item: {error}")) from None
            except ValueError as error:  # not JSON, or not the contract's body (a faulty proxy): try again
                raise TransientUpstreamError(self._redact(f"{what}: invalid body: {error}")) from None
            outcome = "ok"
            return value
        finally:
            if outcome is not None:
                self._count(outcome)


def _provinces(body: object) -> list[Region]:
    found = shapes.regions(body)
    if not found:
        # An empty top level is never true, and a full refresh believing it would unpublish everything.
        raise shapes.ItemShapeError("the upstream lists no provinces")
    return found


def _hospital_page(body: object) -> Page:
    return Page(
        items=[shapes.hospital(item) for item in shapes.items(body)],
        total=shapes.total(body),
        page=shapes.echoed(body, "page"),
        page_size=shapes.echoed(body, "page_size"),
    )
