"""A loopback upstream that limits its clients the way real ones do, serving the sample's data.

It answers in `latency` seconds (uniform between two bounds, seeded), admits at most `limit` requests in any
rolling second *by arrival time* (the kernel's, as a gateway in front of a real one counts: not when a
starved handler thread gets to read it) and answers 429 with `Retry-After: 1` at once to any request beyond
(not counted: only admitted requests use the budget). `throttle_at=(n, seconds)` answers the n-th admitted request
429 with `Retry-After: seconds` instead, once. Every arrival is recorded (epoch time, admitted or not, path).

In tests: `with limited_upstream(scale, limit=100) as upstream: ... upstream.limiter.arrivals`. As a process
(the bench): `python -m tests.support.limited_upstream --port P --scale S --limit N`; GET /_limited gives the figures
(jobs.upstream.serve's /_stats still counts requests).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import io
import random
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import DirectoryHandler, DirectoryServer, RunningUpstream

Arrival = tuple[float, bool, str]  # (arrival time, admitted, path)
# Linux's receive timestamps (socket(7)): the kernel's clock when a packet arrived, not when a thread read it,
# so a server starved of CPU still counts requests when they came, as a real gateway does.
SO_TIMESTAMPNS = 35


class StampedSocket(io.RawIOBase):
    """A connection read with recvmsg: `arrived` is the kernel's receive time (epoch) of the last data read."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock, self.arrived = sock, time.time()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size, ancillary, _flags, _address = self.sock.recvmsg_into([buffer], socket.CMSG_SPACE(16))
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = struct.unpack("qq", data[:16])
                self.arrived = seconds + nanoseconds / 1e9
        return int(size)


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
        self.read_delays: list[float] = []  # seconds from each arrival to its handler reading it (CPU starvation)
        self._recent: list[float] = []  # arrival times admitted within the last two seconds, in order
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def arrive(self, path: str, when: float) -> str | None:
        """Count one arrival at `when` (the kernel's receive time: requests may be read out of order): None if
        admitted, else the Retry-After of its 429."""
        with self._lock:
            recent = self._recent
            del recent[: bisect.bisect_left(recent, max(recent[-1] if recent else when, when) - 2.0)]
            admitted = self._busiest_second_with(when) < self.limit
            retry_after = None if admitted else "1"
            if admitted and self.throttle_at is not None and self._admitted + 1 == self.throttle_at[0]:
                admitted, retry_after, self.throttled_at = False, f"{self.throttle_at[1]:g}", when
                self.throttle_at = None  # once
            if admitted:
                bisect.insort(recent, when)
                self._admitted += 1
            self.arrivals.append((when, admitted, path))
            self.read_delays.append(time.time() - when)
            return retry_after

    def _busiest_second_with(self, when: float) -> int:
        """The most admitted arrivals in any one-second window [s, s + 1) that holds `when`."""
        recent = self._recent
        starts = [when - 1 + 1e-9, *recent[bisect.bisect_right(recent, when - 1):bisect.bisect_right(recent, when)]]
        return max(bisect.bisect_left(recent, s + 1) - bisect.bisect_left(recent, s) for s in starts)

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
            "read_delay_ms": {"p50": _quantile(self.read_delays, 0.5), "p99": _quantile(self.read_delays, 0.99),
                              "max": _quantile(self.read_delays, 1.0)},
        }


def middle_rate(times: list[float]) -> float:
    """Events per second between the 10th and the 90th percentile of their times (0 for too few)."""
    times = sorted(times)
    low, high = len(times) // 10, len(times) * 9 // 10
    return (high - low) / (times[high] - times[low]) if high > low and times[high] > times[low] else 0.0


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else 0.0


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

    def setup(self) -> None:
        super().setup()
        self.stamped = StampedSocket(self.connection)
        self.rfile = io.BufferedReader(self.stamped)

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/_limited", "/v1/_limited"):
            self._send(200, self.server.limiter.figures())
            return
        super().do_GET()

    def _serve(self, kind: str, code: str, query: dict[str, list[str]]) -> None:
        limiter = self.server.limiter
        retry_after = limiter.arrive(self.path, self.stamped.arrived)
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
