"""Scenario 2, beside list_tasks: the metrics report, the health check and a /metrics scrape (over HTTP,
from a `refreshq web` process) with the same 100,000 task records stored.

The records are a realistic history, made by the real task-status scripts at chosen times (bench/observe_seed):
30 days of refreshes, one in ten a full one, about 2% failed and 1% cancelled, a few running, some
pending; so the indexes, hourly sums and run lists the reports read are full, and the reports must not
read the records themselves.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from bench.harness import LOOPBACK, REFRESHQ, Bench, free_port
from bench.measure import summary_ms, timed
from bench.observe_seed import FakeRun, queue_fake_run
from jobs.config import Settings
from jobs.observe import report
from jobs.statuses import CANCELLED, FAILED, SUCCEEDED

SEED_BATCH = 1_000
DAYS = 30
RUNNING, PENDING = 5, 200
PROVINCES = [f"{code}0000" for code in (11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44,
                                        45, 46, 50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82)]


def _run(i: int, count: int, now: float) -> FakeRun:
    """The i-th of `count` runs, oldest first; the newest ones running, then pending."""
    task_id = f"task_hist_{i:07d}"
    kind = "full" if i % 10 == 0 else "province"
    created = now - DAYS * 86_400 * (count - i) / count
    if i >= count - PENDING:
        return FakeRun(task_id, kind, created)
    wait, run = 5 + i % 55, (1800 if kind == "full" else 60) + i % 1800
    started = created + wait
    if i >= count - PENDING - RUNNING:
        return FakeRun(task_id, kind, now - 900, now - 800, hospitals=400_000, progress=40)
    status = FAILED if i % 50 == 7 else CANCELLED if i % 97 == 3 else SUCCEEDED
    hospitals = 1_000_000 if kind == "full" else 30_000
    return FakeRun(task_id, kind, created, started, min(started + run, now - 1), status, hospitals,
                   PROVINCES[i % len(PROVINCES)])


def seed_history(bench: Bench, count: int) -> float:
    """Store `count` task records with their whole history; return the seconds it took."""
    now, started = time.time(), time.perf_counter()
    for first in range(0, count, SEED_BATCH):
        with bench.conn.pipeline(transaction=False) as pipe:
            for i in range(first, min(first + SEED_BATCH, count)):
                queue_fake_run(pipe, _run(i, count, now))
            pipe.execute()
    return time.perf_counter() - started


def _scrapes(bench: Bench, calls: int) -> dict[str, Any]:
    port = free_port()
    web = bench.spawn("web", [*REFRESHQ, "web", "--host", LOOPBACK, "--port", str(port)])
    base = f"http://{LOOPBACK}:{port}"
    try:
        with httpx.Client(timeout=30) as client:
            def up() -> bool:
                try:
                    return client.get(f"{base}/healthz").status_code == 200
                except httpx.HTTPError:
                    return False

            bench.wait_for(up, 60, "refreshq web", [web])
            sizes, latencies = [], []
            for _ in range(calls):
                took, response = timed(lambda: client.get(f"{base}/metrics"))
                response.raise_for_status()
                latencies.append(took)
                sizes.append(len(response.content))
    finally:
        bench.stop(web, grace=5)
    return {**summary_ms(latencies), "bytes": max(sizes)}


def run(bench: Bench, settings: Settings, calls: int) -> dict[str, Any]:
    """The three reads, each `calls` times, against what is stored now (seed_history first)."""
    conn = bench.conn
    metrics = [timed(lambda: report.metrics_report(conn, settings, "24h"))[0] for _ in range(calls)]
    week = [timed(lambda: report.metrics_report(conn, settings, "7d"))[0] for _ in range(calls)]
    health = [timed(lambda: report.health_report(conn, settings))[0] for _ in range(calls)]
    performance = [timed(lambda: report.performance_report(conn, settings))[0] for _ in range(calls)]
    data = report.metrics_report(conn, settings, "all")
    return {
        "metrics_report_24h": summary_ms(metrics),
        "metrics_report_7d": summary_ms(week),
        "health_report": summary_ms(health),
        "performance_report": summary_ms(performance),
        "metrics_scrape_http": _scrapes(bench, calls),
        "tasks_seen": data["tasks"],
    }
