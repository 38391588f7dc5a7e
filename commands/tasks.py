"""Named-task commands: `refreshq tasks list | run | history`."""

from __future__ import annotations

import json
from typing import Any

import click

from commands.runtime import FiniteFloat, Runtime, pass_runtime
from jobs.errors import TaskArgumentsError

MAX_WAIT = 30 * 86_400  # --timeout: a month is already longer than any task's time limit


def parse_args_option(text: str | None) -> tuple[list[Any], dict[str, Any]]:
    """`--args`: a JSON array (positional arguments) or a JSON object (keyword arguments)."""
    if text is None:
        return [], {}
    shown = repr(text) if len(text) <= 200 else repr(text[:200]) + "..."
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise TaskArgumentsError(f"--args {shown} is not valid JSON: {exc}") from None
    except RecursionError:
        raise TaskArgumentsError(f"--args {shown} is nested too deeply") from None
    if isinstance(value, list):
        return value, {}
    if isinstance(value, dict):
        return [], value
    raise TaskArgumentsError(f"--args {shown}: expected a JSON array (positional) or object (keyword arguments)")


@click.group("tasks")
def tasks() -> None:
    """Named tasks: list them, run one, show the history of its attempts."""


@tasks.command("list")
@click.option("--category", default=None, help="Only tasks of this category.")
@click.option("--tag", default=None, help="Only tasks with this tag.")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def list_named(rt: Runtime, category: str | None, tag: str | None, as_json: bool) -> None:
    """List the named tasks (from REFRESHQ_TASK_MODULES)."""
    from jobs.named.catalog import configured_tasks, summary

    rows = [summary(d) for d in configured_tasks(rt.settings).select(category, tag)]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    for r in rows:
        schedule = r["default_schedule"] or "-"
        click.echo(f"{r['name']:<16} {r['priority']:<8} {r['category']:<12} {schedule:<34} {r['description']}")
    if not rows:
        click.echo("no tasks")


@tasks.command("run")
@click.argument("name")
@click.option("--args", "args_json", default=None, help='JSON array or object, e.g. \'{"older_than_days": 3}\'.')
@click.option("--wait", is_flag=True, help="Wait for the result (a worker must be running); exit 1 if it failed.")
@click.option("--timeout", type=FiniteFloat(0, MAX_WAIT), default=600, show_default=True, help="Seconds to --wait.")
@pass_runtime
def run(rt: Runtime, name: str, args_json: str | None, wait: bool, timeout: float) -> None:
    """Run a named task now on a worker; prints its run id (and with --wait its result)."""
    from jobs.named import runs
    from jobs.named.catalog import configured_tasks

    definition = configured_tasks(rt.settings).get(name)
    args, kwargs = parse_args_option(args_json)
    run_id = runs.enqueue_task(rt.conn, definition, args, kwargs, modules=rt.settings.server.task_modules)
    click.echo(run_id)
    if wait:
        result = runs.get_result(run_id, timeout=timeout, conn=rt.conn)
        click.echo(json.dumps(result, ensure_ascii=False))


@tasks.command("history")
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Full records (with tracebacks) as one JSON object.")
@pass_runtime
def history_command(rt: Runtime, name: str, limit: int, offset: int, as_json: bool) -> None:
    """Show a named task's attempts, newest first."""
    from jobs.named import history
    from jobs.named.catalog import configured_tasks

    configured_tasks(rt.settings).get(name)
    total, entries = history.page(rt.conn, name, limit, offset)
    if as_json:
        click.echo(json.dumps({"task": name, "total": total, "offset": offset, "items": entries}, ensure_ascii=False))
        return
    shown = f"{offset + 1}-{offset + len(entries)}" if entries else "none"
    click.echo(f"{name}: {total} attempts (showing {shown})")
    for e in entries:
        click.echo(_history_line(e))


def _history_line(e: dict[str, Any]) -> str:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from jobs.named.triggers import DEFAULT_TIMEZONE

    # Shown in refreshq's default timezone, like the schedules' times (--json keeps UTC).
    started = datetime.fromtimestamp(e["started_ts"], ZoneInfo(DEFAULT_TIMEZONE)).isoformat(timespec="seconds")
    duration = f"{e['duration']:.3f} s" if e.get("duration") is not None else "-"
    outcome = e.get("result") if e["status"] == "SUCCEEDED" else e.get("error") or ""
    retry = " (will retry)" if e.get("retrying") else ""
    return (f"{started}  {e['status']:<9} {duration:>9}  attempt {e['attempt']}  {e['trigger']:<24} "
            f"{e['job_id']}  {outcome or ''}{retry}")

