"""The upstream gate against the real server: slots leased in blocks per job, shared fairly, given back
on close or by lapse, and waited for without hammering Redis (the per-second side: tests/processes/test_pacing.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from jobs import keys
from jobs.config import PacingSettings, Settings
from jobs.errors import UpstreamGateClosed
from jobs.limits import LEASE_SECONDS, POLL_SECONDS, UpstreamGate, gate_for, release_holder
from tests.support.gates import close_every_gate  # noqa: F401 (autouse: every gate a test opens is closed)
from tests.support.helpers import REPO, wait_until


def commands_run(conn: redis.Redis) -> int:
    """Commands the server ran since the last CONFIG RESETSTAT, scripts' inner commands included,
    leaving out the INFO and CONFIG calls of the test itself."""
    stats = conn.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_config"))


class Load:
    """Threads sending "requests" (a short sleep inside the gate) until stopped, counting what is in flight."""

    def __init__(self, gate: UpstreamGate, threads: int, seconds: float = 0.01, shared: Load | None = None) -> None:
        self.gate = gate
        self.seconds = seconds
        self.stop = threading.Event()
        self.lock = shared.lock if shared else threading.Lock()
        self.in_flight = 0
        self.peak = 0
        self.requests = 0
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                with self.gate():
                    with self.lock:
                        self.in_flight += 1
                        self.peak = max(self.peak, self.in_flight)
                        self.requests += 1
                    time.sleep(self.seconds)
                    with self.lock:
                        self.in_flight -= 1
            except UpstreamGateClosed:
                return
            except BaseException as exc:
                self.errors.append(exc)
                return

    def close(self) -> None:
        self.stop.set()
        self.gate.close()
        for thread in self.threads:
            thread.join(timeout=5)
        assert not self.errors, self.errors


@contextmanager
def loads(*items: Load) -> Iterator[None]:
    try:
        yield
    finally:
        for item in items:
            item.close()


def test_a_job_leases_slots_in_a_block_instead_of_a_round_trip_per_request(conn: redis.Redis) -> None:
    gate = UpstreamGate(conn, "job-a", concurrency=8, pace=None, threads=8)
    conn.config_resetstat()
    load = Load(gate, threads=8, seconds=0.002)
    with loads(load):
        wait_until(lambda: load.requests >= 2000, 30, what="2000 requests")
        commands = commands_run(conn)
    print(f"block lease: {commands} commands for {load.requests} requests")
    assert load.peak == 8  # the whole block was in use at once
    assert commands < 50, f"{commands} commands for {load.requests} requests"
    assert conn.zcard(keys.UPSTREAM_HOLDERS) == 0  # closed: given back


class Sampler:
    """Samples how many requests each load has in flight at the same moment."""

    def __init__(self, *items: Load) -> None:
        self.items = items
        self.samples: list[tuple[int, ...]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.items[0].lock:
                self.samples.append(tuple(item.in_flight for item in self.items))
            time.sleep(0.001)

    def collect(self, requests: int) -> list[tuple[int, ...]]:
        """The samples taken while every load sends `requests` more requests (a window measured in work
        done, not in time: a slow machine makes it longer, never emptier)."""
        self.samples = []
        targets = [item.requests + requests for item in self.items]
        wait_until(lambda: all(item.requests >= t for item, t in zip(self.items, targets, strict=True)), 60, 0.01,
                   f"{requests} more requests from each holder")
        return list(self.samples)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
def test_holders_share_the_limit_fairly_and_shrink_when_others_wait(conn: redis.Redis) -> None:
    first = Load(UpstreamGate(conn, "job-a", concurrency=8, pace=None, threads=8), threads=8)
    with loads(first):
        wait_until(lambda: first.peak == 8, 10, what="the first holder to use every slot")
        second = Load(UpstreamGate(conn, "job-b", concurrency=8, pace=None, threads=8), threads=8, shared=first)
        with loads(second):
            sampler = Sampler(first, second)
            started = time.monotonic()
            wait_until(lambda: second.in_flight >= 4, 5, 0.001, "the second holder to get an even share")
            took = time.monotonic() - started
            # The first holder's last requests above its share drain.
            wait_until(lambda: first.in_flight <= 4, 5, 0.001, "the first holder to shrink to its share")
            halves = sampler.collect(300)
            sampler.stop()
            third = Load(UpstreamGate(conn, "job-c", concurrency=8, pace=None, threads=8), threads=8, shared=first)
            with loads(third):
                sampler = Sampler(first, second, third)
                wait_until(lambda: third.in_flight >= 2, 5, 0.001, "a third holder to get its share")
                wait_until(lambda: max(first.in_flight, second.in_flight) <= 3, 5, 0.001,
                           "the first two holders to shrink to their shares")
                thirds = sampler.collect(200)
                sampler.stop()
    print(f"fair share: the second holder had 4 of 8 slots {took:.2f} s after it asked")
    assert took < 3.0, f"the second holder waited {took:.1f} s for its share"
    assert halves and thirds
    assert max(a for a, _ in halves) <= 4 and max(b for _, b in halves) == 4  # ceil(8 / 2) each
    assert max(sum(s) for s in halves) <= 8
    assert all(max(s[i] for s in thirds) <= 3 for i in range(3))  # ceil(8 / 3) each, at most
    assert max(sum(s) for s in thirds) <= 8
    assert conn.zcard(keys.UPSTREAM_HOLDERS) == 0
    assert not conn.exists(keys.UPSTREAM_SLOTS)


def test_in_flight_across_holders_never_exceeds_the_limit(conn: redis.Redis) -> None:
    gates = [UpstreamGate(conn, f"job-{n}", concurrency=5, pace=None, threads=6) for n in range(3)]
    first = Load(gates[0], threads=6, seconds=0.005)
    others = [Load(g, threads=6, seconds=0.005, shared=first) for g in gates[1:]]
    total = {"peak": 0}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with first.lock:
                total["peak"] = max(total["peak"], first.in_flight + sum(o.in_flight for o in others))
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with loads(first, *others):
            wait_until(lambda: all(x.requests > 100 for x in (first, *others)), 30, what="every holder to send")
            wait_until(lambda: all(x.requests > 400 for x in (first, *others)), 60, what="300 more from each")
    finally:
        stop.set()
        watcher.join()
    assert total["peak"] <= 5
    assert total["peak"] == 5  # the limit was reached, so it was what held them


def test_closing_a_gate_gives_its_slots_back_at_once(conn: redis.Redis) -> None:
    holder = UpstreamGate(conn, "job-a", concurrency=2, pace=None, threads=2)
    release = threading.Event()
    inside = threading.Barrier(3)

    def hold() -> None:
        with holder():
            inside.wait()
            release.wait()

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for thread in holders:
        thread.start()
    inside.wait(timeout=10)
    waiter = UpstreamGate(conn, "job-b", concurrency=2, pace=None, threads=2)
    took = threading.Event()

    def wait_for_slot() -> None:
        with waiter():
            took.set()

    thread = threading.Thread(target=wait_for_slot)
    thread.start()
    # The waiter asked for a slot and was granted none: both are in use.
    wait_until(lambda: conn.hget(keys.UPSTREAM_WANTS, "job-b"), 10, 0.01, "the waiter to ask for a slot")
    assert conn.hget(keys.UPSTREAM_SLOTS, "job-b") in (None, b"0")
    assert not took.is_set()
    release.set()
    for t in holders:
        t.join()
    holder.close()
    closed = time.monotonic()
    assert took.wait(5)
    assert time.monotonic() - closed < 1.5
    thread.join()
    waiter.close()


HOLD_FOREVER = """
import sys, threading, redis
from jobs.limits import UpstreamGate
conn = redis.Redis.from_url(sys.argv[1])
gate = UpstreamGate(conn, "dead-job", concurrency=2, pace=None, threads=2)
entered = threading.Barrier(3)
def hold():
    with gate():
        entered.wait()
        threading.Event().wait()
for _ in range(2):
    threading.Thread(target=hold, daemon=True).start()
entered.wait()
print("held", flush=True)
threading.Event().wait()
"""


@pytest.mark.parametrize("released", [True, False], ids=["released-by-its-worker", "lapsed"])
@pytest.mark.slow
def test_a_dead_holders_slots_are_usable_again_at_once_or_within_the_lease(
    conn: redis.Redis, redis_url: str, released: bool
) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_FOREVER, redis_url], stdout=subprocess.PIPE,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"held\n"
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    if released:
        release_holder(conn, "dead-job")  # what a worker does once its work-horse has died
    gate = UpstreamGate(conn, "job-b", concurrency=2, pace=None, threads=2)
    with gate():
        took = time.monotonic() - killed
    gate.close()
    print(f"dead holder ({'released' if released else 'lapsed'}): its slots usable again {took:.2f} s after the kill")
    if released:
        assert took < 1.5, f"the released holder's slots came back after {took:.1f} s"
    else:
        assert took < LEASE_SECONDS + 1.0, f"the dead holder's slots came back after {took:.1f} s"
        assert took > LEASE_SECONDS - 2 * POLL_SECONDS - 2.5  # held until its lease lapsed, not longer
    assert conn.zcard(keys.UPSTREAM_HOLDERS) == 0


def script_calls(conn: redis.Redis) -> int:
    """Round trips of the gate: script calls since the last CONFIG RESETSTAT."""
    stats = conn.info("commandstats")
    return sum(int(stats.get(name, {}).get("calls", 0)) for name in ("cmdstat_evalsha", "cmdstat_eval"))


@pytest.mark.slow
def test_waiting_for_a_slot_costs_a_bounded_number_of_redis_commands(conn: redis.Redis) -> None:
    holder = UpstreamGate(conn, "job-a", concurrency=1, pace=None, threads=1)
    release = threading.Event()
    entered = threading.Event()

    def hold() -> None:
        with holder():
            entered.set()
            release.wait(30)

    holding = threading.Thread(target=hold)
    holding.start()
    assert entered.wait(5)
    conn.config_resetstat()
    started = time.monotonic()
    waiting = Load(UpstreamGate(conn, "job-b", concurrency=1, pace=None, threads=16), threads=16)
    with loads(waiting):
        # A window measured in round trips: however slow the machine, it is never empty.
        wait_until(lambda: script_calls(conn) >= 15, 30, 0.05, "15 script calls of the two gates")
        took = time.monotonic() - started
        calls, commands = script_calls(conn), commands_run(conn)
        assert waiting.requests == 0  # it really waited all along
        release.set()
        holding.join()
        holder.close()
        wait_until(lambda: waiting.requests > 0, 5, what="the waiter to get the slot")
    print(f"waiting: {calls} script calls ({commands} commands inside them) in {took:.1f} s, 16 threads waiting")
    # With 16 threads waiting, the waiting holder asks twice a second and the holding one renews twice a
    # second too (it holds more than half of the limit), each call a script of a few commands: 15 calls
    # take some 4 s. Threads polling Redis every few milliseconds, as before, made about 2,600 a second.
    assert took >= calls / 6, f"{calls} script calls in {took:.2f} s while waiting"
    assert commands <= calls * 12


def test_with_no_limit_that_could_bind_there_is_no_gate() -> None:
    assert gate_for(redis.Redis(), Settings(pacing=PacingSettings(concurrency=0, rps=0)), "job") is None
    assert PacingSettings(concurrency=0).job_concurrency == 16
    assert gate_for(redis.Redis(), Settings(pacing=PacingSettings(concurrency=0, rps=5)), "job") is not None
    # Unset (auto): the rate is learned, so there is a gate even with no in-flight limit.
    assert gate_for(redis.Redis(), Settings(pacing=PacingSettings(concurrency=0)), "job") is not None
