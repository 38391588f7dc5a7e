"""`refreshq demo`: local workers, a full refresh of the built-in sample, live progress, a summary."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import click

from commands.display import watch
from commands.runtime import Runtime, pass_runtime
from jobs.config import MAX_SAMPLE_SCALE
from jobs.connection import server_url
from jobs.manager import SyncTaskManager
from jobs.redact import mask_url

DEMO_SCALE = 1_000_000


def _start_workers(count: int, log_dir: Path) -> list[subprocess.Popen[bytes]]:
    log_dir.mkdir(parents=True, exist_ok=True)
    workers = []
    for i in range(count):
        log = open(log_dir / f"demo-worker-{i + 1}.log", "ab")  # noqa: SIM115 - owned by the child
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "cli", "worker", "--queue", "refresh"], stdout=log, stderr=log,
            stdin=subprocess.DEVNULL,
        ))
    return workers


def _stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            w.wait(timeout=30)
        except subprocess.TimeoutExpired:
            w.kill()


@click.command()
@click.option("--scale", type=click.IntRange(0, MAX_SAMPLE_SCALE), default=DEMO_SCALE, show_default=True,
              help="Sample hospitals.")
@click.option("--workers", "worker_count", type=click.IntRange(1, 16), default=2, show_default=True)
@pass_runtime
def demo(rt: Runtime, scale: int, worker_count: int) -> None:
    """Refresh the built-in sample directory with local workers and watch it live."""
    click.echo(f"server: {mask_url(server_url(rt.settings))}")
    log_dir = rt.settings.data_dir / "logs"
    workers = _start_workers(worker_count, log_dir)
    click.echo(f"started {worker_count} workers (logs in {log_dir})")
    try:
        manager = SyncTaskManager(rt.settings, rt.conn, upstream={"kind": "sample", "scale": scale})
        task_id = manager.create_full_refresh_task()
        started = time.monotonic()

        def check_workers() -> None:
            if all(w.poll() is not None for w in workers):
                raise click.ClickException(f"the demo workers exited; see {log_dir}")

        final = watch(manager, task_id, out=sys.stdout, on_tick=check_workers)
        seconds = time.monotonic() - started
    finally:
        _stop_workers(workers)
    _summary(final, seconds)
    if final["status"] != "SUCCEEDED":
        sys.exit(1)


def _summary(final: dict[str, object], seconds: float) -> None:
    stats = final["statistics"]
    assert isinstance(stats, dict)
    records = int(stats["hospitals_found"])
    click.echo("")
    click.echo(f"{final['status']} in {seconds:.1f} s at {datetime.now():%H:%M:%S}")
    click.echo(f"  records   {records}")
    click.echo(f"  regions   {stats['provinces_processed']} provinces, {stats['cities_processed']} cities, "
               f"{stats['districts_processed']} districts")
    click.echo(f"  rate      {records / seconds if seconds else 0:,.0f} records/s")
    click.echo("")
    click.echo("Try next:")
    click.echo("  refreshq data show 广东省 --city 广州市")
    click.echo("  refreshq data stats")
    click.echo(f"  refreshq status {final['task_id']}")
    click.echo("  refreshq web            # then open http://127.0.0.1:5000/rq/")
