"""`refreshq dead-letters`: the dead-letter registry (jobs the retry sweeper gave up on). `refreshq failed`
is its alias (cli.py)."""

from __future__ import annotations

import json

import click

from commands.runtime import Runtime, pass_runtime
from jobs.duties import dead_letters


@click.group("dead-letters")
def dead_letters_group() -> None:
    """Dead letters, jobs that failed for good: list, show, retry (from the checkpoint) or purge them."""


@dead_letters_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def list_failed(rt: Runtime, as_json: bool) -> None:
    """List the dead letters."""
    entries = dead_letters.list_dead(rt.conn)
    if as_json:
        click.echo(json.dumps(entries, ensure_ascii=False))
        return
    for e in entries:
        click.echo(f"{e['job_id']}  {e['kind']:<9} attempts {e['attempts']}  task {e.get('task_id') or '-'}  "
                   f"{e['last_error']}")
    click.echo(f"{len(entries)} dead jobs")


@dead_letters_group.command("show")
@click.argument("job_id")
@pass_runtime
def show_failed(rt: Runtime, job_id: str) -> None:
    """Show a dead letter: why it failed, its arguments and traceback."""
    click.echo(json.dumps(dead_letters.show_dead(rt.conn, job_id), ensure_ascii=False, indent=2))


@dead_letters_group.command("retry")
@click.argument("job_id")
@pass_runtime
def retry_failed(rt: Runtime, job_id: str) -> None:
    """Run a dead letter again (a refresh continues from its checkpoint)."""
    click.echo(dead_letters.retry_dead(rt.conn, job_id, rt.settings))


@dead_letters_group.command("purge")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_runtime
def purge_failed(rt: Runtime, yes: bool) -> None:
    """Delete every dead letter."""
    if not yes:
        click.confirm("Delete every dead job?", abort=True)
    click.echo(f"purged {dead_letters.purge_dead(rt.conn)} dead jobs")
