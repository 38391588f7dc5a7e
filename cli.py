"""The `refreshq` command: a thin click group. Settings are read here, once; each command group lives in
commands/ (one file per group, named after it) and calls the package."""

from __future__ import annotations

import sys

import click
import redis

from commands.runtime import Runtime
from jobs.config import Settings
from jobs.errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    RefreshqError,
    UnavailableError,
    UnsupportedRQError,
    UpstreamError,
    ValidationError,
    WorkFailedError,
    _EngineError,
)

# The one exit code of each way of handling an error (jobs.errors): 2, fix the command or the settings and run
# it again; 3, the server is away or refuses work for now, run it again later (`refreshq health` exits 3 then
# too); 1, it did not succeed.
EXIT_CODES: dict[type[RefreshqError], int] = {
    NotFoundError: 2,
    ValidationError: 2,
    ConfigError: 2,
    ConflictError: 1,
    UnavailableError: 3,
    UpstreamError: 1,
    WorkFailedError: 1,
    _EngineError: 1,
}
FAILED = 1  # any other error


def exit_code(error: BaseException) -> int:
    """The exit code of a command that ended with `error`; a Redis lost half-way is unavailable too."""
    code = next((code for base, code in EXIT_CODES.items() if isinstance(error, base)), None)
    if code is not None:
        return code
    if isinstance(error, redis.ConnectionError | redis.TimeoutError):
        return EXIT_CODES[UnavailableError]
    return FAILED


@click.group()
@click.version_option(package_name="refreshq")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """refreshq: crash-safe, resumable refresh jobs and named tasks on RQ and Redis."""
    ctx.obj = Runtime(Settings.from_env())


def _check_rq() -> None:
    """An rq outside the range refreshq is tested with is refused before any command module imports RQ."""
    from jobs.rqseam import gate  # the seam's package runs the same check when it is first imported

    gate.check()


def _register() -> None:
    from commands import (
        alerts,
        aliases,
        data,
        dead_letters,
        demo,
        info,
        observe,
        processes,
        refresh,
        schedule,
        server,
        tasks,
        tokens,
        upstream,
        workers,
    )

    for command in [
        server.server, processes.worker, processes.scheduler, processes.web, info.info, demo.demo,
        refresh.refresh, data.data, upstream.upstream, dead_letters.dead_letters_group, tasks.tasks, schedule.schedule,
        *observe.COMMANDS, alerts.alerts, tokens.tokens_group, workers.workers,
    ]:
        cli.add_command(command)
    # The reference design's verbs, and the dead-letter registry's previous name: aliases, marked in --help.
    for verb in ("list", "status", "cancel", "resume", "cleanup"):
        cli.add_command(aliases.alias(refresh.refresh.commands[verb], verb, f"refresh {verb}"))
    cli.add_command(aliases.alias(dead_letters.dead_letters_group, "failed", "dead-letters"))


try:
    _check_rq()
except UnsupportedRQError as exc:
    click.echo(f"refreshq: error: {exc}", err=True)
    sys.exit(exit_code(exc))
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
    except RefreshqError as exc:
        click.echo(f"refreshq: error: {exc}", err=True)
        sys.exit(exit_code(exc))
    except redis.ConnectionError as exc:
        # The server was reachable when the command started (jobs/connection.py checks it) and went away.
        click.echo(f"refreshq: error: lost the connection to Redis: {exc}", err=True)
        sys.exit(exit_code(exc))
    except redis.RedisError as exc:
        click.echo(f"refreshq: error: Redis failed: {exc}", err=True)
        sys.exit(exit_code(exc))


if __name__ == "__main__":
    main()
