"""`refreshq upstream serve`: the sample directory over the Directory HTTP API."""

from __future__ import annotations

import errno
import socket

import click

from commands.runtime import FiniteFloat
from jobs.config import MAX_SAMPLE_SCALE
from jobs.errors import ConfigError
from jobs.upstream.synth import ID_FORMATS

MAX_LATENCY_MS = 600_000.0  # ten minutes: beyond any client timeout
# What binding a listening socket fails with: the port is taken, the address is not this machine's,
# or the port is privileged.
_BIND_ERRORS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)


@click.group()
def upstream() -> None:
    """Tools around the upstream directory."""


@upstream.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8700, show_default=True)
@click.option("--scale", type=click.IntRange(0, MAX_SAMPLE_SCALE), default=1_000_000, show_default=True,
              help="Total hospitals.")
@click.option("--id-format", type=click.Choice(ID_FORMATS), default="coded", show_default=True,
              help="Hospital ids: 'coded' carry their leaf's code (H110101000123), 'opaque' are uuid-shaped.")
@click.option("--latency-ms", type=FiniteFloat(0, MAX_LATENCY_MS), default=0.0, show_default=True)
@click.option("--fail-rate", type=FiniteFloat(0, 1), default=0.0, show_default=True, help="Share of 503s.")
@click.option("--rate-429", type=FiniteFloat(0, 1), default=0.0, show_default=True)
@click.option("--invalid-json-rate", type=FiniteFloat(0, 1), default=0.0, show_default=True)
@click.option("--hang-rate", type=FiniteFloat(0, 1), default=0.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def serve(
    host: str, port: int, scale: int, id_format: str, latency_ms: float, fail_rate: float, rate_429: float,
    invalid_json_rate: float, hang_rate: float, seed: int,
) -> None:
    """Serve the built-in sample over HTTP (for demos, tests and benchmarks)."""
    from jobs.upstream.serve import serve_forever

    click.echo(f"refreshq: sample directory (scale {scale}, {id_format} ids) at http://{host}:{port}/v1", err=True)
    try:
        serve_forever(
            host=host, port=port, scale=scale, id_format=id_format, latency_ms=latency_ms, fail_rate=fail_rate,
            rate_429=rate_429, invalid_json_rate=invalid_json_rate, hang_rate=hang_rate, seed=seed,
        )
    except OSError as exc:
        if exc.errno not in _BIND_ERRORS and not isinstance(exc, socket.gaierror):
            raise
        reason = exc.strerror or exc
        raise ConfigError(f"cannot listen on {host}:{port}: {reason} (choose another with --port)") from None
