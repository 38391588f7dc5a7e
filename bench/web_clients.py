"""Scenario 6, the web process's own clients: `/healthz` and an authenticated API GET on a real `refreshq web`
while 1,000 TCP connections that send nothing and 300 event-stream clients of a pending refresh are held.

Each probe opens a new connection (a server that stops accepting shows there first); the same probes with
nothing held, just before, are the baseline. The overlap is checked, not assumed: after the last probe
every held connection must still be open (none closed by the server) and the streams' cap still full (one
more stream is refused); the figures say so. The clients are plain sockets in this process, so holding
them costs the probing thread nothing. The tests use the same helpers (tests/processes/test_web_clients.py).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.harness import Bench
from bench.measure import summary_ms, timed
from bench.sizes import Sizes

TARGET_MS = 100.0


@dataclass
class Held:
    """Connections held open against the server, and what the stream clients were answered."""

    idle: list[socket.socket] = field(default_factory=list)
    streams: list[socket.socket] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    retry_after: set[str] = field(default_factory=set)
    answered_within: float = 0.0  # seconds until every stream client had its status line and headers

    def close(self) -> None:
        for sock in self.idle + self.streams:
            with contextlib.suppress(OSError):
                sock.close()

    def still_open(self) -> int:
        """Held connections the server has not closed (a peek that would block, or data waiting)."""
        return sum(_is_open(sock) for sock in self.idle + self.streams)


def _is_open(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    sock.setblocking(False)
    return sock


def hold_idle(held: Held, host: str, port: int, count: int) -> None:
    """`count` TCP connections that send nothing."""
    for _ in range(count):
        held.idle.append(_connect(host, port))


def hold_streams(held: Held, host: str, port: int, path: str, headers: dict[str, str], count: int,
                 timeout: float = 30.0) -> None:
    """`count` clients asking for an event stream at once; returns once each has its response's headers
    (the 200s then stay open, streaming; the 503s stay open too, kept alive)."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
    request += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    selector = selectors.DefaultSelector()
    received: dict[socket.socket, bytes] = {}
    started = time.monotonic()
    for _ in range(count):
        sock = _connect(host, port)
        sock.sendall(request.encode())
        held.streams.append(sock)
        received[sock] = b""
        selector.register(sock, selectors.EVENT_READ, sock)
    try:
        while received and time.monotonic() - started < timeout:
            for key, _ in selector.select(timeout=1.0):
                sock = key.data
                chunk = sock.recv(65536)
                received[sock] += chunk
                if b"\r\n\r\n" in received[sock] or not chunk:
                    _note_answer(held, received.pop(sock))
                    selector.unregister(sock)
    finally:
        selector.close()
    held.answered_within = time.monotonic() - started
    if received:
        raise AssertionError(f"{len(received)} of {count} stream clients had no answer in {timeout:.0f} s")


def _note_answer(held: Held, data: bytes) -> None:
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1]) if head[0].startswith("HTTP/") else 0
    held.statuses[status] += 1
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "retry-after":
            held.retry_after.add(value.strip())


@contextmanager
def holding(url: str, headers: dict[str, str], task_id: str, idle: int, streams: int) -> Iterator[Held]:
    """`idle` idle connections, then `streams` stream clients of `task_id`, all held for the block."""
    parsed = httpx.URL(url)
    host, port = parsed.host, parsed.port or 80
    held = Held()
    try:
        hold_idle(held, host, port, idle)
        hold_streams(held, host, port, f"/api/v1/refreshes/{task_id}/events", headers, streams)
        yield held
    finally:
        held.close()


def probe(url: str, headers: dict[str, str], paths: tuple[str, ...], rounds: int, interval: float) -> dict[
    str, list[float]
]:
    """Each path GET `rounds` times, each time on a new connection; seconds per request by path."""
    latencies: dict[str, list[float]] = {p: [] for p in paths}
    # No keep-alive: every request connects, as a new client (or a load balancer's health check) does.
    with httpx.Client(base_url=url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for _ in range(rounds):
            for path in paths:
                took, response = timed(lambda p=path: client.get(p, headers=headers))  # type: ignore[misc]
                if response.status_code != 200:
                    raise AssertionError(f"GET {path}: {response.status_code} {response.text[:200]}")
                latencies[path].append(took)
            time.sleep(interval)
    return latencies


def stream_refused(url: str, headers: dict[str, str], task_id: str) -> bool:
    """Whether one more stream is refused at once (503): the cap is still held."""
    with httpx.Client(base_url=url, timeout=10) as client:
        return client.get(f"/api/v1/refreshes/{task_id}/events", headers=headers).status_code == 503


def measure(url: str, headers: dict[str, str], task_id: str, sizes: Sizes) -> dict[str, Any]:
    """The probes while the clients are held, and the checks that they were held throughout."""
    api_path = f"/api/v1/refreshes/{task_id}"
    # The same probes with nothing held first: the side-by-side baseline of the figures.
    alone = probe(url, headers, ("/healthz", api_path), sizes.web_rounds, 0.02)
    with holding(url, headers, task_id, sizes.web_idle, sizes.web_streams) as held:
        opened = held.still_open()
        latencies = probe(url, headers, ("/healthz", api_path), sizes.web_rounds, 0.02)
        still_open = held.still_open()
        refused = stream_refused(url, headers, task_id)
        held_total = len(held.idle) + len(held.streams)
    healthz, api = summary_ms(latencies["/healthz"]), summary_ms(latencies[api_path])
    return {
        "idle_connections": sizes.web_idle, "stream_clients": sizes.web_streams,
        "stream_statuses": {str(k): v for k, v in sorted(held.statuses.items())},
        "stream_retry_after": sorted(held.retry_after),
        "streams_answered_within_s": round(held.answered_within, 3),
        "healthz": healthz, "api_get": api,
        "healthz_nothing_held": summary_ms(alone["/healthz"]), "api_get_nothing_held": summary_ms(alone[api_path]),
        "overlap": {"held": held_total, "open_before_probes": opened, "open_after_probes": still_open,
                    "stream_cap_full_after_probes": refused,
                    "held_throughout": opened == held_total and still_open == held_total and refused},
        "within_target": healthz["p99_ms"] <= TARGET_MS and api["p99_ms"] <= TARGET_MS,
    }


def run(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    """`refreshq web` (its default stream cap), a refresh that stays PENDING (no worker), the clients held."""
    from bench import http_status
    from jobs.refresh.manager import SyncTaskManager
    from web.wsgi import raise_open_files_limit

    bench.flush()
    limit = raise_open_files_limit()  # this process holds every client socket
    task_id = SyncTaskManager(bench.settings(), bench.conn).create_full_refresh_task()
    with http_status.web(bench, streams=None) as (url, headers):
        figures = measure(url, headers, task_id, sizes)
    figures["client_open_files_limit"] = limit
    return figures
