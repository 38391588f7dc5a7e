"""`refreshq info`: the server in use, queues with their counts, workers."""

from __future__ import annotations

import click

from commands.runtime import Runtime, pass_runtime


@click.command()
@pass_runtime
def info(rt: Runtime) -> None:
    """Show the server in use, queues with their counts, and workers."""
    from jobs.info import collect_info

    report = collect_info(rt.settings, rt.conn)
    click.echo(f"server: {report.server}")
    click.echo("queues:")
    for q in report.queues:
        click.echo(
            f"  {q.name:<9} queued {q.queued:>6}  started {q.started:>4}  failed {q.failed:>5}  "
            f"finished {q.finished:>6}"
        )
    click.echo(f"workers: {len(report.workers)}")
    for w in report.workers:
        click.echo(f"  {w}")
