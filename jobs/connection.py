"""Connections: to REDIS_URL when set, otherwise to the embedded server, started on demand.

Every client is checked with one PING before it is handed out, so a server that cannot be reached,
wants other credentials or is not Redis at all stops a command within a second or two, with one
line naming the URL (password masked) and the cause. After that a command's client gives up on a
lost server within a second; a long-running process's (`patient=True`: worker, scheduler) waits
for it to come back, until the process is asked to stop (jobs/reconnect.py). The same for a server
that refuses writes for now (out of memory, a read-only replica, unable to persist): a command's
client fails at once with WritesRefusedError, and its reads work; a long-running process waits.
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.connection import UnixDomainSocketConnection

from jobs import shutdown
from jobs.config import Settings
from jobs.embedded_server import EmbeddedServer
from jobs.errors import ConfigError, RefreshqError, ServerRefusedError, ServerUnreachableError, WritesRefusedError
from jobs.queues import register_queues
from jobs.reconnect import COMMAND_RETRIES, Client, Outage, ServerRetry
from jobs.redact import mask_url

# Seconds to open a connection: a local or hosted Redis needs milliseconds, so one second is a
# generous bound and keeps a blackholed address from stalling a command.
CONNECT_TIMEOUT = 1.0
# Seconds the first PING may take: a port that accepts and never answers is not a Redis server.
CHECK_TIMEOUT = 1.5
# A long-running process's idle connections are PINGed after this many seconds before reuse.
_HEALTH_CHECK_INTERVAL = 30
# What CLIENT SETINFO reports, built once: left to redis-py >= 7.2, every new connection looks its version
# up with importlib.metadata (a scan of site-packages, ~1 ms of CPU), and a work-horse opens one per thread.
# Older redis-py has no redis.driver_info and looks the version up once, at import: nothing to pass there.
_DRIVER: dict[str, Any] = {}
try:
    from redis.driver_info import DriverInfo
except ImportError:  # redis-py < 7.2 (the declared floor is 5.0)
    pass
else:
    _DRIVER["driver_info"] = DriverInfo(name="redis-py", lib_version=redis.__version__)


class _EmbeddedConnection(UnixDomainSocketConnection):
    """A socket connection that restarts the embedded server when it finds it gone.

    redis-py reconnects by itself but cannot know that the server is ours to restart; doing it
    here means every refreshq process (worker, work-horse, scheduler, web) heals the same way.
    """

    server: EmbeddedServer

    def _connect(self) -> Any:
        try:
            return super()._connect()  # type: ignore[no-untyped-call]
        except OSError:
            if shutdown.requested.is_set():
                raise  # a process on its way out does not start a server
            try:
                self.server.ensure_running()
            except RefreshqError as exc:
                # A ConnectionError keeps the caller's retry policy in charge of what happens next.
                raise redis.ConnectionError(f"cannot restart the embedded server: {exc}") from exc
            return super()._connect()  # type: ignore[no-untyped-call]


def describe(settings: Settings) -> str:
    """The server in use, fit to print: REDIS_URL with its password masked, or the embedded socket."""
    if settings.server.redis_url:
        return mask_url(settings.server.redis_url)
    return EmbeddedServer(settings.server.data_dir).url


def server_url(settings: Settings) -> str:
    """The URL of the server in use, starting the embedded one if needed."""
    connect(settings).close()
    if settings.server.redis_url:
        return settings.server.redis_url
    return EmbeddedServer(settings.server.data_dir).url


def connect(settings: Settings, patient: bool = False) -> redis.Redis:
    """A client (bytes responses, as RQ needs), checked first: ServerUnreachableError if it cannot be reached now,
    ServerRefusedError if it refuses the credentials or is not a Redis server.

    `patient`: the client of a long-running process, which rides out an outage of any length.
    It also registers refreshq's queues, so RQ's own tools list them before any job exists.
    """
    probe = _client(settings, ServerRetry(0), socket_timeout=CHECK_TIMEOUT)
    try:
        _check(probe, settings)
    finally:
        probe.close()
    if patient:
        retry = ServerRetry(-1, Outage(describe(settings)))
        conn = _client(settings, retry, health_check_interval=_HEALTH_CHECK_INTERVAL, socket_keepalive=True)
    else:
        conn = _client(settings, ServerRetry(COMMAND_RETRIES, where=describe(settings)))
    # A long-running process waits here while writes are refused; a command goes on (its reads work, and
    # its writes say why they fail).
    with contextlib.suppress(WritesRefusedError):
        register_queues(conn)
    return conn


def _client(settings: Settings, retry: ServerRetry, **options: Any) -> redis.Redis:
    options = {"retry": retry, "socket_connect_timeout": CONNECT_TIMEOUT, **_DRIVER, **options}
    url = settings.server.redis_url
    if not (url or "").startswith(("redis://", "rediss://")):
        options.pop("socket_keepalive", None)  # a unix socket has no keepalive
    if url:
        try:
            return Client.from_url(url, **options)
        except ValueError as exc:
            # redis-py's message may quote a piece of a password that broke the parse.
            detail = "expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]" if "@" in url else str(exc)
            raise ConfigError(f"REDIS_URL={mask_url(url)!r} is not valid: {detail}") from None
    server = EmbeddedServer(settings.server.data_dir)
    server.ensure_running()
    connection_class = type("EmbeddedConnection", (_EmbeddedConnection,), {"server": server})
    pool = redis.ConnectionPool(connection_class=connection_class, path=str(server.socket_path), **options)
    return Client(connection_pool=pool)


def _check(conn: redis.Redis, settings: Settings) -> None:
    where = describe(settings)
    try:
        conn.ping()
    except redis.AuthenticationError as exc:
        raise ServerRefusedError(f"Redis at {where}: authentication failed ({_auth_hint(settings, exc)})") from None
    except redis.BusyLoadingError:
        raise ServerUnreachableError(f"Redis at {where} is loading its data set; try again when it is done") from None
    except redis.TimeoutError:
        raise ServerUnreachableError(
            f"cannot reach Redis at {where}: no answer within {CHECK_TIMEOUT:g} s (is it a Redis server?)"
        ) from None
    except WritesRefusedError:
        return  # MISCONF refuses PING too: the server is there, refusing writes (jobs/reconnect.py)
    except redis.ConnectionError as exc:
        raise ServerUnreachableError(f"cannot reach Redis at {where}: {exc}") from None
    except redis.ResponseError as exc:
        raise ServerRefusedError(f"Redis at {where} refused PING: {exc}") from None
    except redis.RedisError as exc:
        raise ServerRefusedError(
            f"{where} does not answer as a Redis server (is it the right port?): {exc}"
        ) from None


def _auth_hint(settings: Settings, exc: Exception) -> str:
    url = settings.server.redis_url or ""
    if urlsplit(url).password is None and "password=" not in url.lower():
        return "the server requires a password and REDIS_URL has none: use redis://:PASSWORD@HOST:PORT"
    return f"wrong user name or password: {exc}"
