"""Serves a SampleDirectory over the Directory HTTP API, with injected latency and faults.

For demos, tests and benchmarks of the HTTP path: `python -m jobs.upstream.serve --port 8000`, or
`start_background()` from Python. Faults are drawn from a seeded random.Random, so a run with the
same seed and the same request order sees the same faults. Binds loopback unless told otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Generic, Self, TypedDict, TypeVar, Unpack
from urllib.parse import parse_qs, unquote, urlsplit

from jobs.upstream.sample import PAGE_SIZE, SampleDirectory
from jobs.upstream.synth import ID_FORMATS

log = logging.getLogger(__name__)
TOKEN_ENV = "REFRESHQ_UPSTREAM_TOKEN"
ServerT = TypeVar("ServerT", bound=ThreadingHTTPServer)


@dataclass(frozen=True)
class Faults:
    """Fractions of requests (0..1, drawn in this order) that misbehave instead of answering."""

    fail_rate: float = 0.0  # 503
    rate_429: float = 0.0  # 429 with Retry-After: 1
    invalid_json_rate: float = 0.0  # 200 with a truncated body
    hang_rate: float = 0.0  # answer only after hang_seconds
    hang_seconds: float = 30.0
    seed: int = 0


class ServerStats:
    """Thread-safe request counters; the numbers a benchmark checks limits against."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_kind: Counter[str] = Counter()
        self._in_flight = 0
        self._max_in_flight = 0
        self._recent: deque[float] = deque()  # start times within the last second
        self._max_per_second = 0

    def started(self, kind: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._by_kind[kind] += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            while self._recent and now - self._recent[0] >= 1.0:
                self._recent.popleft()
            self._recent.append(now)
            self._max_per_second = max(self._max_per_second, len(self._recent))

    def finished(self) -> None:
        with self._lock:
            self._in_flight -= 1

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._by_kind.values())

    @property
    def by_kind(self) -> dict[str, int]:
        with self._lock:
            return dict(self._by_kind)

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._max_in_flight

    @property
    def max_per_second(self) -> int:
        """The most requests started within any one-second sliding window."""
        with self._lock:
            return self._max_per_second

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": sum(self._by_kind.values()),
                "by_kind": dict(self._by_kind),
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "max_per_second": self._max_per_second,
            }


class DirectoryServer(ThreadingHTTPServer):
    """A threaded HTTP server holding the directory, the fault settings and the counters."""

    daemon_threads = True  # a hanging handler must not keep the process alive at exit
    request_queue_size = 128  # many clients connecting at once must not be refused by the backlog

    def __init__(
        self,
        address: tuple[str, int],
        directory: SampleDirectory,
        latency_ms: float = 0.0,
        faults: Faults | None = None,
        token: str | None = None,
    ) -> None:
        super().__init__(address, DirectoryHandler)
        self.directory = directory
        self.latency = max(0.0, latency_ms) / 1000.0
        self.faults = faults or Faults()
        self.token = token
        self.stats = ServerStats()
        self.stopping = threading.Event()
        self._rng = random.Random(self.faults.seed)
        self._rng_lock = threading.Lock()

    def draw_fault(self) -> str | None:
        """Which fault, if any, this request gets."""
        with self._rng_lock:
            draw = self._rng.random()
        f = self.faults
        for name, rate in (("503", f.fail_rate), ("429", f.rate_429), ("json", f.invalid_json_rate)):
            if draw < rate:
                return name
            draw -= rate
        return "hang" if draw < f.hang_rate else None


def _route(path: str) -> tuple[str, str]:
    """(kind, region code) of a request path; kind 'unknown' for anything else."""
    parts = [unquote(part) for part in path.strip("/").split("/")]
    if parts == ["v1", "regions"]:
        return "regions", ""
    if len(parts) == 4 and parts[:2] == ["v1", "regions"] and parts[3] in ("children", "hospitals"):
        return parts[3], parts[2]
    return "unknown", ""


def _int_param(query: dict[str, list[str]], name: str, default: int) -> int:
    raw = query.get(name, [str(default)])[0]
    value = int(raw)  # ValueError becomes a 400
    if value < 1:
        raise ValueError(f"{name} must be >= 1")
    return value


class DirectoryHandler(BaseHTTPRequestHandler):
    """One request of the Directory HTTP API; HTTP/1.1 with Content-Length, so connections are reused."""

    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; with Nagle's algorithm the second waits for the client's
    # delayed ACK, costing milliseconds per request on keep-alive connections.
    disable_nagle_algorithm = True
    server: DirectoryServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: a benchmark makes hundreds of thousands of requests."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path.rstrip("/") in ("/_stats", "/v1/_stats"):
            self._send(200, self.server.stats.snapshot())
            return
        kind, code = _route(url.path)
        stats = self.server.stats
        stats.started(kind)
        try:
            self._serve(kind, code, parse_qs(url.query))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout after an injected hang)
        finally:
            stats.finished()

    def _serve(self, kind: str, code: str, query: dict[str, list[str]]) -> None:
        server = self.server
        if server.token and self.headers.get("Authorization") != f"Bearer {server.token}":
            self._send(401, {"error": "missing or wrong bearer token"})
            return
        if server.latency:
            time.sleep(server.latency)
        fault = server.draw_fault()
        if fault == "503":
            self._send(503, {"error": "injected failure"})
        elif fault == "429":
            self._send(429, {"error": "injected rate limit"}, {"Retry-After": "1"})
        elif fault == "json":
            self._send_raw(200, b'{"items": [{"code": "11')
        else:
            if fault == "hang":
                server.stopping.wait(server.faults.hang_seconds)
            self._answer(kind, code, query)

    def _answer(self, kind: str, code: str, query: dict[str, list[str]]) -> None:
        directory = self.server.directory
        region = directory.find_region(code) if code else None
        if kind == "regions":
            self._send(200, {"items": directory.provinces()})
        elif kind == "unknown":
            self._send(404, {"error": "no such endpoint"})
        elif region is None:
            self._send(404, {"error": f"unknown region {code}"})
        elif kind == "children":
            self._send(200, {"items": directory.children(region)})
        else:
            try:
                page = _int_param(query, "page", 1)
                size = min(_int_param(query, "page_size", PAGE_SIZE), PAGE_SIZE)
            except ValueError as error:
                self._send(400, {"error": str(error)})
                return
            items, total = directory.hospital_page(code, page, size)
            self._send(200, {"items": items, "page": page, "page_size": size, "total": total})

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(body, ensure_ascii=False).encode("utf-8"), headers)

    def _send_raw(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class BackgroundServer(Generic[ServerT]):
    """An HTTP server answering on a daemon thread until stopped; a context manager that stops it on exit.

    The one way refreshq's loopback servers run: the sample upstream here (the bench's too) and the tests'
    fakes (tests/support: the lying, limited, faulty and basic-auth upstreams, the model, the webhook sink).
    """

    def __init__(self, server: ServerT, poll_interval: float = 0.1) -> None:
        self.server = server
        host, port = server.server_address[:2]
        self.base_url = f"http://{host!s}:{port}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the socket and wait for the serving thread."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class RunningUpstream(BackgroundServer[DirectoryServer]):
    """A DirectoryServer serving on a background thread; `.url` is the API's base URL."""

    def __init__(self, server: DirectoryServer) -> None:
        super().__init__(server)
        self.url = f"{self.base_url}/v1"

    @property
    def counters(self) -> ServerStats:
        """The live counters, read as attributes (total, by_kind, max_in_flight, max_per_second)."""
        return self.server.stats

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters, the same as GET /_stats."""
        return self.server.stats.snapshot()

    def stop(self) -> None:
        """Stop serving and close the socket; handlers still hanging are released."""
        self.server.stopping.set()
        super().stop()


class FaultOptions(TypedDict, total=False):
    """How a served upstream misbehaves (see Faults), and the bearer token it requires (None: none)."""

    latency_ms: float
    fail_rate: float
    rate_429: float
    invalid_json_rate: float
    hang_rate: float
    hang_seconds: float
    seed: int
    token: str | None


def start_background(
    scale: int = 1000, *, host: str = "127.0.0.1", port: int = 0, directory: SampleDirectory | None = None,
    id_format: str = "coded", **options: Unpack[FaultOptions],
) -> RunningUpstream:
    """Serve on a background thread; port 0 picks a free port (see `.url`). `id_format`: the sample's ids
    ("coded", H110101000123, or "opaque", uuid-shaped; see SampleDirectory), unless `directory` is given."""
    faults = Faults(**{f: options[f] for f in Faults.__dataclass_fields__ if f in options})  # type: ignore[literal-required]
    server = DirectoryServer(
        (host, port), directory or SampleDirectory(scale, id_format), options.get("latency_ms", 0.0), faults,
        options.get("token"),
    )
    return RunningUpstream(server)


def serve_forever(
    host: str = "127.0.0.1", port: int = 8000, scale: int = 1_000_000, id_format: str = "coded",
    **faults: Unpack[FaultOptions],
) -> None:
    """Serve in the foreground until SIGTERM or SIGINT, then stop cleanly (call from the main thread).
    `faults`: the keyword options of `start_background` (latency, fault rates, seed, token)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with start_background(scale, host=host, port=port, id_format=id_format, **faults) as running:
            log.warning("serving the sample directory (scale %d, %s ids) at %s", scale, id_format, running.url)
            while not stop.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the sample directory over the Directory HTTP API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--scale", type=int, default=1_000_000, help="total hospitals")
    parser.add_argument("--id-format", choices=ID_FORMATS, default="coded",
                        help="ids that carry their leaf's code (H110101000123) or uuid-shaped opaque ones")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    for rate in ("fail-rate", "rate-429", "invalid-json-rate", "hang-rate"):
        parser.add_argument(f"--{rate}", type=float, default=0.0, help="fraction of requests, 0..1")
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--require-token",
        action="store_true",
        help=f"require the bearer token in ${TOKEN_ENV} (kept off the command line, where ps shows it)",
    )
    args = vars(parser.parse_args(argv))
    token = None
    if args.pop("require_token"):
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            parser.error(f"--require-token needs ${TOKEN_ENV} to be set")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    serve_forever(token=token, **args)


if __name__ == "__main__":
    main()
