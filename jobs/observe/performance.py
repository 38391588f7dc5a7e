"""Performance per task type (full refreshes, province refreshes, each named task) over its last 200 runs,
read from the bounded run lists written as runs end, with the issues the reference design names.

Run times (from each run's start) and hospitals per second are over the runs that succeeded; the queue
wait (from enqueueing to start) over every run that started; the success rate over the runs that
succeeded or failed (a cancelled refresh is neither).
"""

from __future__ import annotations

from typing import Any

import redis

from jobs.config import Settings
from jobs.observe import outcomes as run_lists
from jobs.observe.metrics import iso

SLOW_MEAN_SECONDS = 3600.0
MIN_SUCCESS_RATE = 95.0
MIN_RECORDS_PER_SECOND = 1.0


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-share * len(ordered) // 1))))
    return ordered[rank - 1]


def _seconds(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "mean": round(sum(values) / len(values), 3), "min": round(min(values), 3), "max": round(max(values), 3),
        "p50": round(percentile(values, 0.50), 3), "p95": round(percentile(values, 0.95), 3),
    }


def summarize(kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of one kind from its run summaries (newest first)."""
    succeeded = [r for r in items if r["status"] == "SUCCEEDED"]
    decided = [r for r in items if r["status"] in ("SUCCEEDED", "FAILED")]
    runs = [float(r["run_seconds"]) for r in succeeded if r.get("run_seconds") is not None]
    waits = [float(r["queue_wait_seconds"]) for r in items if r.get("queue_wait_seconds") is not None]
    refresh = kind in run_lists.REFRESH_KINDS
    rates = [r["records"] / r["run_seconds"] for r in succeeded if refresh and r.get("run_seconds")]
    return {
        "kind": kind,
        "runs": len(items),
        "succeeded": len(succeeded),
        "failed": sum(1 for r in items if r["status"] == "FAILED"),
        "cancelled": sum(1 for r in items if r["status"] == "CANCELLED"),
        "success_rate": round(100.0 * len(succeeded) / len(decided), 2) if decided else None,
        "run_seconds": _seconds(runs),
        "queue_wait_seconds_mean": round(sum(waits) / len(waits), 3) if waits else None,
        "hospitals_per_second": {"mean": round(sum(rates) / len(rates), 2), "best": round(max(rates), 2)}
        if rates else None,
        "newest_run_ended_at": iso(items[0].get("ended_ts")) if items else None,
    }


def issues_of(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The reference design's checks: mean run over an hour (warning), success below 95% (error), under one
    hospital per second (warning)."""
    kind, found = row["kind"], []
    seconds, rate, speed = row["run_seconds"], row["success_rate"], row["hospitals_per_second"]
    if seconds is not None and seconds["mean"] > SLOW_MEAN_SECONDS:
        found.append({"type": "slow_execution", "kind": kind, "severity": "warning", "value": seconds["mean"],
                      "message": f"{kind}: mean run time {seconds['mean'] / 3600:.1f} h"})
    if rate is not None and rate < MIN_SUCCESS_RATE:
        found.append({"type": "low_success_rate", "kind": kind, "severity": "error", "value": rate,
                      "message": f"{kind}: success rate {rate:.2f}%"})
    if speed is not None and speed["mean"] < MIN_RECORDS_PER_SECOND:
        found.append({"type": "low_efficiency", "kind": kind, "severity": "warning", "value": speed["mean"],
                      "message": f"{kind}: {speed['mean']:.2f} hospitals per second"})
    return found


def performance_report(conn: redis.Redis, settings: Settings) -> dict[str, Any]:
    """{"kinds": [per-kind figures], "issues": [...], "runs_per_kind": 200}."""
    kinds = run_lists.run_kinds(conn)
    rows = [summarize(kind, items) for kind, items in run_lists.recent_runs(conn, kinds).items()]
    return {
        "runs_per_kind": run_lists.RUN_LIST_LENGTH,
        "kinds": rows,
        "issues": [issue for row in rows for issue in issues_of(row)],
    }
