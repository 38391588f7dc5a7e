"""Scenario 2, over HTTP: `GET /api/v1/refreshes/{id}` on a real `refreshq web` (waitress, a keep-alive
client, a read token) while 50 event streams of the same task stay open, beside the in-process
`get_task_status` of the same run."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from bench.harness import REFRESHQ, Bench, free_port
from bench.measure import summary_ms, timed
from jobs import tokens

STREAMS = 50


@contextmanager
def web(bench: Bench, streams: int | None = STREAMS + 14) -> Iterator[tuple[str, dict[str, str]]]:
    """`refreshq web` on a free loopback port (`streams`: its REFRESHQ_WEB_STREAMS, None: the default), with
    a read token; stopped on the way out."""
    port = free_port()
    extra = {"REFRESHQ_WEB_STREAMS": str(streams)} if streams is not None else {}
    proc = bench.spawn("web", [*REFRESHQ, "web", "--port", str(port)],
                       bench.env(REFRESHQ_WEB_PASSWORD="bench-only", **extra))
    url = f"http://127.0.0.1:{port}"
    try:
        bench.wait_for(lambda: _up(url), 60, "refreshq web", [proc])
        token = tokens.create(bench.conn, "bench", "read")[0]
        yield url, {"Authorization": f"Bearer {token}"}
    finally:
        bench.stop(proc)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def open_streams(url: str, headers: dict[str, str], task_id: str, count: int = STREAMS) -> Iterator[list[int]]:
    """`count` event streams of the task, each read by a thread until the block ends; yields the events
    each one has received so far (a live list)."""
    stop = threading.Event()
    received = [0] * count
    opened = threading.Barrier(count + 1, timeout=60)

    def follow(i: int) -> None:
        with httpx.Client(timeout=httpx.Timeout(10, read=None)) as client, \
                client.stream("GET", f"{url}/api/v1/refreshes/{task_id}/events", headers=headers) as response:
            if response.status_code != 200:
                raise RuntimeError(f"stream {i}: {response.status_code}")
            opened.wait()
            for line in response.iter_lines():
                if line.startswith("event: "):
                    received[i] += 1
                if stop.is_set():
                    return

    threads = [threading.Thread(target=follow, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    opened.wait()
    try:
        yield received
    finally:
        stop.set()  # each thread leaves at its next line: an event or a heartbeat (<= 10 s)


def probe(url: str, headers: dict[str, str], task_id: str, seconds: float, interval: float) -> dict[str, Any]:
    """GET the task's status back to back on one keep-alive connection."""
    latencies: list[float] = []
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        client.get(f"/api/v1/refreshes/{task_id}").raise_for_status()  # connect first: not a sample
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            took, response = timed(lambda: client.get(f"/api/v1/refreshes/{task_id}"))
            response.raise_for_status()
            latencies.append(took)
            time.sleep(interval)
    return summary_ms(latencies)


def measure(
    url: str, headers: dict[str, str], task_id: str, seconds: float, interval: float, watched: str | None = None
) -> dict[str, Any]:
    """The probe of `task_id` while 50 streams follow `watched` (default the same task; it must not end
    meanwhile: a stream of an ended task closes)."""
    with open_streams(url, headers, watched or task_id) as received:
        figures = probe(url, headers, task_id, seconds, interval)
        figures["open_streams"] = STREAMS
        figures["events_received"] = sum(received)
    return figures


def verdicts(http: dict[str, Any], http_idle: dict[str, Any], in_process: dict[str, Any]) -> dict[str, Any]:
    with contextlib.suppress(KeyError, TypeError):
        return {"idle_p99_within_10ms": http_idle["p99_ms"] <= 10,
                "load_p99_ratio_to_in_process": round(http["p99_ms"] / in_process["p99_ms"], 2),
                "load_p99_within_2x": http["p99_ms"] <= 2 * in_process["p99_ms"]}
    return {}
