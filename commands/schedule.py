"""Schedule commands: `refreshq schedule list | add | remove | pause | resume | run-now`."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from commands.runtime import Runtime, pass_runtime
from commands.tasks import parse_args_option
from jobs.named.triggers import DEFAULT_TIMEZONE


@click.group("schedule")
def schedule() -> None:
    """Periodic runs of named tasks (cron in a timezone, or a fixed interval); the scheduler fires them."""


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def list_schedules(rt: Runtime, as_json: bool) -> None:
    """Show every schedule: trigger, next run, last run and its outcome, paused."""
    from jobs.named import schedules

    rows = [schedules.describe(rt.conn, name) for name in schedules.names(rt.conn)]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        click.echo("no schedules (the scheduler installs the tasks' defaults when it starts)")
        return
    click.echo(f"{'NAME':<16} {'TRIGGER':<34} {'NEXT RUN':<26} {'LAST RUN':<36} PAUSED")
    for r in rows:
        click.echo(f"{r['name']:<16} {r['trigger']:<34} {r['next_run'] or '-':<26} {_last_run(r):<36} "
                   f"{'yes' if r['paused'] else 'no'}")


def _last_run(row: dict[str, Any]) -> str:
    if not row["last_fire_at"]:
        return "never"
    status = row["last_run_status"] or ("skipped" if row["last_fire"].startswith("skipped") else "-")
    return f"{row['last_fire_at']} {status}"


@schedule.command("add")
@click.argument("name")
@click.option("--cron", default=None, help="5-field cron expression, e.g. '30 3 * * *'.")
@click.option("--interval", type=int, default=None, help="Seconds between runs.")
@click.option("--args", "args_json", default=None, help="JSON array or object of the task's arguments.")
@click.option("--timezone", default=DEFAULT_TIMEZONE, show_default=True, help="Timezone of --cron.")
@click.option("--max-instances", type=int, default=1, show_default=True, help="Runs of this schedule at once.")
@click.option("--misfire-grace-time", type=int, default=300, show_default=True,
              help="Seconds late a missed run may still start (e.g. after the scheduler was down).")
@click.option("--coalesce/--no-coalesce", default=True, show_default=True, help="Run missed runs once, not each.")
@pass_runtime
def add(
    rt: Runtime, name: str, cron: str | None, interval: int | None, args_json: str | None, timezone: str,
    max_instances: int, misfire_grace_time: int, coalesce: bool,
) -> None:
    """Schedule task NAME (replacing its schedule); without --cron/--interval, the task's default schedule."""
    from jobs.errors import ScheduleError
    from jobs.named import schedules
    from jobs.named.catalog import configured_tasks

    registry = configured_tasks(rt.settings)
    definition = registry.get(name)
    if cron is None and interval is None:
        if definition.schedule is None:
            raise ScheduleError(f"task {name} has no default schedule: give --cron EXPR or --interval SECONDS")
        schedule = schedules.default_schedule(definition)
        assert schedule is not None
    else:
        args, kwargs = parse_args_option(args_json)
        schedule = schedules.make_schedule(
            registry, name, cron=cron, interval=interval, timezone=timezone, args=args, kwargs=kwargs,
            max_instances=max_instances, misfire_grace_time=misfire_grace_time, coalesce=coalesce,
        )
    next_run = schedules.save(rt.conn, schedule, definition, time.time())
    when = _when(next_run, schedule.trigger.timezone)
    click.echo(f"scheduled {name}: {schedule.trigger.describe()}; next run {when}")


def _when(ts: float | None, timezone: str) -> str:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(ts, ZoneInfo(timezone)).isoformat(timespec="seconds") if ts else "-"


@schedule.command("remove")
@click.argument("name")
@pass_runtime
def remove(rt: Runtime, name: str) -> None:
    """Delete a schedule (a task default is not reinstalled; 'schedule add NAME' brings it back)."""
    from jobs.named import schedules

    schedules.remove(rt.conn, name)
    click.echo(f"removed schedule {name}")


@schedule.command("pause")
@click.argument("name")
@pass_runtime
def pause(rt: Runtime, name: str) -> None:
    """Stop firing a schedule until resumed (missed runs are not caught up)."""
    from jobs.named import schedules
    from jobs.named.catalog import configured_tasks

    schedules.set_paused(rt.conn, configured_tasks(rt.settings), name, True, time.time())
    click.echo(f"paused {name}")


@schedule.command("resume")
@click.argument("name")
@pass_runtime
def resume(rt: Runtime, name: str) -> None:
    """Fire a paused schedule again, from its next regular time."""
    from jobs.named import schedules
    from jobs.named.catalog import configured_tasks

    schedule = schedules.load(rt.conn, name)
    next_run = schedules.set_paused(rt.conn, configured_tasks(rt.settings), name, False, time.time())
    click.echo(f"resumed {name}; next run {_when(next_run, schedule.trigger.timezone)}")


@schedule.command("run-now")
@click.argument("name")
@pass_runtime
def run_now(rt: Runtime, name: str) -> None:
    """Enqueue one run of a schedule now (unless max_instances runs are still going); prints its id."""
    from jobs.duties import fire_schedules
    from jobs.named.catalog import configured_tasks

    fired = fire_schedules.run_now(rt.conn, configured_tasks(rt.settings), name)
    if not fired.job_ids:
        click.echo(f"refreshq: {name}: {fired.note}", err=True)
        sys.exit(1)
    click.echo(fired.job_ids[0])

