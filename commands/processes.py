"""The long-running processes of the Procfile: `refreshq worker`, `refreshq scheduler`, `refreshq web`."""

from __future__ import annotations

import signal
from typing import Any

import click

from commands.runtime import Runtime, pass_runtime, start_process
from jobs.errors import ValidationError
from jobs.workforce import MAX_PROCESSES


@click.command()
@click.option("--queue", "-q", "queue_names", multiple=True, help="Queue to drain (repeatable); default: all.")
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option("--name", default=None, help="Worker name (default: generated; not with a pool).")
@click.option("--processes", "-n", type=click.IntRange(1, MAX_PROCESSES), default=None,
              help="Run a pool of N workers: a dead one is restarted; `refreshq workers scale` resizes it.")
@click.option("--pool", "pool_name", default=None,
              help="Pool name (implies a pool; default: <host>-worker, or <host>-fast with --fast).")
@click.option("--fast", is_flag=True,
              help="Fast mode for named tasks: no fork per job, batched bookkeeping (not the refresh queue).")
@pass_runtime
def worker(rt: Runtime, queue_names: tuple[str, ...], burst: bool, name: str | None, processes: int | None,
           pool_name: str | None, fast: bool) -> None:
    """Run a worker on refreshq's queues (refresh jobs and named-task runs, JSON-serialized), or a pool of them."""
    from jobs import shutdown
    from jobs.workforce import check_queues

    names = check_queues(queue_names) or _default_queues(fast)
    if processes is not None or pool_name is not None:
        if name is not None:
            raise ValidationError("--name names one worker: a pool names its workers <pool>.<id>")
        _run_pool(rt, names, processes or 1, pool_name, fast, burst)
        return
    start_process(rt.settings, load_tasks=True)
    w = _build(rt, names, name, fast)
    if shutdown.requested.is_set():
        return  # stopped while starting, before anything was registered
    w.work(burst=burst, with_scheduler=False)


def _default_queues(fast: bool) -> tuple[str, ...]:
    from jobs import queues
    from workers.fast import FAST_QUEUES

    return FAST_QUEUES if fast else queues.ALL_QUEUES


def _build(rt: Runtime, names: tuple[str, ...], name: str | None, fast: bool) -> Any:
    if fast:
        from workers.fast import build_fast_worker

        return build_fast_worker(rt.process_conn(), names, name=name, settings=rt.settings)
    from workers import build_worker

    return build_worker(rt.process_conn(), names, name=name, settings=rt.settings)


def _run_pool(rt: Runtime, names: tuple[str, ...], processes: int, pool_name: str | None, fast: bool,
              burst: bool) -> None:
    from jobs import queues
    from workers import preload_job_modules
    from workers.pool import PoolSpec, RefreshqPool, default_pool_name

    if fast and queues.REFRESH in names:
        raise ValidationError("the refresh queue needs the forking worker: run the pool without --fast for it")
    start_process(rt.settings, load_tasks=True)
    preload_job_modules()  # once, before the forks: every worker starts warm
    spec = PoolSpec(pool_name or default_pool_name(fast), names, processes, fast, rt.settings, burst)
    RefreshqPool(rt.process_conn(), spec).start(burst=burst)


@click.command()
@pass_runtime
def scheduler(rt: Runtime) -> None:
    """Run the scheduler (one active instance; others stand by)."""
    from jobs import shutdown
    from scheduler import Scheduler, default_duties

    start_process(rt.settings, load_tasks=True)
    process = Scheduler(rt.process_conn(), default_duties(rt.settings))
    process.install_signal_handlers()
    if shutdown.requested.is_set():
        process.stop()
    process.run()


@click.command()
@click.option("--host", default=None, help="Address to listen on  [default: REFRESHQ_WEB_HOST, else 127.0.0.1]")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port  [default: PORT, else 5000]")
@pass_runtime
def web(rt: Runtime, host: str | None, port: int | None) -> None:
    """Serve the API (/api/v1), the live pages (/) and rq-dashboard (/rq)."""
    from jobs import shutdown
    from jobs.connection import server_url as url_of
    from web.app import check_exposure, create_app
    from web.wsgi import limits, listen

    host, port = host or rt.settings.web.host, port or rt.settings.web.port

    def stop(_signum: int, _frame: object) -> None:
        shutdown.requested.set()
        raise SystemExit(0)  # waitress closes its sockets on SystemExit, then waits <= 5 s for its threads

    signal.signal(signal.SIGTERM, stop)
    start_process(rt.settings, load_tasks=False, stop_handlers=False)
    check_exposure(rt.settings, host)
    app = create_app(rt.settings, url_of(rt.settings))
    server = listen(app, host, port, rt.settings.web.streams, trust_proxy=rt.settings.web.trust_proxy > 0)
    click.echo(f"refreshq: pages on http://{host}:{port}/, API on /api/v1, dashboard on http://{host}:{port}/rq/",
               err=True)
    bounds = limits(server)
    click.echo(f"refreshq: up to {bounds['connections']:,} connections (idle ones closed after "
               f"{bounds['idle_seconds']} s), {bounds['threads']} threads, bodies up to "
               f"{bounds['max_body_bytes']:,} bytes", err=True)
    server.run()

