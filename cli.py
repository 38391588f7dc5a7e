"""The `refreshq` command: a thin click group that parses, calls the package and formats output."""

from __future__ import annotations

import logging
import signal
import sys

import click
import redis

from commands.runtime import Runtime, pass_runtime
from jobs.config import Settings
from jobs.errors import ConfigError, RefreshqError, ValidationError
from jobs.redact import RedactingFormatter, credential_parts, mask_url

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
# Libraries whose INFO lines are one per request (httpx logs every request with its URL: thousands
# per refresh); their per-request lines are for debugging only.
QUIET_LOGGERS = ("httpx", "httpcore")


def _setup_logging(settings: Settings) -> None:
    """INFO to stderr, every line scrubbed of URL credentials and of the configured secrets."""
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter(LOG_FORMAT, secrets=_secrets(settings)))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _secrets(settings: Settings) -> list[str | None]:
    urls = (settings.redis_url, settings.upstream_url, settings.llm_base_url)
    return [settings.upstream_token, settings.llm_api_key, settings.web_password,
            *(part for url in urls for part in credential_parts(url))]


def _load_task_modules(settings: Settings) -> None:
    """Import REFRESHQ_TASK_MODULES now: a bad one stops the process (exit 2) instead of failing every run."""
    from jobs.named.catalog import configured_tasks

    configured_tasks(settings)


@click.group()
@click.version_option(package_name="refreshq")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """refreshq: crash-safe, resumable refresh jobs on RQ and Redis."""
    ctx.obj = Runtime(Settings.from_env())


@cli.group(invoke_without_command=True)
@click.pass_context
def server(ctx: click.Context) -> None:
    """Run the embedded Valkey server in the foreground (or: server url | server stop)."""
    if ctx.invoked_subcommand is not None:
        return
    from jobs.server import EmbeddedServer

    settings = ctx.find_object(Runtime).settings  # type: ignore[union-attr]
    if settings.redis_url:
        raise ConfigError("REDIS_URL is set: refreshq uses that server and runs no embedded one")
    embedded = EmbeddedServer(settings.data_dir)
    click.echo(f"refreshq: embedded server at {embedded.url}", err=True)
    sys.exit(embedded.run_foreground())


@server.command("url")
@click.option("--reveal", is_flag=True, help="Print a password in the URL instead of ***.")
@pass_runtime
def server_url(rt: Runtime, reveal: bool) -> None:
    """Print the URL of the server in use (starting the embedded one if needed)."""
    from jobs.connection import server_url as url_of

    url = url_of(rt.settings)
    click.echo(url if reveal else mask_url(url))


@server.command("stop")
@pass_runtime
def server_stop(rt: Runtime) -> None:
    """Stop the embedded server, flushing its data to disk."""
    from jobs.server import EmbeddedServer

    if rt.settings.redis_url:
        raise ConfigError("REDIS_URL is set: there is no embedded server to stop")
    stopped = EmbeddedServer(rt.settings.data_dir).stop()
    click.echo("stopped" if stopped else "not running")


@cli.command()
@click.option("--queue", "-q", "queue_names", multiple=True, help="Queue to drain (repeatable); default: all.")
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option("--name", default=None, help="Worker name (default: generated).")
@pass_runtime
def worker(rt: Runtime, queue_names: tuple[str, ...], burst: bool, name: str | None) -> None:
    """Run a worker on refreshq's queues (JSON-serialized jobs)."""
    from jobs import queues, shutdown
    from workers import build_worker

    shutdown.install_stop_handlers()  # until the worker's own handlers take over
    _setup_logging(rt.settings)
    _load_task_modules(rt.settings)
    w = build_worker(rt.process_conn(), queue_names or queues.ALL_QUEUES, name=name)
    if shutdown.requested.is_set():
        return  # stopped while starting, before anything was registered
    w.work(burst=burst, with_scheduler=False)


@cli.command("scheduler")
@pass_runtime
def scheduler_command(rt: Runtime) -> None:
    """Run the scheduler (one active instance; others stand by)."""
    from jobs import shutdown
    from scheduler import Scheduler, default_duties

    shutdown.install_stop_handlers()  # until the scheduler's own handlers take over
    _setup_logging(rt.settings)
    _load_task_modules(rt.settings)
    process = Scheduler(rt.process_conn(), default_duties(rt.settings))
    process.install_signal_handlers()
    if shutdown.requested.is_set():
        process.stop()
    process.run()


@cli.command()
@click.option("--host", envvar="REFRESHQ_WEB_HOST", default="127.0.0.1", show_default=True)
@click.option("--port", envvar="PORT", type=click.IntRange(1, 65535), default=5000, show_default=True)
@pass_runtime
def web(rt: Runtime, host: str, port: int) -> None:
    """Serve the API (/api/v1), the live pages (/) and rq-dashboard (/rq)."""
    from jobs import shutdown
    from jobs.connection import server_url as url_of
    from web.app import check_exposure, create_app
    from web.server import listen

    def stop(_signum: int, _frame: object) -> None:
        shutdown.requested.set()
        raise SystemExit(0)  # waitress closes its sockets on SystemExit, then waits <= 5 s for its threads

    signal.signal(signal.SIGTERM, stop)
    _setup_logging(rt.settings)
    check_exposure(rt.settings, host)
    app = create_app(rt.settings, url_of(rt.settings))
    server = listen(app, host, port, rt.settings.web_streams)
    click.echo(f"refreshq: pages on http://{host}:{port}/, API on /api/v1, dashboard on http://{host}:{port}/rq/",
               err=True)
    server.run()


@cli.command()
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


def _register() -> None:
    from commands.data import data
    from commands.demo import demo
    from commands.failed import failed
    from commands.refresh import COMMANDS
    from commands.schedule import schedule_group
    from commands.tasks import tasks_group
    from commands.tokens import tokens_group
    from commands.upstream import upstream

    for command in [*COMMANDS, data, upstream, demo, failed, tasks_group, schedule_group, tokens_group]:
        cli.add_command(command)


_register()


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (ConfigError, ValidationError) as exc:
        click.echo(f"refreshq: error: {exc}", err=True)
        sys.exit(2)
    except RefreshqError as exc:
        click.echo(f"refreshq: error: {exc}", err=True)
        sys.exit(1)
    except redis.ConnectionError as exc:
        # The server was reachable when the command started (jobs/connection.py checks it) and went away.
        click.echo(f"refreshq: error: lost the connection to Redis: {exc}", err=True)
        sys.exit(1)
    except redis.RedisError as exc:
        click.echo(f"refreshq: error: Redis failed: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
