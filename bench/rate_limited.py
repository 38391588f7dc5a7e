"""Scenario 7: a slow, rate-limited upstream. The same refresh three times, side by side, against an upstream
that answers in 0.3-0.7 s and admits at most N requests in any rolling second by arrival time, 429 with
Retry-After: 1 beyond (tests/support/limited_upstream.py, in a process of its own, a new one per run): the limit
configured (REFRESHQ_UPSTREAM_RPS=N), unknown (auto, the default), and not paced at all
(REFRESHQ_UPSTREAM_RPS=0, what a fast private upstream is given). Each run: two workers keeping 128 requests
in flight (64 per job), as in issue 20's runs, and a scheduler; a fresh server (nothing learned before). The
configured run once more with three workers: whether the budget left unused is the pacing's or the refresh's.

Budget used: requests admitted per second between the 10th and the 90th percentile of the admissions, over N.
Requests refused: the 429s, over every request the upstream saw.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import httpx
from rq import Worker

from bench.full_refresh import wait_terminal
from bench.harness import LOOPBACK, REFRESHQ, Bench, Upstream, free_port
from bench.sizes import Sizes
from jobs.config import LimitSettings, PacingSettings
from jobs.refresh.manager import SyncTaskManager

# name: (REFRESHQ_UPSTREAM_RPS (None: the limit itself), workers). The runs had two workers; with
# three, the refresh asks for more than the limit throughout (two are at times both between province jobs).
RUNS: dict[str, tuple[str | None, int]] = {
    "configured": (None, 2), "configured, 3 workers": (None, 3), "unknown": ("auto", 2), "unpaced": ("0", 2),
}
JOB_CONCURRENCY = 64
LATENCY = "0.3-0.7"


def start_limited(bench: Bench, sizes: Sizes, name: str) -> Upstream:
    port = free_port()
    proc = bench.spawn(f"limited-{name}", [
        sys.executable, "-m", "tests.support.limited_upstream", "--port", str(port),
        "--scale", str(sizes.limited_scale), "--limit", str(sizes.limited_rps), "--latency", LATENCY,
    ])
    upstream = Upstream(f"http://{LOOPBACK}:{port}/v1", proc)
    if not upstream.wait_ready(60):
        upstream.close()
        bench.stop(proc, grace=2)
        raise RuntimeError(f"the limited upstream did not start; see {bench.logs}")
    return upstream


def start_processes(bench: Bench, rps: str, workers: int, name: str) -> list[subprocess.Popen[bytes]]:
    """The workers, registered, then a scheduler: a job that runs out of tries against a hammered upstream
    (unpaced) is retried by its sweeper, as in production."""
    env = bench.env(REFRESHQ_UPSTREAM_CONCURRENCY=str(workers * JOB_CONCURRENCY),
                    REFRESHQ_JOB_CONCURRENCY=str(JOB_CONCURRENCY), REFRESHQ_UPSTREAM_RPS=rps, REFRESHQ_RETRY_BASE="1")
    name = name.replace(", ", "-").replace(" ", "-")
    procs = [bench.spawn(f"{name}-worker-{i + 1}", [*REFRESHQ, "worker", "--queue", "refresh"], env)
             for i in range(workers)]
    bench.wait_for(lambda: Worker.count(connection=bench.conn) >= workers, 60, f"{workers} workers", procs)
    return [*procs, bench.spawn(f"{name}-scheduler", [*REFRESHQ, "scheduler"], env)]


def run_one(bench: Bench, sizes: Sizes, name: str, rps: str, workers_count: int = 2) -> dict[str, Any]:
    bench.flush()
    upstream = start_limited(bench, sizes, name.replace(", ", "-").replace(" ", "-"))
    processes = start_processes(bench, rps, workers_count, name)
    workers = processes[:workers_count]
    try:
        settings = bench.settings(limits=LimitSettings(max_pending=10**6),
                                  pacing=PacingSettings(rps=None if rps == "auto" else float(rps)))
        manager = SyncTaskManager(settings, bench.conn, upstream={"kind": "http", "url": upstream.url})
        started = time.perf_counter()
        if sizes.limited_province:
            task_id = manager.create_province_refresh_task(sizes.limited_province)
        else:
            task_id = manager.create_full_refresh_task()
        final, _polls = wait_terminal(bench, task_id, sizes.refresh_timeout, workers)
        seconds = time.perf_counter() - started
        figures = httpx.get(f"{upstream.url}/_limited", timeout=10).json()
        pacing = manager.get_task_status(task_id)["upstream_pacing"]
    finally:
        for proc in processes:
            bench.stop(proc)
        upstream.close()
        bench.stop(upstream.proc, grace=2)
    return {"REFRESHQ_UPSTREAM_RPS": rps, "workers": workers_count, "status": final, "seconds": round(seconds, 2),
            **figures, "pacing_at_end": pacing}


def run(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    runs = {name: run_one(bench, sizes, name, rps or str(sizes.limited_rps), workers)
            for name, (rps, workers) in RUNS.items()}
    return {
        "limit_per_second": sizes.limited_rps,
        "latency_seconds": LATENCY,
        "task": f"province {sizes.limited_province}" if sizes.limited_province else "full",
        "scale": sizes.limited_scale,
        "job_concurrency": JOB_CONCURRENCY,
        "runs": runs,
        "targets_apply": sizes.name == "full",  # a quick run is too short to say: a smoke test
    }
