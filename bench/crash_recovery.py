"""Time from SIGKILL of a worker (and its work-horse) to its refresh job running again elsewhere.

`python -m bench.crash_recovery [--runs N]` — a province refresh on a private server and a slow
loopback upstream, a standby worker and the scheduler; the busy worker is killed mid-job and the
seconds until the same RQ job is started again on the standby are reported (median and max).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from bench.worker_memory import children
from jobs import keys
from jobs.config import Settings
from jobs.connection import connect
from jobs.redis_values import as_texts
from jobs.refresh.manager import SyncTaskManager
from jobs.server import EmbeddedServer
from jobs.upstream.serve import start_background

REFRESHQ = str(Path(sys.executable).parent / "refreshq")


# Every process this script starts, killed at the end however it ends.
_SPAWNED: list[subprocess.Popen[bytes]] = []


def _spawn(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([REFRESHQ, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    _SPAWNED.append(proc)
    return proc


def _kill_all() -> None:
    for proc in _SPAWNED:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        time.sleep(0.05)


def one_run(env: dict[str, str], settings: Settings, upstream_url: str) -> float:
    conn = connect(settings)
    manager = SyncTaskManager(settings, conn, upstream={"kind": "http", "url": upstream_url})
    busy = _spawn(env, "worker", "--queue", "refresh")
    task_id = manager.create_province_refresh_task("广东省")
    _wait(lambda: int(conn.hget(keys.task_stats(task_id), "leaves_done") or 0) >= 10, 60)
    _spawn(env, "worker", "--queue", "refresh")  # the standby that resumes the job
    [job_id] = [j for j in as_texts(conn.smembers(keys.task_jobs(task_id))) if "-p440000-" in j]
    time.sleep(1.0)  # the standby is up and idle
    horses = children(busy.pid)
    if not horses:
        raise RuntimeError("the province job ended before the kill; slow the upstream down")
    killed_at = time.time()
    os.killpg(busy.pid, signal.SIGKILL)
    for pid in horses:
        os.kill(pid, signal.SIGKILL)
    busy.wait()

    def restarted() -> bool:
        job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
        return job.get_status() == JobStatus.STARTED and job.started_at is not None and (
            job.started_at.timestamp() > killed_at
        )

    _wait(restarted, 120)
    seconds = time.time() - killed_at
    manager.cancel_task(task_id)
    _kill_all()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory(prefix="rqc", dir="/tmp", ignore_cleanup_errors=True) as data_dir:
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        env["REFRESHQ_DATA_DIR"] = data_dir
        env["REFRESHQ_UPSTREAM_CONCURRENCY"] = "2"  # slow enough to kill the job mid-way
        settings = Settings.from_env(env)
        server = EmbeddedServer(settings.data_dir)
        samples = []
        try:
            with start_background(300_000, latency_ms=100) as upstream:
                connect(settings).flushdb()
                for _ in range(runs):
                    _spawn(env, "scheduler")
                    samples.append(one_run(env, settings, upstream.url))
        finally:
            _kill_all()  # before the server stops, or a worker would restart it
            server.stop()
    print(f"kill -> resume: median {statistics.median(samples):.1f} s, max {max(samples):.1f} s "
          f"over {runs} runs ({', '.join(f'{s:.1f}' for s in samples)})")


if __name__ == "__main__":
    main()
