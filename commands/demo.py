"""`refreshq demo`: local workers, a full refresh of the built-in sample, live progress, a summary.

Ctrl-C or SIGTERM cancels the task, stops the workers and exits 130 / 143. The workers run in
sessions of their own, so a terminal's Ctrl-C reaches the demo alone and the demo stops things in
order: the task first (while the workers can still see the cancel), then the workers, then itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from types import FrameType

import click

from commands.display import watch
from commands.runtime import Runtime, pass_runtime
from jobs.config import MAX_SAMPLE_SCALE
from jobs.connection import server_url
from jobs.redact import mask_url
from jobs.refresh.manager import SyncRefreshManager
from jobs.statuses import TERMINAL
from jobs.upstream.identity import UPSTREAM_VARIABLES
from web.wsgi import Background

DEMO_SCALE = 1_000_000
# Seconds the workers get to see a cancel and end the task, and then to stop (their warm shutdown).
CANCEL_WAIT = 10.0
WORKER_STOP_WAIT = 15.0


class _Stop:
    """The stop signals received: the first asks for an orderly stop, a second for a quick one."""

    def __init__(self) -> None:
        self.signals: list[int] = []

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self.signals.append(signum)  # only recorded: the main loop acts at its next tick

    @property
    def hurried(self) -> bool:
        return len(self.signals) > 1


class _Interrupted(Exception):
    """Raised inside the demo's loop when a stop signal has arrived."""


def _start_workers(count: int, log_dir: Path) -> list[subprocess.Popen[bytes]]:
    log_dir.mkdir(parents=True, exist_ok=True)
    workers = []
    # The demo refreshes the built-in sample: its workers are configured for no upstream, whatever this
    # shell holds (workers configured for one would refuse the demo's task; see jobs.upstream.identity).
    env = {k: v for k, v in os.environ.items() if k not in UPSTREAM_VARIABLES}
    for i in range(count):
        log = open(log_dir / f"demo-worker-{i + 1}.log", "ab")  # noqa: SIM115 - owned by the child
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "cli", "worker", "--queue", "refresh"], stdout=log, stderr=log,
            stdin=subprocess.DEVNULL, start_new_session=True, env=env,
        ))
    return workers


def _children(pid: int) -> list[int]:
    """A process's children (a worker's work-horses), where /proc tells."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _stop_workers(workers: list[subprocess.Popen[bytes]], stop: _Stop) -> None:
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)  # warm shutdown: the running job checkpoints and requeues
    deadline = time.monotonic() + WORKER_STOP_WAIT
    for w in workers:
        while w.poll() is None and time.monotonic() < deadline and not stop.hurried:
            time.sleep(0.05)
        if w.poll() is None:
            # A work-horse has a process group of its own: killing the worker alone would orphan it.
            for pid in [*_children(w.pid), w.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        w.wait()


def _cancel(manager: SyncRefreshManager, task_id: str, stop: _Stop) -> None:
    name = signal.Signals(stop.signals[0]).name
    manager.cancel_task(task_id)
    click.echo(f"refreshq demo: {name}: cancelling task {task_id}", err=True)
    deadline = time.monotonic() + CANCEL_WAIT
    status = manager.get_task_status(task_id)["status"]
    while status not in TERMINAL and time.monotonic() < deadline and not stop.hurried:
        time.sleep(0.1)
        status = manager.get_task_status(task_id)["status"]
    if status in TERMINAL:
        click.echo(f"refreshq demo: task {task_id} {status}", err=True)
    else:
        click.echo(f"refreshq demo: task {task_id} still {status}; it stops at its next safe point", err=True)


@click.command()
@click.option("--scale", type=click.IntRange(0, MAX_SAMPLE_SCALE), default=DEMO_SCALE, show_default=True,
              help="Sample hospitals.")
@click.option("--workers", "worker_count", type=click.IntRange(1, 16), default=2, show_default=True)
@click.option("--web", "with_web", is_flag=True, help="Also serve the pages and print the refresh page's URL.")
@click.option("--port", envvar="PORT", type=click.IntRange(1, 65535), default=5000, show_default=True,
              help="Port of the pages with --web (on 127.0.0.1).")
@pass_runtime
def demo(rt: Runtime, scale: int, worker_count: int, with_web: bool, port: int) -> None:
    """Refresh the built-in sample directory with local workers and watch it live (--web: in a browser too)."""
    stop = _Stop()
    web = _start_web(rt, port) if with_web else None
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = _run(rt, scale, worker_count, stop, None if web is None else f"http://127.0.0.1:{port}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if web is not None:
            web.stop()
    if code:
        sys.exit(code)


def _start_web(rt: Runtime, port: int) -> Background:
    """The web process's app on 127.0.0.1 in this process (loopback: no password needed)."""
    from web.app import create_app
    from web.wsgi import listen

    return Background(listen(create_app(rt.settings, server_url(rt.settings)), "127.0.0.1", port,
                             rt.settings.web.streams)).start()


def _run(rt: Runtime, scale: int, worker_count: int, stop: _Stop, web_url: str | None = None) -> int:
    click.echo(f"server: {mask_url(server_url(rt.settings))}")
    log_dir = rt.settings.server.data_dir / "logs"
    workers = _start_workers(worker_count, log_dir)
    click.echo(f"started {worker_count} workers (logs in {log_dir})")
    manager = SyncRefreshManager(rt.settings, rt.conn, upstream={"kind": "sample", "scale": scale})
    task_id: str | None = None

    def on_tick() -> None:
        if stop.signals:
            raise _Interrupted
        if all(w.poll() is not None for w in workers):
            raise click.ClickException(f"the demo workers exited; see {log_dir}")

    try:
        on_tick()
        task_id = manager.create_full_refresh_task()
        if web_url is not None:
            click.echo(f"watch it in a browser: {web_url}/refreshes/{task_id}")
        started = time.monotonic()
        final = watch(manager, task_id, out=sys.stdout, on_tick=on_tick)
        seconds = time.monotonic() - started
    except _Interrupted:
        if task_id is not None:
            _cancel(manager, task_id, stop)
        return 128 + stop.signals[0]
    finally:
        _stop_workers(workers, stop)
        if stop.signals:
            click.echo("refreshq demo: workers stopped", err=True)
    _summary(final, seconds)
    return 0 if final["status"] == "SUCCEEDED" else 1


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
    click.echo("  refreshq web            # then open http://127.0.0.1:5000/ (pages) or /rq/ (RQ jobs)")
