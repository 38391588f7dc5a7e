"""Scenario 5, latency: how soon an idle worker starts a job, from the job's `enqueued_at` (stamped by
Queue.enqueue) to its `started_at` (stamped by the worker when it starts it; same clock, one machine).

Workers of one kind (2 processes) wait idle on the queue; jobs are enqueued one at a time, each once
the previous one has finished (polled every POLL s) and PACE later, so each finds idle workers: this
is the wake-up path (a blocking pop, the claim, the fork if any, the start), not a backlog's queueing.
"""

from __future__ import annotations

import time
from typing import Any

from rq import Queue, Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from bench.harness import Bench
from bench.measure import percentile
from bench.noop import noop

QUEUE = "normal"
PACE = 0.005
POLL = 0.002
LATENCY_KINDS = ("refreshq-fast", "rq-simple", "refreshq", "rq")


def _idle(bench: Bench, count: int) -> bool:
    workers = Worker.all(connection=bench.conn)
    return len(workers) >= count and all(w.get_state() == "idle" for w in workers)


def start_latency(bench: Bench, kind: str, processes: int, count: int, command: list[str]) -> dict[str, Any]:
    bench.flush()
    queue = Queue(QUEUE, connection=bench.conn, serializer=JSONSerializer)
    procs = [bench.spawn(f"latency-{kind}-{i + 1}", command) for i in range(processes)]
    try:
        bench.wait_for(lambda: _idle(bench, processes), 60, f"{processes} idle {kind} workers", procs)
        ids = []
        for _ in range(count):
            job = queue.enqueue(noop, result_ttl=3600)
            ids.append(job.id)
            while bench.conn.hget(job.key, "status") != b"finished":
                time.sleep(POLL)
            time.sleep(PACE)
        bench.wait_for(lambda: len(queue.finished_job_registry) >= count, 120, f"{count} jobs finished", procs)
    finally:
        for proc in procs:
            bench.stop(proc, grace=5)
    jobs = [j for j in Job.fetch_many(ids, connection=bench.conn, serializer=JSONSerializer) if j is not None]
    waits = [(j.started_at - j.enqueued_at).total_seconds() for j in jobs if j.started_at and j.enqueued_at]
    return {
        "kind": kind, "processes": processes, "n": len(waits),
        "p50_ms": round(percentile(waits, 50) * 1000, 2), "p95_ms": round(percentile(waits, 95) * 1000, 2),
        "max_ms": round(max(waits) * 1000, 2) if waits else None,
    }
