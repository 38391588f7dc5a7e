"""Scenario 1 (and the counters of scenario 4): a full refresh through the HTTP API vs the fetch floor.

The floor and the refresh run one after the other against the same upstream process in the same
run, so the ratio between them holds even on a busy machine. The refresh is timed from the
create call to the moment the task record says SUCCEEDED (polled every 50 ms); workers are
started and registered before the clock starts, as they would be in production.

Both run four times in the same run: against the sample with its own ids (H110101000123, which carry
their leaf's code: the staging script's fast path), and against a second upstream process serving the
same records with opaque ids (a uuid's hex digits, `refreshq upstream serve --id-format opaque`), as
most real directories' are, in the order coded, opaque, opaque, coded. The first run of each format is
reported whole (the opaque one under "opaque"), every run's times under "runs", and the ratios of the
formats' means under "opaque_vs_coded".
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import redis

from bench import cpu_time, orchestration_cost, profile
from bench.harness import Bench, Upstream, stats_delta
from bench.measure import rate
from bench.sizes import Sizes
from bench.worker_memory import MemorySampler
from jobs import keys
from jobs.config import LimitSettings, PacingSettings
from jobs.redis_values import as_text
from jobs.refresh.manager import SyncTaskManager
from jobs.statuses import TERMINAL

POLL_SECONDS = 0.05
SAMPLED_LEAVES = 100  # leaf hashes read back to measure the average record size


def run_floor(
    bench: Bench, upstream: Upstream, processes: int, concurrency: int, province: str | None
) -> dict[str, Any]:
    """The fetch floor, one process per worker: timed from the first shard's start to the last's end."""
    before, cpu_before = upstream.stats(), cpu_time.snapshot(bench.conn, {"upstream": [upstream.proc.pid]})
    outs = [bench.root / f"floor-{i}.json" for i in range(processes)]
    procs = [
        bench.spawn(f"floor-{i}", [
            sys.executable, "-m", "bench.fetch_floor", "--url", upstream.url, "--concurrency", str(concurrency),
            "--shard", str(i), "--shards", str(processes), "--out", str(out),
            *(["--province", province] if province else []),
        ])
        for i, out in enumerate(outs)
    ]
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=1800))
        except subprocess.TimeoutExpired:
            codes.append(-1)
        bench.stop(proc, grace=1)
    if any(codes):
        raise RuntimeError(f"the fetch floor failed ({codes}); see {bench.logs}")
    shards = [json.loads(out.read_text()) for out in outs]
    seconds = max(s["ended_at"] for s in shards) - min(s["started_at"] for s in shards)
    cpu = cpu_time.delta(cpu_before, cpu_time.snapshot(bench.conn, {"upstream": [upstream.proc.pid]}), seconds)
    cpu["floor"] = round(sum(s["cpu_seconds"] for s in shards), 1)
    cpu["total"] = round(cpu["total"] + cpu["floor"], 1)
    return {
        "seconds": round(seconds, 3),
        "processes": processes,
        "concurrency_per_process": concurrency,
        **{k: sum(s[k] for s in shards) for k in ("requests", "records", "leaves", "bytes")},
        "upstream_requests": stats_delta(before, upstream.stats()),
        "cpu_seconds": cpu,
    }


def wait_terminal(
    bench: Bench, task_id: str, timeout: float, workers: list[subprocess.Popen[bytes]]
) -> tuple[str, int]:
    """Poll the task's status field (one cheap HGET) until it ends; (status, polls made)."""
    polls = 0
    deadline = time.monotonic() + timeout
    while True:
        polls += 1
        status = as_text(bench.conn.hget(keys.task(task_id), "status") or b"")
        if status in TERMINAL:
            return status, polls
        if time.monotonic() > deadline:
            raise RuntimeError(f"the refresh is still {status} after {timeout:.0f} s; see {bench.logs}")
        if all(w.poll() is not None for w in workers):
            raise RuntimeError(f"every worker exited during the refresh; see {bench.logs}")
        time.sleep(POLL_SECONDS)


def _wait_lazy_free(bench: Bench, timeout: float = 10.0) -> None:
    """Until the server has freed what the task's end unlinked (its id set and strings, freed aside): the
    memory figures are of the data, not of what is being freed."""
    deadline = time.monotonic() + timeout
    while int(bench.conn.info("memory").get("lazyfree_pending_objects", 0)) and time.monotonic() < deadline:
        time.sleep(0.05)


def _leaf_keys(conn: redis.Redis, task_id: str) -> list[bytes]:
    # Staged data of this task (its version) in every province: data:<province>@<task_id>:leaf:<code>
    pattern = f"{keys.PREFIX}data:*@{task_id}:leaf:*"
    return sorted(conn.scan_iter(match=pattern, count=1000))


def record_sizes(conn: redis.Redis, task_id: str) -> dict[str, Any]:
    """Average compact JSON bytes of a stored record, and what the data keys alone take in Redis."""
    leaf_keys = _leaf_keys(conn, task_id)
    step = max(1, len(leaf_keys) // SAMPLED_LEAVES)
    sampled: list[int] = []
    for key in leaf_keys[::step]:
        stored = cast(bytes | None, conn.get(key))  # a leaf: JSON lines
        sampled += [len(value) for value in (stored or b"").split(b"\n")]
    with conn.pipeline(transaction=False) as pipe:
        for key in leaf_keys:
            pipe.memory_usage(key, samples=0)  # samples=0: measure it all, not an estimate
        data_bytes = sum(int(n or 0) for n in pipe.execute())
    return {
        "json_bytes_avg": round(sum(sampled) / len(sampled), 1) if sampled else 0.0,
        "json_records_sampled": len(sampled),
        "data_keys": len(leaf_keys),
        "data_key_bytes": data_bytes,
    }


def run(bench: Bench, upstream: Upstream, sizes: Sizes, profile_dir: Path | None = None) -> dict[str, Any]:
    """The floor and the refresh with the sample's ids (`upstream`) and with opaque ones, in the order coded,
    opaque, opaque, coded (ABBA: a load that rises or falls during the run weighs on both alike). The first
    run of each is reported whole; the comparisons are of each format's means."""
    opaque_upstream = bench.start_upstream(sizes.scale, sizes.latency_ms, id_format="opaque")
    try:
        runs: list[tuple[str, dict[str, Any]]] = []
        for id_format in ID_ORDER:
            source = upstream if id_format == "coded" else opaque_upstream
            first = all(f != id_format for f, _ in runs)
            where = profile_dir / id_format if profile_dir and first else None
            runs.append((id_format, run_one(bench, source, sizes, where)))
    finally:
        opaque_upstream.close()
        bench.stop(opaque_upstream.proc, grace=2)
    coded = next(r for f, r in runs if f == "coded")
    opaque = next(r for f, r in runs if f == "opaque")
    return {**coded, "id_format": "coded", "opaque": {**opaque, "id_format": "opaque"},
            "runs": [_summary(f, r) for f, r in runs], "opaque_vs_coded": compare(runs)}


ID_ORDER = ("coded", "opaque", "opaque", "coded")


def _summary(id_format: str, run: dict[str, Any]) -> dict[str, Any]:
    return {"id_format": id_format, "floor_seconds": run["floor"]["seconds"], "seconds": run["refresh"]["seconds"],
            "ratio_to_floor": run["refresh"]["ratio_to_floor"], "status": run["refresh"]["status"],
            "cpu_seconds": run["refresh"]["cpu_seconds"]}


def compare(runs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The opaque runs' mean figures as ratios to the coded runs' means."""
    def mean(id_format: str, *path: str) -> float:
        values = []
        for f, run in runs:
            value: Any = run
            for key in path:
                value = value[key]
            if f == id_format:
                values.append(float(value))
        return sum(values) / len(values)

    def ratio(*path: str) -> float | None:
        theirs = mean("coded", *path)
        return round(mean("opaque", *path) / theirs, 3) if theirs else None

    return {
        "runs_each": len(runs) // 2,
        "coded_seconds": round(mean("coded", "refresh", "seconds"), 2),
        "opaque_seconds": round(mean("opaque", "refresh", "seconds"), 2),
        "coded_ratio_to_floor": round(mean("coded", "refresh", "ratio_to_floor"), 3),
        "opaque_ratio_to_floor": round(mean("opaque", "refresh", "ratio_to_floor"), 3),
        "refresh_seconds": ratio("refresh", "seconds"),
        "floor_seconds": ratio("floor", "seconds"),
        "ratio_to_floor": ratio("refresh", "ratio_to_floor"),
        "worker_cpu_seconds": ratio("refresh", "cpu_seconds", "workers"),
        "upstream_cpu_seconds": ratio("refresh", "cpu_seconds", "upstream"),
        "server_cpu_seconds": ratio("refresh", "cpu_seconds", "server"),
        "commands_per_leaf": ratio("orchestration", "commands_per_leaf"),
    }


def run_one(bench: Bench, upstream: Upstream, sizes: Sizes, profile_dir: Path | None = None) -> dict[str, Any]:
    """The fetch floor, then a refresh, against one upstream, from an empty server."""
    bench.flush()
    floor = run_floor(bench, upstream, sizes.workers, max(1, sizes.concurrency // sizes.workers), sizes.province)
    workers = bench.start_workers(sizes.workers, "refresh", sizes.concurrency)
    settings = bench.settings(pacing=PacingSettings(concurrency=sizes.concurrency),
                              limits=LimitSettings(max_pending=10**6))
    manager = SyncTaskManager(settings, bench.conn, upstream={"kind": "http", "url": upstream.url})
    measured = _measure(bench, upstream, sizes, manager, workers, profile_dir)
    for worker in workers:
        bench.stop(worker)
    return _report(bench, manager, sizes, floor, measured)


def _measure(
    bench: Bench, upstream: Upstream, sizes: Sizes, manager: SyncTaskManager, workers: list[Any],
    profile_dir: Path | None,
) -> dict[str, Any]:
    """One refresh from the create call to its end, with everything sampled around it."""
    profiler = None
    if profile_dir is not None and profile.available():
        profiler = profile.WorkerProfiler(bench, [w.pid for w in workers], profile_dir)
        time.sleep(1)  # let py-spy attach before the clock starts
    upstream_before, server_before = upstream.stats(), orchestration_cost.snapshot(bench.conn)
    cpu_groups = {"workers": [w.pid for w in workers], "upstream": [upstream.proc.pid]}
    cpu_before = cpu_time.snapshot(bench.conn, cpu_groups)
    with MemorySampler([w.pid for w in workers]) as memory:
        started = time.perf_counter()
        if sizes.province:
            task_id = manager.create_province_refresh_task(sizes.province)
        else:
            task_id = manager.create_full_refresh_task()
        final, polls = wait_terminal(bench, task_id, sizes.refresh_timeout, workers)
        seconds = time.perf_counter() - started
    _wait_lazy_free(bench)
    server_after, upstream_after = orchestration_cost.snapshot(bench.conn), upstream.stats()
    return {
        "task_id": task_id, "final": final, "polls": polls, "seconds": seconds, "memory": memory.results(),
        "cpu": cpu_time.delta(cpu_before, cpu_time.snapshot(bench.conn, cpu_groups), seconds),
        "profile": profiler.stop() if profiler is not None else None,
        "upstream": (upstream_before, upstream_after), "server": (server_before, server_after),
    }


def _report(
    bench: Bench, manager: SyncTaskManager, sizes: Sizes, floor: dict[str, Any], m: dict[str, Any]
) -> dict[str, Any]:
    status = manager.get_task_status(m["task_id"])
    records = int(status["statistics"]["hospitals_found"])
    leaves = int((status.get("result") or {}).get("leaves", 0))
    sizes_info = record_sizes(bench.conn, m["task_id"])
    server_before, server_after = m["server"]
    used = server_after.used_memory - server_before.used_memory
    json_bytes = float(sizes_info["json_bytes_avg"])
    seconds = m["seconds"]
    refresh = {
        "status": m["final"],
        "seconds": round(seconds, 2),
        "records": records,
        "leaves": leaves,
        "records_per_second": rate(records, seconds),
        "upstream_requests": stats_delta(*m["upstream"]),
        "ratio_to_floor": round(seconds / floor["seconds"], 3) if floor["seconds"] else None,
        "task": f"province {sizes.province}" if sizes.province else "full",
        "workers": sizes.workers,
        "upstream_concurrency": sizes.concurrency,
        "worker_memory": m["memory"],
        "cpu_seconds": m["cpu"],
        "peak_worker_rss_mb": max((w["peak_rss_mb"] for w in m["memory"]), default=0.0),
    }
    redis_memory = {
        **sizes_info,
        "used_memory_delta": used,
        "bytes_per_record": round(used / records, 1) if records else None,
        "bytes_per_record_vs_json": round(used / records / json_bytes, 3) if records and json_bytes else None,
        "data_key_bytes_per_record": round(sizes_info["data_key_bytes"] / records, 1) if records else None,
    }
    return {
        "floor": floor,
        "refresh": refresh,
        "redis_memory": redis_memory,
        "orchestration": orchestration_cost.cost(server_before, server_after, leaves, records, json_bytes, m["polls"]),
        "profile": m["profile"],
    }
