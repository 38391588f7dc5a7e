"""Scenario 5: short jobs through refreshq's workers (forking, and the fast mode) vs plain RQ workers,
enqueue-to-start latency, and enqueue rates.

Each drain starts from an empty server: N no-op jobs (JSON serializer) are enqueued first, then
1 or 2 burst-mode workers are started, and the drain is timed from the first dequeue (the queue
shrinks) to the last worker's exit, so interpreter start-up is reported apart. All four kinds
run against the same server in the same run, so their ratios hold on a busy machine.
"""

from __future__ import annotations

import time
from typing import Any

from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.serializers import JSONSerializer

from bench.harness import REFRESHQ, RQ, Bench, Upstream
from bench.measure import rate
from bench.noop import noop
from bench.sizes import Sizes
from bench.start_latency import LATENCY_KINDS, start_latency
from jobs.config import LimitSettings
from jobs.refresh.manager import SyncTaskManager

QUEUE = "normal"  # one of refreshq's queues, so its worker drains it without options
BATCH = 1_000
# Results outlive the slowest drain (RQ's default of 500 s would drop early jobs from the finished
# registry before a 20,000-job forking drain ends, and the count could not be checked).
RESULT_TTL = 4 * 3600
POLL_SECONDS = 0.01


KINDS = ("refreshq-fast", "refreshq", "rq", "rq-simple")


def worker_command(kind: str, url: str, burst: bool = True) -> list[str]:
    """The command line a user would run for each kind of worker (in burst mode unless `burst` is False)."""
    flag = ["--burst"] if burst else []
    rq_worker = [*RQ, "worker", *flag, "--url", url, "--serializer", "rq.serializers.JSONSerializer"]
    commands = {
        "refreshq-fast": [*REFRESHQ, "worker", "--fast", "--queue", QUEUE, *flag],
        "refreshq": [*REFRESHQ, "worker", "--queue", QUEUE, *flag],
        # RQ's classes with refreshq's command-channel listener only (bench/rq_workers.py)
        "rq": [*rq_worker, "-w", "bench.rq_workers.Worker", QUEUE],
        "rq-simple": [*rq_worker, "-w", "bench.rq_workers.SimpleWorker", QUEUE],
    }
    return commands[kind]


def _queue(bench: Bench) -> Queue:
    return Queue(QUEUE, connection=bench.conn, serializer=JSONSerializer)


def fill(bench: Bench, count: int) -> None:
    queue = _queue(bench)
    for first in range(0, count, BATCH):
        batch = min(first + BATCH, count) - first
        queue.enqueue_many([Queue.prepare_data(noop, result_ttl=RESULT_TTL) for _ in range(batch)])


def drain(bench: Bench, kind: str, processes: int, count: int) -> dict[str, Any]:
    bench.flush()
    fill(bench, count)
    queue_key = _queue(bench).key
    spawned = time.perf_counter()
    procs = [bench.spawn(f"{kind}-{processes}p-{i + 1}", worker_command(kind, bench.url)) for i in range(processes)]
    first: float | None = None
    try:
        while any(p.poll() is None for p in procs):
            if first is None and int(bench.conn.llen(queue_key)) < count:
                first = time.perf_counter()
            if time.perf_counter() - spawned > 3600:
                raise RuntimeError(f"{kind} workers did not drain {count} jobs within an hour")
            time.sleep(POLL_SECONDS)
        ended = time.perf_counter()
    finally:
        for proc in procs:
            bench.stop(proc, grace=2)
    first = first if first is not None else spawned
    finished = len(FinishedJobRegistry(QUEUE, connection=bench.conn, serializer=JSONSerializer))
    failed = len(FailedJobRegistry(QUEUE, connection=bench.conn, serializer=JSONSerializer))
    left = int(bench.conn.llen(queue_key))
    if finished != count or failed or left or any(p.returncode != 0 for p in procs):
        raise RuntimeError(
            f"{kind} x{processes}: {finished}/{count} jobs finished, {failed} failed, {left} left; see {bench.logs}"
        )
    return {
        "kind": kind,
        "processes": processes,
        "jobs": count,
        "startup_seconds": round(first - spawned, 3),
        "drain_seconds": round(ended - first, 3),
        "jobs_per_second": rate(count, ended - first),
    }


def enqueue_rates(bench: Bench, upstream: Upstream | None, count: int) -> dict[str, Any]:
    """Jobs (or tasks) per second onto a queue no worker drains; the server is flushed after each."""
    manager = SyncTaskManager(
        bench.settings(limits=LimitSettings(max_pending=10**6)), bench.conn,
        upstream={"kind": "http", "url": upstream.url if upstream else "http://127.0.0.1:9/v1"},
    )
    queue = _queue(bench)

    def enqueue_many() -> None:
        for first in range(0, count, BATCH):
            queue.enqueue_many([Queue.prepare_data(noop) for _ in range(first, min(first + BATCH, count))])

    measured = {
        "refreshq_create_full_refresh_task": lambda: [manager.create_full_refresh_task() for _ in range(count)],
        "queue_enqueue": lambda: [queue.enqueue(noop) for _ in range(count)],
        "queue_enqueue_many": enqueue_many,
    }
    if upstream is not None:  # province tasks resolve the name through the upstream (cached briefly)
        measured["refreshq_create_province_refresh_task"] = lambda: [
            manager.create_province_refresh_task("广东省") for _ in range(count)
        ]
    rates: dict[str, Any] = {}
    for name, call in measured.items():
        bench.flush()
        started = time.perf_counter()
        call()
        rates[name] = rate(count, time.perf_counter() - started)
    bench.flush()
    create = rates["refreshq_create_full_refresh_task"]
    return {
        "count": count,
        "per_second": rates,
        "enqueue_vs_create_full": round(rates["queue_enqueue"] / create, 2),
        "enqueue_many_vs_create_full": round(rates["queue_enqueue_many"] / create, 2),
    }


def run(bench: Bench, upstream: Upstream | None, sizes: Sizes) -> dict[str, Any]:
    drains = [drain(bench, kind, processes, sizes.short_jobs) for kind in KINDS for processes in (1, 2)]
    by = {(d["kind"], d["processes"]): float(d["jobs_per_second"]) for d in drains}
    ratios = {
        f"{mine}_vs_{other}_{p}p": round(by[(mine, p)] / by[(other, p)], 3)
        for mine, others in (("refreshq-fast", ("rq-simple", "rq")), ("refreshq", ("rq", "rq-simple")))
        for other in others
        for p in (1, 2)
    }
    latency = {kind: start_latency(bench, kind, 2, sizes.latency_jobs, worker_command(kind, bench.url, burst=False))
               for kind in LATENCY_KINDS}
    return {"drains": drains, "ratios": ratios, "start_latency": latency,
            "enqueue": enqueue_rates(bench, upstream, sizes.enqueue_n)}

