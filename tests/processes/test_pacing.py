"""Pacing by send time against the real server (jobs.pacing): a configured cap used to the full whatever the
answers' latency, with no one-second window of sends above it; a throttling answer pausing every holder for
the time it names (capped; a default without one); a learned rate backed off once per round of requests and
grown back while requests wait; a paused work-horse that wakes moving neither the pause nor the rate, and not
sending its stale send times in a burst."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from jobs import keys
from jobs.config import PacingSettings, Settings
from jobs.errors import ConfigError, UpstreamGateClosed
from jobs.limits import UpstreamGate
from jobs.pacing import (
    AUTO,
    FIXED,
    PAUSE_DEFAULT_SECONDS,
    Admission,
    LatencyWatch,
    PacePolicy,
    pace_fields,
    pace_view,
)
from jobs.scripts.gate import BACK_OFF, FIRST_BACK_OFF
from tests.support.gates import close_every_gate  # noqa: F401 (autouse: every gate a test opens is closed)
from tests.support.helpers import REPO, wait_until


def policy(rps: float | None, **pacing: Any) -> PacePolicy:
    made = PacePolicy.from_settings(Settings(pacing=PacingSettings(rps=rps, **pacing)))
    assert made is not None
    return made


Answer = Callable[[Admission], tuple[int, float | None]]


class Sender:
    """Threads sending "requests" through a gate (a sleep of `latency` inside it) until stopped, recording
    when each was let through; `answer` says how each one is answered (200 by default)."""

    def __init__(self, gate: UpstreamGate, threads: int, latency: float, answer: Answer | None = None) -> None:
        self.gate, self.latency, self.answer = gate, latency, answer
        self.sent: list[float] = []  # list.append is atomic
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                with self.gate() as admission:
                    self.sent.append(time.monotonic())
                    time.sleep(self.latency)
                    status, retry_after = self.answer(admission) if self.answer and admission else (200, None)
                    if admission is not None:
                        admission.answered(status, retry_after)
            except UpstreamGateClosed:
                return
            except BaseException as exc:
                self.errors.append(exc)
                return

    def close(self) -> list[float]:
        self.stop.set()
        self.gate.close()
        for thread in self.threads:
            thread.join(timeout=10)
        assert not self.errors, self.errors
        return sorted(self.sent)


def window_peak(times: list[float], seconds: float = 1.0) -> int:
    """The most sends in any window [t, t + seconds)."""
    times = sorted(times)
    peak, first = 0, 0
    for last, when in enumerate(times):
        while when - times[first] >= seconds:
            first += 1
        peak = max(peak, last - first + 1)
    return peak


def middle_rate(times: list[float]) -> float:
    """Sends per second between the 10th and the 90th percentile of the send times."""
    times = sorted(times)
    low, high = len(times) // 10, len(times) * 9 // 10
    return (high - low) / (times[high] - times[low])


def test_rps_is_a_cap_zero_or_auto_and_auto_is_the_default() -> None:
    assert Settings.from_env({}).pacing.rps is None
    assert Settings.from_env({"REFRESHQ_UPSTREAM_RPS": " Auto "}).pacing.rps is None
    assert Settings.from_env({"REFRESHQ_UPSTREAM_RPS": "0"}).pacing.rps == 0
    assert PacePolicy.from_settings(Settings(pacing=PacingSettings(rps=0))) is None
    assert policy(None).mode == AUTO
    capped = policy(100)
    assert (capped.mode, capped.cap, round(capped.rate, 6)) == (FIXED, 100, 97.0)
    # A second of send times then holds at most floor(97 * (1 + late)) + 1 = 100 requests.
    assert int(capped.rate * (1 + capped.late)) + 1 <= 100
    with pytest.raises(ConfigError, match=r"REFRESHQ_UPSTREAM_RPS='fast' is not valid: .*number.* or auto"):
        Settings.from_env({"REFRESHQ_UPSTREAM_RPS": "fast"})
    with pytest.raises(ConfigError, match="REFRESHQ_UPSTREAM_RPS_MARGIN"):
        Settings.from_env({"REFRESHQ_UPSTREAM_RPS_MARGIN": "0.9"})


@pytest.mark.parametrize("latency", [0.0, 0.5, 2.0])
@pytest.mark.slow
def test_a_configured_cap_is_used_to_the_full_whatever_the_latency(conn: redis.Redis, latency: float) -> None:
    cap = 20
    senders = [Sender(UpstreamGate(conn, f"job-{n}", 0, policy(cap), threads=32), 32, latency) for n in range(2)]
    wait_until(lambda: sum(len(s.sent) for s in senders) >= 100, 60, 0.05, "100 requests sent")
    dropped = sum(s.gate._pacer.dropped for s in senders if s.gate._pacer is not None)
    sent = sorted(t for s in senders for t in s.close())
    rate, peak = middle_rate(sent), window_peak(sent)
    print(f"cap {cap}/s, answers of {latency} s: {rate:.2f}/s sent ({rate / cap:.1%}), at most {peak} in a second, "
          f"{dropped} send times dropped (taken late)")
    assert peak <= cap
    # 97% on a quiet machine, whatever the latency; on a saturated one a few send times are taken too late and
    # dropped (the end-to-end test holds the 95% of the issue). Counted until a second after its answer, as
    # before, a request let 20 / (1 + latency) through: 67% and 33% of the cap with answers of 0.5 and 2 s.
    assert rate >= 0.9 * cap


def _pause_seen(conn: redis.Redis, answer: tuple[int, float | None], pause_max: float, pause: float) -> float:
    """One request of holder A answered `answer` while holder B keeps sending: the seconds from the answer
    to B's first send after it (tickets handed out before the pause reach 50 ms ahead at most)."""
    settings = {"pause_max": pause_max}
    other = Sender(UpstreamGate(conn, "job-b", 0, policy(50, **settings), threads=8), 8, 0.01)
    wait_until(lambda: len(other.sent) >= 20, 30, 0.02, "job-b under way")
    gate = UpstreamGate(conn, "job-a", 0, policy(50, **settings), threads=1)
    with gate() as admission:
        assert admission is not None
        told = time.monotonic()
        admission.answered(*answer)
    wait_until(lambda: any(t > told + pause + 0.2 for t in other.sent), 30, 0.02, "job-b sending again")
    sent = other.close()
    return next(t for t in sent if t > told + 0.1) - told


@pytest.mark.parametrize(
    ("status", "retry_after", "pause_max", "pause"),
    [(429, 1.5, 60.0, 1.5), (429, 3600.0, 1.2, 1.2), (429, None, 60.0, PAUSE_DEFAULT_SECONDS), (503, 1.3, 60.0, 1.3),
     (503, None, 60.0, 0.0)],
    ids=["429-retry-after", "429-capped", "429-default", "503-retry-after", "503-no-retry-after"],
)
@pytest.mark.slow
def test_a_throttling_answer_pauses_every_holder_until_the_time_it_names(
    conn: redis.Redis, status: int, retry_after: float | None, pause_max: float, pause: float
) -> None:
    gap = _pause_seen(conn, (status, retry_after), pause_max, pause)
    print(f"{status} Retry-After {retry_after} (max {pause_max}): the other holder sent nothing for {gap:.2f} s")
    if pause:
        assert pause - 0.05 <= gap <= pause + 1.0
        assert conn.hincrby(keys.METRIC_COUNTERS, f"upstream_throttled|{status}", 0) == 1
    else:  # a 503 naming no time is a fault, not a throttle: nobody waits for it
        assert gap < 0.5
        assert conn.hincrby(keys.METRIC_COUNTERS, f"upstream_throttled|{status}", 0) == 0


def pace(conn: redis.Redis) -> dict[str, float]:
    raw = conn.hgetall(keys.UPSTREAM_PACE)
    return {k.decode(): float(v) for k, v in raw.items() if k.decode() in ("rate", "ceiling", "cut_at", "paused_until")}


def held_admissions(gate: UpstreamGate, count: int) -> tuple[list[Admission], threading.Event, list[threading.Thread]]:
    """`count` requests let through `gate` and kept open until the event is set."""
    held: list[Admission] = []
    release = threading.Event()

    def hold() -> None:
        with gate() as admission:
            assert admission is not None
            held.append(admission)
            release.wait(30)

    threads = [threading.Thread(target=hold) for _ in range(count)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(held) == count, 30, 0.02, f"{count} requests let through")
    return held, release, threads


@pytest.mark.slow
def test_the_first_throttling_answer_learns_a_rate_from_what_was_being_sent(conn: redis.Redis) -> None:
    sender = Sender(UpstreamGate(conn, "job-a", 0, policy(None), threads=8), 8, 0.05)  # about 160 a second
    held, release, threads = held_admissions(UpstreamGate(conn, "job-b", 0, policy(None), threads=1), 1)
    wait_until(lambda: len(sender.sent) >= 250, 30, 0.02, "requests under way")
    assert "rate" not in pace(conn)  # nothing learned yet: nothing limits the rate
    before = len(sender.sent)
    time.sleep(1)
    sending = len(sender.sent) - before
    held[0].answered(429, 0.2)
    learned = pace(conn)
    release.set()
    threads[0].join()
    sender.close()
    print(f"sending {sending}/s when throttled: learned {learned['rate']:.1f}/s from {learned['ceiling']:.1f}/s")
    assert sending / 2 <= learned["ceiling"] <= sending * 2
    # A rough count (requests sent in bursts): the rate drops further than from one measured while paced.
    assert learned["rate"] == pytest.approx(learned["ceiling"] * FIRST_BACK_OFF)


@pytest.mark.slow
def test_a_request_sent_freely_does_not_back_off_a_rate_learned_after_it_was_sent(conn: redis.Redis) -> None:
    """Holders send freely for up to FREE_SECONDS after the first back-off; those requests' refusals tell of the
    burst before it: they pause, but a second back-off from them would take the rate learned for a limit."""
    sender = Sender(UpstreamGate(conn, "job-a", 0, policy(None), threads=8), 8, 0.05)
    held, release, threads = held_admissions(UpstreamGate(conn, "job-b", 0, policy(None), threads=1), 1)
    wait_until(lambda: len(sender.sent) >= 100, 30, 0.02, "requests under way")
    late = UpstreamGate(conn, "job-c", 0, policy(None), threads=2)
    with contextlib.ExitStack() as stack:
        for _ in range(20):  # job-c's window of free sending opens, the back-off is made, job-c sends within it
            assert stack.enter_context(late()) is not None  # opens the window
            held[0].answered(429, 0.2)
            learned = pace(conn)
            admission = stack.enter_context(late())
            assert admission is not None
            if admission.free and admission.sent > time.monotonic() - (time.time() - learned["cut_at"]):
                break
            stack.close()
        else:
            pytest.fail("job-c never sent freely after the back-off")
        admission.answered(429, 0.2)
        after = pace(conn)
    release.set()
    threads[0].join()
    sender.close()
    assert after["rate"] == learned["rate"] and after["ceiling"] == learned["ceiling"]
    assert after["cut_at"] == learned["cut_at"]
    assert after["paused_until"] > learned["paused_until"]  # it still pauses every holder


@pytest.mark.slow
def test_a_learned_rate_backs_off_once_a_round_and_grows_back_while_requests_wait(conn: redis.Redis) -> None:
    conn.hset(keys.UPSTREAM_PACE, mapping={"rate": 20, "ceiling": 20, "mode": AUTO})
    sender = Sender(UpstreamGate(conn, "job-a", 0, policy(None), threads=16), 16, 0.05)
    held, release, threads = held_admissions(UpstreamGate(conn, "job-b", 0, policy(None), threads=4), 4)
    wait_until(lambda: len(sender.sent) >= 40, 30, 0.02, "requests under way")
    assert 0.7 <= middle_rate(sender.sent) / 20 <= 1.1  # paced at the learned rate
    held[0].answered(429, 0.3)
    first = pace(conn)
    for admission in held[1:]:  # sent before the back-off: the same round, no further back-off
        admission.answered(429, 0.3)
    assert pace(conn)["cut_at"] == first["cut_at"] and pace(conn)["rate"] == first["rate"]
    assert first["ceiling"] == pytest.approx(20, rel=0.02)  # where it was (grown a little since)
    assert first["rate"] == pytest.approx(first["ceiling"] * BACK_OFF)
    release.set()
    for thread in threads:
        thread.join()
    # Requests wait for the rate (16 threads, answers of 50 ms): it grows back quickly to near the ceiling...
    ceiling = first["ceiling"]
    wait_until(lambda: pace(conn)["rate"] >= ceiling * 0.94, 30, 0.05, "the rate to grow back")
    # ...then slowly: every throttling answer costs a pause, so a limit found is approached with care.
    time.sleep(1.0)
    view = pace_view(conn.hmget(keys.UPSTREAM_PACE, pace_fields()))
    assert view is not None and view["mode"] == AUTO and view["learned_from"] == round(ceiling, 2)
    assert ceiling * 0.94 <= view["rate"] < ceiling * 0.97
    sender.close()


def test_a_send_time_not_used_in_time_is_dropped_not_sent_late(conn: redis.Redis) -> None:
    gate = UpstreamGate(conn, "job-a", 0, policy(100), threads=8)
    with gate():  # leases, and takes the first ticket
        pass
    pacer = gate._pacer
    assert pacer is not None
    assert pacer._take(5) == 0.0  # five more send times, 10.3 ms apart from now on
    tat = float(conn.hget(keys.UPSTREAM_PACE, "tat") or 0)
    time.sleep(0.2)  # as a work-horse paused meanwhile would: they are all stale now
    with gate() as admission:
        assert admission is not None
    # It took a new send time instead of using a stale one.
    assert float(conn.hget(keys.UPSTREAM_PACE, "tat") or 0) > tat
    assert not pacer._tickets


STALE_HORSE = """
import sys, threading, time, redis
from jobs.limits import UpstreamGate
from jobs.pacing import PacePolicy
conn = redis.Redis.from_url(sys.argv[1])
gate = UpstreamGate(conn, "stale-job", 0, PacePolicy("auto"), threads=9)
held = threading.Event()
def hold():
    with gate() as admission:
        elapsed = time.monotonic() - admission.sent  # the answer arrives now; it is told of after the pause
        held.set()
        sys.stdin.readline()
        admission.answered(429, 2.0, elapsed)
        print("told", flush=True)
def send():
    while True:
        with gate():
            print("sent", time.time(), flush=True)
            time.sleep(0.05)
threading.Thread(target=hold, daemon=True).start()
held.wait()
for _ in range(8):
    threading.Thread(target=send, daemon=True).start()
threading.Event().wait()
"""


@pytest.mark.slow
def test_a_paused_work_horse_that_wakes_moves_neither_the_pause_nor_the_rate(
    conn: redis.Redis, redis_url: str
) -> None:
    conn.hset(keys.UPSTREAM_PACE, mapping={"rate": 10, "ceiling": 10, "mode": AUTO})
    proc = subprocess.Popen([sys.executable, "-c", STALE_HORSE, redis_url], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdin is not None and proc.stdout is not None
    try:
        sent: list[float] = []
        while len(sent) < 20:
            sent.append(float(proc.stdout.readline().split()[1]))
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(3)  # the 429's Retry-After (2 s) runs out while the horse is paused; its lease (10 s) does not
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        woke = time.time()
        os.kill(proc.pid, signal.SIGCONT)
        while True:
            line = proc.stdout.readline().split()
            if line[0] == b"told":
                break
            sent.append(float(line[1]))
        told = time.time()
        while not sent or sent[-1] < woke + 2:
            line = proc.stdout.readline().split()
            if line[0] == b"sent":
                sent.append(float(line[1]))
    finally:
        proc.kill()
        proc.wait(timeout=10)
    state = pace(conn)
    assert state.get("paused_until", 0) < told  # the pause it told of had ended before it could tell it
    assert state["rate"] >= 10  # and it backed nothing off
    assert conn.hincrby(keys.METRIC_COUNTERS, "upstream_throttled|429", 0) == 1  # the answer is counted
    # Awake, it paces as before: its send times from before the pause were not sent at once.
    assert window_peak([t for t in sent if t >= woke - 0.5]) <= 11


def test_a_clear_rise_in_answer_time_is_told_once_and_noise_is_not() -> None:
    watch = LatencyWatch()
    told = [watch.rising(0.3 + 0.4 * (n % 5) / 4) for n in range(200)]  # 0.3-0.7 s, as the limited upstream
    assert not any(told)
    told = [watch.rising(2.0) for _ in range(200)]  # queueing: answers take seconds now
    assert told.count(True) == 1  # backed off once; the baseline is now the slower answers
    told = [watch.rising(0.01) for _ in range(100)] + [watch.rising(0.2) for _ in range(100)]
    assert not any(told)  # faster, then a rise within the floor: nothing
