"""`refreshq server`: the embedded Valkey server in the foreground, its URL, stopping it."""

from __future__ import annotations

import sys

import click

from commands.runtime import Runtime, pass_runtime
from jobs.errors import ConfigError
from jobs.redact import mask_url


@click.group(invoke_without_command=True)
@click.pass_context
def server(ctx: click.Context) -> None:
    """Run the embedded Valkey server in the foreground (or: server url | server stop)."""
    if ctx.invoked_subcommand is not None:
        return
    from jobs.embedded_server import EmbeddedServer

    settings = ctx.find_object(Runtime).settings  # type: ignore[union-attr]
    if settings.server.redis_url:
        raise ConfigError("REDIS_URL is set: refreshq uses that server and runs no embedded one")
    embedded = EmbeddedServer(settings.server.data_dir)
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
    from jobs.embedded_server import EmbeddedServer

    if rt.settings.server.redis_url:
        raise ConfigError("REDIS_URL is set: there is no embedded server to stop")
    stopped = EmbeddedServer(rt.settings.server.data_dir).stop()
    click.echo("stopped" if stopped else "not running")
