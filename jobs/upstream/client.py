"""What the HTTP and LLM clients share: one pooled httpx.Client that holds the job's request gate around
every request, credentials kept out of request URLs, redaction of what they raise, retries, a request count."""

from __future__ import annotations

import functools
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, TypedDict, TypeVar

import httpx

from jobs.errors import TransientUpstreamError
from jobs.redact import split_credentials, url_redactor
from jobs.upstream.base import RequestCounter, RequestGate, no_count
from jobs.upstream.http_statuses import check_status, retry_after_seconds
from jobs.upstream.retry import Backoff, Sleep, call_with_retries, region_verdict

T = TypeVar("T")


class ClientOptions(TypedDict, total=False):
    """How a client talks to its upstream (every key optional)."""

    concurrency: int                   # connections kept, and requests in flight at most
    timeout: float                     # seconds before a request is abandoned (and retried)
    max_attempts: int                  # tries of one request before its error escapes
    request_gate: RequestGate | None   # entered around every request (jobs.limits)
    backoff: Backoff | None            # delays between tries
    sleep: Sleep                       # how to wait them (tests pass a recorder)
    count: RequestCounter              # told the outcome of every request sent (jobs.observe.counters)


def status_outcome(status: int) -> str:
    """How an answered request counts in the upstream counters (see RequestCounter)."""
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


# Set on a response whose request went through a pacing gate: its Retry-After is the gate's to wait for.
PACED = "refreshq.paced"


class GatedClient(httpx.Client):
    """An httpx.Client that holds the job's request gate (jobs.limits) for each request, from before it
    is sent until its answer is read whole, so the global limits count exactly what is in flight."""

    def __init__(self, gate: RequestGate, **options: Any) -> None:
        super().__init__(**options)
        self._gate = gate

    def send(self, request: httpx.Request, **options: Any) -> httpx.Response:
        with self._gate() as admission:  # may raise UpstreamGateClosed: the job has ended
            response = super().send(request, **options)
            if admission is not None:  # a throttling answer pauses every worker, not only this thread
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                admission.answered(response.status_code, retry_after, _elapsed(response))
                response.extensions[PACED] = True
            return response


def _elapsed(response: httpx.Response) -> float | None:
    """Seconds from sending to the whole answer; None for an answer not read yet (a streamed one)."""
    try:
        return response.elapsed.total_seconds()
    except RuntimeError:
        return None


def pooled_client(
    concurrency: int, timeout: float, headers: dict[str, str], auth: tuple[str, str] | None = None,
    gate: RequestGate | None = None,
) -> httpx.Client:
    """An httpx.Client holding at most `concurrency` connections, all kept alive between requests.

    `auth`: HTTP Basic credentials, given apart from the URL so that no request URL (which httpx
    logs and puts in its errors) ever holds them.
    """
    options: dict[str, Any] = {
        "verify": shared_tls_context(),
        "headers": headers,
        "auth": httpx.BasicAuth(*auth) if auth else None,
        "limits": httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        # pool=None: more threads than connections wait their turn instead of failing.
        "timeout": httpx.Timeout(timeout, pool=None),
    }
    return httpx.Client(**options) if gate is None else GatedClient(gate, **options)


class PooledClient:
    """The set-up every upstream client shares; subclasses add what they ask and how they read it."""

    def __init__(
        self, base_url: str, secret: str | None, options: ClientOptions, defaults: tuple[int, float, Backoff]
    ) -> None:
        """`secret`: a bearer token or API key (never in a message); `defaults`: concurrency, timeout
        and backoff when `options` has none."""
        concurrency, timeout, backoff = defaults
        # Credentials in the URL (http://user:pass@host/v1) are sent as Basic auth, never in a request URL.
        bare_url, credentials = split_credentials(base_url)
        self.base_url = bare_url.rstrip("/")
        self.concurrency = options.get("concurrency", concurrency)
        self._max_attempts = options.get("max_attempts", 5)
        self._backoff = options.get("backoff") or backoff
        self._sleep = options.get("sleep", time.sleep)
        self._count = options.get("count", no_count)
        self._redact = url_redactor(base_url, secret)
        headers = {"Accept": "application/json"}
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        timeout = options.get("timeout", timeout)
        self._client = pooled_client(self.concurrency, timeout, headers, credentials, options.get("request_gate"))
        self._count_lock = threading.Lock()
        self._requests_made = 0

    @property
    def requests_made(self) -> int:
        """Requests sent so far, retries included."""
        with self._count_lock:
            return self._requests_made

    def _counted(self) -> None:
        with self._count_lock:
            self._requests_made += 1

    def _transport_error(self, what: str, error: httpx.TransportError) -> TransientUpstreamError:
        """Timeouts, refused and reset connections: counted, worth another try; the message holds no secret."""
        self._count("timeout" if isinstance(error, httpx.TimeoutException) else "transport")
        return TransientUpstreamError(self._redact(f"{what}: {type(error).__name__}: {error}"))

    def _answer(self, response: httpx.Response, what: str, read: Callable[[], T]) -> T:
        """`read()` of an answered request, its outcome counted once: the status's, "invalid" when the
        answer breaks the contract, else "ok"."""
        outcome = status_outcome(response.status_code)
        try:
            try:
                check_status(response, what)
            except TransientUpstreamError as error:
                if response.extensions.get(PACED):
                    # The gate holds every worker's requests, this one's retry included, until the time
                    # named (at most REFRESHQ_UPSTREAM_PAUSE_MAX): the thread backs off as for any error.
                    error.retry_after = None
                raise
            outcome = "invalid"
            value = read()
            outcome = "ok"
            return value
        finally:
            self._count(outcome)

    def _with_retries(
        self, attempt: Callable[[], T], what: str, retry_on: type[TransientUpstreamError] = TransientUpstreamError
    ) -> T:
        """`attempt` retried by the client's policy; a region whose answers stay inconsistent fails."""
        return call_with_retries(
            attempt, what=what, max_attempts=self._max_attempts, backoff=self._backoff, sleep=self._sleep,
            give_up=region_verdict, retry_on=retry_on,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
