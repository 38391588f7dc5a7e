"""Scenario 2: status reads while a full refresh runs, and listing with 100,000 task records stored.

`get_task_status` is called in this process back to back (with a short pause) so each sample is one
round trip; `GET /api/v1/refreshes/{id}` on a real `refreshq web` the same way, with 50 event streams
of the task open (bench/http_status.py); `refreshq status --json` is run as a user runs it, a fresh
process each time, so its figure includes interpreter start-up and imports. They are measured one
after the other, not at once, so neither one's CPU inflates the other's numbers. The same refresh is then cancelled
(scenario 3).
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from bench import cancel_latency, http_status, observe_latency
from bench.harness import REFRESHQ, Bench, Upstream
from bench.measure import rate, summary_ms, timed
from bench.sizes import Sizes
from jobs import keys
from jobs.config import LimitSettings, PacingSettings
from jobs.redis_values import as_text
from jobs.refresh.manager import SyncTaskManager
from jobs.statuses import RUNNING, SUCCEEDED

LATENCY_THRESHOLD_MS = 5


def probe_api(manager: SyncTaskManager, task_id: str, seconds: float, interval: float) -> dict[str, Any]:
    """get_task_status back to back with a PING: the PING's latency is what the machine (scheduling, the
    server's own load) adds to any round trip at that moment, refreshq or not.

    The two go in turns, one first and then the other: the second call of a pair finds the server (and
    this process) just woken by the first, and is faster at the tail, so a PING always sent second would
    be a baseline the status read never gets. Each call's figures keep which place it had."""
    status: dict[bool, list[float]] = {True: [], False: []}  # by whether the call went first
    pings: dict[bool, list[float]] = {True: [], False: []}
    deadline, first = time.monotonic() + seconds, True
    while time.monotonic() < deadline:
        if first:
            status[True].append(timed(lambda: manager.get_task_status(task_id))[0])
            pings[False].append(timed(manager.conn.ping)[0])
        else:
            pings[True].append(timed(manager.conn.ping)[0])
            status[False].append(timed(lambda: manager.get_task_status(task_id))[0])
        first = not first
        time.sleep(interval)
    result = {**summary_ms(status[True] + status[False]), "ping": summary_ms(pings[True] + pings[False])}
    # The absolute p99 under load is the saturated machine's: the figure to judge is the ratio to the
    # p99 of the PINGs sent at the same moments.
    ping_p99 = result["ping"]["p99_ms"]
    result["p99_vs_ping_p99"] = round(result["p99_ms"] / ping_p99, 2) if ping_p99 else None
    result["by_place"] = {
        place: {"get_task_status": summary_ms(status[went_first]), "ping": summary_ms(pings[went_first])}
        for place, went_first in (("first", True), ("second", False))
    }
    return result


def probe_cli(bench: Bench, task_id: str, calls: int) -> dict[str, Any]:
    env = bench.env()
    latencies: list[float] = []
    for _ in range(calls):
        took, done = timed(lambda: subprocess.run(
            [*REFRESHQ, "status", "--json", task_id], env=env, capture_output=True, timeout=60, check=False,
        ))
        if done.returncode != 0:
            raise RuntimeError(f"refreshq status failed: {done.stderr.decode(errors='replace')[-500:]}")
        json.loads(done.stdout)  # the output a script would parse
        latencies.append(took)
    return summary_ms(latencies)


def _status(bench: Bench, task_id: str) -> str:
    return as_text(bench.conn.hget(keys.task(task_id), "status") or b"")


def _leaves_done(bench: Bench, task_id: str) -> int:
    return int(bench.conn.hget(keys.task_stats(task_id), "leaves_done") or 0)


def _reset_latency_monitor(bench: Bench) -> None:
    # Valkey's latency monitor records events (slow commands, AOF writes, forks) above the threshold,
    # which tells a slow server from a slow client when a p99 is high.
    bench.conn.config_set("latency-monitor-threshold", LATENCY_THRESHOLD_MS)
    bench.conn.latency_reset()


def _latency_events(bench: Bench) -> dict[str, dict[str, int]]:
    """Server-side stalls above the threshold while the probes ran: event -> latest and max ms."""
    events = bench.conn.latency_latest() or []
    bench.conn.config_set("latency-monitor-threshold", 0)
    return {as_text(e[0]): {"latest_ms": int(e[2]), "max_ms": int(e[3])} for e in events}


def run_under_load(bench: Bench, upstream: Upstream, sizes: Sizes) -> dict[str, Any]:
    """Start a full refresh; once leaves are flowing, probe the status, then cancel the task."""
    bench.flush()
    workers = bench.start_workers(sizes.workers, "refresh", sizes.load_concurrency)
    settings = bench.settings(pacing=PacingSettings(concurrency=sizes.load_concurrency),
                              limits=LimitSettings(max_pending=10**6))
    manager = SyncTaskManager(settings, bench.conn, upstream={"kind": "http", "url": upstream.url})
    with http_status.web(bench) as (url, headers):
        try:
            task_id = manager.create_full_refresh_task()
            bench.wait_for(lambda: _leaves_done(bench, task_id) > 0, 300, "the refresh to stage leaves", workers)
            _reset_latency_monitor(bench)
            api = probe_api(manager, task_id, sizes.api_seconds, sizes.api_interval)
            server_stalls = _latency_events(bench)
            before = manager.get_task_status(task_id)["progress"]
            http = http_status.measure(url, headers, task_id, sizes.api_seconds, sizes.api_interval)
            # Whether the refresh ran through the HTTP probe too (it comes after the in-process one).
            http.update(progress_span=[before, manager.get_task_status(task_id)["progress"]],
                        running_at_end=_status(bench, task_id) == RUNNING)
            cli = probe_cli(bench, task_id, sizes.cli_calls)
            running = _status(bench, task_id) == RUNNING
            progress = manager.get_task_status(task_id)["progress"]
            cancel = cancel_latency.at_progress(bench, manager, upstream, task_id, sizes.quiet_seconds, workers)
        finally:
            for worker in workers:
                bench.stop(worker)
        # The same reads with nothing running: the side-by-side baseline of the figures under load.
        api_idle = probe_api(manager, task_id, sizes.api_seconds / 2, sizes.api_interval)
        # Streams of a task that stays PENDING (no worker runs now): they stay open through the probe.
        waiting = manager.create_full_refresh_task()
        http_idle = http_status.measure(url, headers, task_id, sizes.api_seconds / 2, sizes.api_interval, waiting)
    cli_idle = probe_cli(bench, task_id, max(1, sizes.cli_calls // 4))
    return {
        "status": {
            "get_task_status": api,
            "get_task_status_idle": api_idle,
            "refreshq_status_json": cli,
            "refreshq_status_json_idle": cli_idle,
            "http_get_refresh": http,
            "http_get_refresh_idle": http_idle,
            "http_verdicts": http_status.verdicts(http, http_idle, api),
            "server_stalls_during_probes": server_stalls,
            "refresh_running_throughout": running,
            "progress_at_cancel": progress,
            "upstream_concurrency": sizes.load_concurrency,
        },
        "cancel": cancel,
    }


def run_list(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    """list_tasks page 1 (default page size, newest first) with `list_records` records stored, and beside
    it the observability reads (bench/observe_latency.py) on the same records: a history of refreshes."""
    bench.flush()
    memory_before = int(bench.conn.info("memory")["used_memory"])
    seeded = observe_latency.seed_history(bench, sizes.list_records)
    memory_after = int(bench.conn.info("memory")["used_memory"])
    settings = bench.settings(limits=LimitSettings(max_pending=10**6))
    manager = SyncTaskManager(settings, bench.conn)
    latencies: list[float] = []
    for _ in range(sizes.list_calls):
        took, page = timed(lambda: manager.list_tasks(page=1))
        latencies.append(took)
    assert page["total"] == sizes.list_records, page["total"]
    filtered = [timed(lambda: manager.list_tasks(status=SUCCEEDED, page=1))[0] for _ in range(sizes.list_calls)]
    return {
        "records": sizes.list_records,
        "seed_seconds": round(seeded, 2),
        "seed_records_per_second": rate(sizes.list_records, seeded),
        "redis_bytes_per_task_record": round((memory_after - memory_before) / max(1, sizes.list_records), 1),
        "page1": summary_ms(latencies),
        "page1_status_filter": summary_ms(filtered),
        "observe": observe_latency.run(bench, settings, sizes.list_calls),
    }
