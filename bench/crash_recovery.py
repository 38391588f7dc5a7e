"""Crash recovery: from a kill -9 of a worker and its work-horse in a busy full refresh to the upstream's next
request for the province it was refreshing, with a replacement worker started at once.

`python -m bench --only crash_recovery` (part of the suite: 5 runs of each setting, 2 with --quick), or
`python -m bench.crash_recovery [--quick] [--runs N] [--latency-ms MS] [--concurrency N]` alone. Each run is a
new full refresh on an emptied server, the scheduler running throughout, over an upstream in this process
that records when each request reaches it. Two settings:
- `two_workers`: two workers share the refresh; one is killed while the other works on;
- `only_worker`: the only worker is killed.
Each run also says where the time went, from the killed job's record: when it was declared abandoned (its
failure result), requeued (enqueued_at) and started again (started_at); and how many province jobs were still
queued at the kill, and how many leaves the killed province had left.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from rq.job import Job
from rq.results import Result
from rq.serializers import JSONSerializer

from bench.harness import REFRESHQ, Bench
from bench.sizes import Sizes, choose
from bench.worker_memory import children
from jobs import keys, queues
from jobs.redis_values import as_text
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream.serve import DirectoryHandler, start_background

MODES = {"two_workers": 2, "only_worker": 1}
POLL_SECONDS = 0.02
RESUME_TIMEOUT = 600.0
# Requests in flight across the workers: few enough that the refresh is still busy after the kill.
CONCURRENCY = 4
# At full size the upstream answers in 100 ms: a big province's job then outlasts the 15 s it takes to notice a
# dead worker, the case where the job the replacement took first would hold the killed one up (make_room).
FULL_LATENCY_MS = 100.0
# The victim runs a province of at least this many leaves, most of them to go (the first provinces handed
# over are those without cities, of one leaf: killed, they would ask the upstream for nothing more).
VICTIM_LEAVES = 20

Requests = list[tuple[float, str]]


@dataclass
class Run:
    gap_seconds: float  # kill -> the upstream's next request for the killed province
    abandoned_after: float | None  # kill -> the job left the started registry (failed, or requeued)
    requeued_after: float | None  # kill -> queued again
    restarted_after: float | None  # kill -> started again (by a worker that was free to take it)
    province: str
    queued_at_kill: int  # province jobs of the refresh still queued at the kill
    leaves_left: int  # of the killed province, at the kill
    stepped_back: int = 0  # jobs asked to step back for it (jobs.duties.make_room)


@contextlib.contextmanager
def recording_upstream(scale: int, latency_ms: float) -> Iterator[tuple[str, Requests]]:
    """The sample over HTTP, recording (monotonic time, path) of every request as it reaches the server."""
    requests: Requests = []

    class Recording(DirectoryHandler):
        def do_GET(self) -> None:
            requests.append((time.monotonic(), self.path))
            super().do_GET()

    with start_background(scale, latency_ms=latency_ms) as running:
        running.server.RequestHandlerClass = Recording
        # A killed work-horse drops its connections: nothing to print about them.
        running.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        yield running.url, requests


def run(bench: Bench, sizes: Sizes, runs: int | None = None, concurrency: int = CONCURRENCY,
        latency_ms: float | None = None) -> dict[str, Any]:
    """Every mode, `runs` times each (5 at full size, 2 with --quick)."""
    quick = sizes.name == "quick"
    runs = runs or (2 if quick else 5)
    latency = latency_ms if latency_ms is not None else sizes.latency_ms if quick else FULL_LATENCY_MS
    env = bench.env(REFRESHQ_UPSTREAM_CONCURRENCY=str(concurrency))
    results: dict[str, Any] = {"runs_per_mode": runs, "scale": sizes.scale, "latency_ms": latency,
                               "upstream_concurrency": concurrency, "modes": {}}
    with recording_upstream(sizes.scale, latency) as (url, requests):
        scheduler = bench.spawn("crash-scheduler", [*REFRESHQ, "scheduler"], env)
        try:
            for mode, workers in MODES.items():
                done = [one_run(bench, env, url, requests, workers, sizes) for _ in range(runs)]
                results["modes"][mode] = {"gap_seconds": summary([r.gap_seconds for r in done]),
                                          "runs": [asdict(r) for r in done]}
        finally:
            bench.stop(scheduler, grace=5)
    return results


def summary(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2),
            "max": round(max(values), 2)}


def one_run(bench: Bench, env: dict[str, str], url: str, requests: Requests, workers: int, sizes: Sizes) -> Run:
    bench.flush()
    procs = [bench.spawn(f"crash-worker-{i}", [*REFRESHQ, "worker", "--queue", "refresh"], env)
             for i in range(workers)]
    try:
        manager = SyncTaskManager(bench.settings(), bench.conn, upstream={"kind": "http", "url": url})
        task_id = manager.create_full_refresh_task()
        victim = procs[0]
        job_id = _busy_job(bench, task_id, victim, sizes)
        province = _province_of(job_id)
        queued = sum(1 for j in queues.queue(bench.conn, queues.REFRESH).job_ids if j.startswith(f"{task_id}-p"))
        left = _leaves_left(bench, task_id, province)
        horses = children(victim.pid)
        os.killpg(victim.pid, signal.SIGKILL)
        for pid in horses:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed, killed_wall = time.monotonic(), time.time()
        procs.append(bench.spawn("crash-replacement", [*REFRESHQ, "worker", "--queue", "refresh"], env))
        steps_before = _steps_back(bench)
        run = _follow(bench, requests, job_id, province, killed, killed_wall)
        run.queued_at_kill, run.leaves_left, run.stepped_back = queued, left, _steps_back(bench) - steps_before
        manager.cancel_task(task_id)
        return run
    finally:
        for proc in procs:
            bench.stop(proc, grace=0)


def _busy_job(bench: Bench, task_id: str, victim: subprocess.Popen[bytes], sizes: Sizes) -> str:
    """The province job the victim runs once the refresh is busy: other provinces still queued, and the
    victim's with at least half its leaves to go (a job killed as it ends asks the upstream nothing more)."""
    found: list[str] = []

    def busy() -> bool:
        job_id = _current_job(bench, victim.pid)
        if not job_id or "-p" not in job_id.removeprefix(task_id):
            return False
        queued = [j for j in queues.queue(bench.conn, queues.REFRESH).job_ids if j.startswith(f"{task_id}-p")]
        province = _province_of(job_id)
        total = int(bench.conn.hget(keys.task_stats(task_id), keys.province_stat(province, "leaves_total")) or 0)
        if not queued or total < VICTIM_LEAVES or 2 * _leaves_left(bench, task_id, province) < total:
            return False
        found.append(job_id)
        return True

    bench.wait_for(busy, sizes.refresh_timeout, "a busy refresh to kill a worker in", [victim])
    return found[-1]


def _steps_back(bench: Bench) -> int:
    """How many times the scheduler asked a job to step back so far (its log's make-room lines)."""
    try:
        text = (bench.logs / "crash-scheduler.log").read_text(errors="replace")
    except OSError:
        return 0
    return text.count("make room:")


def _current_job(bench: Bench, pid: int) -> str | None:
    for key in bench.conn.smembers("rq:workers"):
        worker_pid, job = bench.conn.hmget(key, "pid", "current_job")
        if worker_pid is not None and int(worker_pid) == pid and job:
            return as_text(job)
    return None


def _province_of(job_id: str) -> str:
    return job_id.rsplit("-p", 1)[1].split("-")[0]


def _leaves_left(bench: Bench, task_id: str, province: str) -> int:
    total, done = bench.conn.hmget(keys.task_stats(task_id), [keys.province_stat(province, "leaves_total"),
                                                              keys.province_stat(province, "leaves_done")])
    return int(total or 0) - int(done or 0)


def _follow(bench: Bench, requests: Requests, job_id: str, province: str, killed: float, killed_wall: float) -> Run:
    """Wait for the upstream's next request for the province; then read where the time went from the job's
    record: its abandoned-job failure, its requeue (enqueued_at) and its new start (started_at)."""
    prefix = f"/regions/{province[:2]}"
    seen = 0
    deadline = killed + RESUME_TIMEOUT
    while time.monotonic() < deadline:
        chunk = requests[seen:]
        seen += len(chunk)
        hit = next((t for t, path in chunk if t > killed and prefix in path), None)
        if hit is not None:
            job = Job.fetch(job_id, connection=bench.conn, serializer=JSONSerializer)
            failed = [r.created_at.timestamp() for r in job.results() if r.type == Result.Type.FAILED]
            return Run(round(hit - killed, 2), _after(min(failed, default=None), killed_wall),
                       _after(job.enqueued_at, killed_wall), _after(job.started_at, killed_wall), province, 0, 0)
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"province {province} was not resumed within {RESUME_TIMEOUT:.0f} s of the kill")


def _after(moment: datetime | float | None, killed_wall: float) -> float | None:
    """Seconds from the kill to `moment` (RQ's naive UTC datetimes, or an epoch), if it came after it."""
    if moment is None:
        return None
    ts = moment if isinstance(moment, float) else moment.replace(tzinfo=UTC).timestamp()
    return round(ts - killed_wall, 2) if ts >= killed_wall else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="the quick sizes (20,000 hospitals), 2 runs each")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--latency-ms", type=float, default=None, help="per upstream request (default: the size's)")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="REFRESHQ_UPSTREAM_CONCURRENCY")
    parser.add_argument("--scale", type=int, default=None)
    args = parser.parse_args()
    sizes = choose(args.quick, args.scale, None)
    with Bench() as bench:
        result = run(bench, sizes, args.runs, args.concurrency, args.latency_ms)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
