"""Refresh commands: `refreshq refresh full | province | list | status | cancel | resume | cleanup`.

The reference design's top-level verbs (`refreshq list`, `status`, `cancel`, `resume`, `cleanup`) are
aliases of the group's (cli.py, commands.aliases)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from commands.display import print_status, watch
from commands.runtime import Runtime, parse_age_days, pass_runtime
from jobs.refresh.records import SORT_FIELDS
from jobs.statuses import SUCCEEDED, TERMINAL
from jobs.statuses import TASK_STATUSES as STATUSES
from jobs.upstream.identity import label


@click.group()
def refresh() -> None:
    """Refreshes: start one (of the whole directory or of one province), list, show, cancel, resume, clean up."""


def _follow(rt: Runtime, task_id: str, wait: bool, as_json: bool) -> None:
    """Print the new task's id (with --json: one JSON object, {"task_id": ...} or the final status)."""
    if not wait:
        click.echo(json.dumps({"task_id": task_id}) if as_json else task_id)
        return
    if as_json:
        click.echo(f"refreshq: refresh {task_id}", err=True)  # stdout holds the one JSON document only
    else:
        click.echo(task_id)
    status = watch(rt.manager(), task_id)
    if as_json:
        click.echo(json.dumps(status, ensure_ascii=False))
    else:
        click.echo(f"{status['status']}: {status.get('current_step') or ''}")
    sys.exit(0 if status["status"] == SUCCEEDED else 1)


@refresh.command("full")
@click.option("--wait", is_flag=True, help="Follow the refresh to its end; exit 0 only if it succeeded.")
@click.option("--json", "as_json", is_flag=True,
              help='One JSON object on stdout: {"task_id": ...}, with --wait the final status.')
@pass_runtime
def refresh_full(rt: Runtime, wait: bool, as_json: bool) -> None:
    """Refresh every province."""
    _follow(rt, rt.manager().create_full_refresh_task(), wait, as_json)


@refresh.command("province")
@click.argument("name_or_code")
@click.option("--wait", is_flag=True, help="Follow the refresh to its end; exit 0 only if it succeeded.")
@click.option("--json", "as_json", is_flag=True,
              help='One JSON object on stdout: {"task_id": ...}, with --wait the final status.')
@pass_runtime
def refresh_province(rt: Runtime, name_or_code: str, wait: bool, as_json: bool) -> None:
    """Refresh one province, by name (广东省, 广东) or code (440000)."""
    _follow(rt, rt.manager().create_province_refresh_task(name_or_code), wait, as_json)


@refresh.command("status")
@click.argument("task_id")
@click.option("--watch", "follow", is_flag=True, help="Draw live progress bars until the refresh ends.")
@click.option("--json", "as_json", is_flag=True, help="Print the status dict as one JSON object.")
@pass_runtime
def status(rt: Runtime, task_id: str, follow: bool, as_json: bool) -> None:
    """Show a refresh's status."""
    manager = rt.manager()
    if follow:
        final = watch(manager, task_id)
        if as_json:
            click.echo(json.dumps(final, ensure_ascii=False))
        return
    print_status(manager.get_task_status(task_id), as_json)


@refresh.command("list")
@click.option("--status", "status_", type=click.Choice(STATUSES), default=None)
@click.option("--page", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--page-size", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--sort", "sort_by", type=click.Choice(SORT_FIELDS), default="created_at", show_default=True)
@click.option("--order", type=click.Choice(["asc", "desc"]), default="desc", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def list_refreshes(
    rt: Runtime, status_: str | None, page: int, page_size: int, sort_by: str, order: str, as_json: bool
) -> None:
    """List refreshes, newest first."""
    result = rt.manager().list_tasks(status_, page, page_size, sort_by, order)
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False))
        return
    click.echo(f"{result['total']} refreshes, page {page}")
    for item in result["items"]:
        click.echo(_row(item))


def _row(item: dict[str, Any]) -> str:
    upstream = label(item["upstream"]) if item.get("upstream") else "-"
    return (
        f"{item['task_id']}  {item['status']:<9} {item['progress']:>3}%  {item['created_at']}  "
        f"{item['hospital_name']}  {item['statistics']['hospitals_found']} hospitals  {upstream}"
    )


@refresh.command("cancel")
@click.argument("task_id")
@pass_runtime
def cancel(rt: Runtime, task_id: str) -> None:
    """Cancel a refresh: a queued one never starts, a running one stops within seconds (checkpoint kept)."""
    manager = rt.manager()
    if not manager.cancel_task(task_id):
        current = manager.get_task_status(task_id)["status"]
        click.echo(f"refreshq: refresh {task_id} is already {current}; nothing to cancel", err=True)
        sys.exit(1)
    click.echo(f"cancelling {task_id}")


@refresh.command("resume")
@click.argument("task_id")
@pass_runtime
def resume(rt: Runtime, task_id: str) -> None:
    """Continue a FAILED or CANCELLED refresh from its checkpoint."""
    rt.manager().resume_task(task_id)
    click.echo(f"resumed {task_id}")


@refresh.command("cleanup")
@click.option("--older-than", "older_than", default="7d", show_default=True, help="Age, e.g. 7d, 12h, 30m.")
@click.option(
    "--status", "statuses", type=click.Choice(TERMINAL), multiple=True, help="Repeatable; default: all ended."
)
@pass_runtime
def cleanup(rt: Runtime, older_than: str, statuses: tuple[str, ...]) -> None:
    """Delete ended refreshes' records (and their checkpoints) older than an age."""
    count = rt.manager().cleanup_old_tasks(parse_age_days(older_than), list(statuses) or None)
    click.echo(f"removed {count} refreshes")

