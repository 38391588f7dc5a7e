"""A loopback upstream that limits its clients the way real ones do, serving the sample's data.

It answers in `latency` seconds (uniform between two bounds, seeded), admits at most `limit` requests in any
rolling second *by arrival time* and answers 429 with `Retry-After: 1` at once to any request beyond (not
counted: only admitted requests use the budget). `throttle_at=(n, seconds)` answers the n-th admitted request
429 with `Retry-After: seconds` instead, once. Every arrival is recorded (monotonic time, admitted or not, path).

In tests: `with limited_upstream(scale, limit=100) as upstream: ... upstream.limiter.arrivals`. As a process
(the bench): `python -m tests.limited_upstream --port P --scale S --limit N`; GET /_limited gives the figures
(jobs.upstream.serve's /_stats still counts requests).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import random
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import DirectoryHandler, DirectoryServer, RunningUpstream

Arrival = tuple[float, bool, str]  # (monotonic time, admitted, path)


class Limiter:
    """The upstream's rule: `limit` admitted requests in any rolling second, by arrival time."""

    def __init__(
        self, limit: int, latency: tuple[float, float] = (0.3, 0.7), throttle_at: tuple[int, float] | None = None,
        seed: int = 0,
    ) -> None:
        self.limit, self.latency_bounds, self.throttle_at = limit, latency, throttle_at
        self.arrivals: list[Arrival] = []
        self.throttled_at: float | None = None  # when the throttle_at answer was given
        self._admitted = 0
        self._recent: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def arrive(self, path: str) -> str | None:
        """Count one arrival: None if admitted, else the Retry-After of its 429."""
        with self._lock:
            now = time.monotonic()
            while self._recent and now - self._recent[0] >= 1.0:
                self._recent.popleft()
            admitted = len(self._recent) < self.limit
            retry_after = None if admitted else "1"
            if admitted and self.throttle_at is not None and self._admitted + 1 == self.throttle_at[0]:
                admitted, retry_after, self.throttled_at = False, f"{self.throttle_at[1]:g}", now
                self.throttle_at = None  # once
            if admitted:
                self._recent.append(now)
                self._admitted += 1
            self.arrivals.append((now, admitted, path))
            return retry_after

    def latency(self) -> float:
        with self._lock:
            return self._rng.uniform(*self.latency_bounds)

    def admitted(self) -> int:
        with self._lock:
            return self._admitted

    def figures(self) -> dict[str, Any]:
        """Requests admitted and refused; the admitted rate between the 10th and 90th percentile of the
        admissions (and as a share of the limit); the most admitted in any rolling second."""
        with self._lock:
            admitted = [t for t, ok, _ in self.arrivals if ok]
            refused = len(self.arrivals) - len(admitted)
        rate = middle_rate(admitted)
        return {
            "limit": self.limit,
            "requests": len(admitted) + refused,
            "admitted": len(admitted),
            "refused": refused,
            "refused_share": round(refused / max(1, len(admitted) + refused), 5),
            "admitted_per_second": round(rate, 2),
            "budget_used": round(rate / self.limit, 4),
            "admitted_each_second": each_second(admitted),
        }


def middle_rate(times: list[float]) -> float:
    """Events per second between the 10th and the 90th percentile of their times (0 for too few)."""
    times = sorted(times)
    low, high = len(times) // 10, len(times) * 9 // 10
    return (high - low) / (times[high] - times[low]) if high > low and times[high] > times[low] else 0.0


def each_second(times: list[float]) -> list[int]:
    """How many of `times` fell in each second from the first."""
    if not times:
        return []
    first = min(times)
    counts = [0] * (int(max(times) - first) + 1)
    for t in times:
        counts[int(t - first)] += 1
    return counts


class LimitedServer(DirectoryServer):
    """A DirectoryServer whose handler applies a Limiter before answering."""

    def __init__(self, address: tuple[str, int], directory: SampleDirectory, limiter: Limiter) -> None:
        super().__init__(address, directory)
        self.RequestHandlerClass = LimitedHandler
        self.limiter = limiter


class LimitedHandler(DirectoryHandler):
    server: LimitedServer

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/_limited", "/v1/_limited"):
            self._send(200, self.server.limiter.figures())
            return
        super().do_GET()

    def _serve(self, kind: str, code: str, query: dict[str, list[str]]) -> None:
        limiter = self.server.limiter
        retry_after = limiter.arrive(self.path)
        if retry_after is not None:
            self._send(429, {"error": "rate limit exceeded"}, {"Retry-After": retry_after})
            return
        time.sleep(limiter.latency())
        super()._serve(kind, code, query)


@contextlib.contextmanager
def limited_upstream(
    scale: int, limit: int, latency: tuple[float, float] = (0.3, 0.7), throttle_at: tuple[int, float] | None = None,
    port: int = 0,
) -> Iterator[LimitedUpstream]:
    server = LimitedServer(("127.0.0.1", port), SampleDirectory(scale), Limiter(limit, latency, throttle_at))
    with LimitedUpstream(server) as running:
        yield running


class LimitedUpstream(RunningUpstream):
    server: LimitedServer

    @property
    def limiter(self) -> Limiter:
        return self.server.limiter


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the sample directory behind a per-second limit.")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--scale", type=int, default=3000)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--latency", default="0.3-0.7", help="seconds, low-high")
    args = parser.parse_args(argv)
    low, _, high = args.latency.partition("-")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with limited_upstream(args.scale, args.limit, (float(low), float(high or low)), port=args.port):
        stop.wait()


if __name__ == "__main__":
    main()
