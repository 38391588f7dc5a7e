"""`refreshq metrics`, `refreshq health`, `refreshq performance`: the reports of jobs.observe, printed.

`health` exits 0 (ok), 1 (warning) or 3 (critical); a Redis it cannot reach is critical too. Bad input
exits 2, as everywhere.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import click
import redis

from commands.runtime import Runtime, pass_runtime
from jobs.errors import ServerRefusedError, ServerUnreachableError
from jobs.observe import report
from jobs.observe.health import CRITICAL, OK, WARNING, unreachable_report

HEALTH_EXIT = {OK: 0, WARNING: 1, CRITICAL: 3}


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min" if value < 7200 else f"{value / 3600:.1f} h"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"


def _active_line(task: dict[str, Any]) -> str:
    rate = f"  {task['records_per_second']:,.0f} records/s" if task.get("records_per_second") else ""
    eta = f"  eta {_seconds(task['eta_seconds'])}" if task.get("eta_seconds") is not None else ""
    if task["status"] == "RUNNING":
        timing = f"running {_seconds(task['running_seconds'])}"
    else:
        timing = f"waiting {_seconds(task.get('waiting_seconds'))}"
    return (f"  {task['task_id']}  {task['kind']}  {task['status']}  {task['progress']}%  {timing}{rate}{eta}\n"
            f"    {task.get('current_step') or ''}")


def metrics_text(data: dict[str, Any]) -> str:
    tasks = data["tasks"]
    window = "all time" if data["window"] == "all" else f"the last {data['window']} (since {data['since']})"
    lines = [
        f"refreshq metrics: {window}, at {data['generated_at']}",
        f"tasks: {tasks['total']} total, {tasks['pending']} pending, {tasks['running']} running, "
        f"{tasks['succeeded']} succeeded, {tasks['failed']} failed, {tasks['cancelled']} cancelled",
        f"success rate: {_percent(data['success_rate'])} (of those that succeeded or failed)",
        f"hospitals found: {data['hospitals_found']:,}",
        f"mean run time: {_seconds(data['mean_run_seconds'])} (succeeded: "
        f"{_seconds(data['mean_run_seconds_succeeded'])}; from each run's start, {data['runs_timed']} runs)",
        f"mean queue wait: {_seconds(data['mean_queue_wait_seconds'])}",
        f"active tasks: {data['active_total']}",
    ]
    return "\n".join(lines + [_active_line(t) for t in data["active_tasks"]])


@click.command()
@click.option("--window", type=click.Choice(list(report.WINDOWS)), default="24h", show_default=True,
              help="Count the refreshes that ended within it (pending and running ones: now).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_runtime
def metrics(rt: Runtime, window: str, as_json: bool) -> None:
    """Refreshes by status, success rate, hospitals, mean run time and queue wait, active refreshes."""
    data = report.metrics_report(rt.conn, rt.settings, window)
    click.echo(json.dumps(data, ensure_ascii=False) if as_json else metrics_text(data))


def _health_data(rt: Runtime) -> dict[str, Any]:
    try:
        return report.health_report(rt.conn, rt.settings)
    except (ServerUnreachableError, ServerRefusedError, redis.ConnectionError, redis.TimeoutError) as exc:
        return unreachable_report(str(exc), datetime.now(UTC).timestamp())


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_runtime
def health(rt: Runtime, as_json: bool) -> None:
    """Check the health rules; exit 0 ok, 1 warning, 3 critical (2: bad input)."""
    data = _health_data(rt)
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False))
    else:
        click.echo(f"health: {data['status']} at {data['timestamp']}")
        for issue in data["issues"]:
            click.echo(f"  [{issue['severity']}] {issue['rule']} {issue['subject']}: {issue['message']}")
    sys.exit(HEALTH_EXIT[data["status"]])


def performance_text(data: dict[str, Any]) -> str:
    lines = [f"performance per task type (the last {data['runs_per_kind']} runs of each)"]
    for row in data["kinds"]:
        run, speed = row["run_seconds"], row["hospitals_per_second"]
        lines.append(f"{row['kind']}: {row['runs']} runs, {row['succeeded']} succeeded, {row['failed']} failed, "
                     f"{row['cancelled']} cancelled; success rate {_percent(row['success_rate'])}")
        if run is not None:
            lines.append(f"  run time: mean {_seconds(run['mean'])}, min {_seconds(run['min'])}, max "
                         f"{_seconds(run['max'])}, p50 {_seconds(run['p50'])}, p95 {_seconds(run['p95'])}")
        lines.append(f"  queue wait: mean {_seconds(row['queue_wait_seconds_mean'])}")
        if speed is not None:
            lines.append(f"  hospitals/s: mean {speed['mean']:,.1f}, best {speed['best']:,.1f}")
    lines += [f"[{i['severity']}] {i['message']}" for i in data["issues"]]
    return "\n".join(lines)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_runtime
def performance(rt: Runtime, as_json: bool) -> None:
    """Per kind (full and province refreshes, each named task): how many ended, success rate, run time and
    queue wait apart, hospitals per second, issues."""
    data = report.performance_report(rt.conn, rt.settings)
    click.echo(json.dumps(data, ensure_ascii=False) if as_json else performance_text(data))


COMMANDS = [metrics, health, performance]
