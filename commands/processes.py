"""The long-running processes of the Procfile: `refreshq worker`, `refreshq scheduler`, `refreshq web`."""

from __future__ import annotations

import signal

import click

from commands.runtime import Runtime, pass_runtime, start_process


@click.command()
@click.option("--queue", "-q", "queue_names", multiple=True, help="Queue to drain (repeatable); default: all.")
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option("--name", default=None, help="Worker name (default: generated).")
@pass_runtime
def worker(rt: Runtime, queue_names: tuple[str, ...], burst: bool, name: str | None) -> None:
    """Run a worker on refreshq's queues (refresh jobs and named-task runs, JSON-serialized)."""
    from jobs import queues, shutdown
    from workers import build_worker

    start_process(rt.settings, load_tasks=True)
    w = build_worker(rt.process_conn(), queue_names or queues.ALL_QUEUES, name=name, settings=rt.settings)
    if shutdown.requested.is_set():
        return  # stopped while starting, before anything was registered
    w.work(burst=burst, with_scheduler=False)


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
    from web.server import listen

    host, port = host or rt.settings.web_host, port or rt.settings.port

    def stop(_signum: int, _frame: object) -> None:
        shutdown.requested.set()
        raise SystemExit(0)  # waitress closes its sockets on SystemExit, then waits <= 5 s for its threads

    signal.signal(signal.SIGTERM, stop)
    start_process(rt.settings, load_tasks=False, stop_handlers=False)
    check_exposure(rt.settings, host)
    app = create_app(rt.settings, url_of(rt.settings))
    server = listen(app, host, port, rt.settings.web_streams)
    click.echo(f"refreshq: pages on http://{host}:{port}/, API on /api/v1, dashboard on http://{host}:{port}/rq/",
               err=True)
    server.run()

