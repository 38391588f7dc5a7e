"""Connections: to REDIS_URL when set, otherwise to the embedded server, started on demand."""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.connection import UnixDomainSocketConnection
from redis.retry import Retry

from jobs.config import Settings
from jobs.queues import register_queues
from jobs.server import EmbeddedServer

# Long enough to ride out a server restart (or a failover on a hosted Redis).
_RETRIES = 20


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
            self.server.ensure_running()
            return super()._connect()  # type: ignore[no-untyped-call]


def server_url(settings: Settings) -> str:
    """The URL of the server in use, starting the embedded one if needed."""
    connect(settings).close()
    if settings.redis_url:
        return settings.redis_url
    return EmbeddedServer(settings.data_dir).url


def connect(settings: Settings) -> redis.Redis:
    """A client (bytes responses, as RQ needs) that retries through connection errors.

    It also registers refreshq's queues, so RQ's own tools list them before any job exists.
    """
    conn = _client(settings)
    register_queues(conn)
    return conn


def _client(settings: Settings) -> redis.Redis:
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), _RETRIES)
    errors: list[type[Exception]] = [redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError]
    if settings.redis_url:
        return redis.Redis.from_url(
            settings.redis_url, retry=retry, retry_on_error=errors, health_check_interval=30
        )
    server = EmbeddedServer(settings.data_dir)
    server.ensure_running()
    connection_class = type("EmbeddedConnection", (_EmbeddedConnection,), {"server": server})
    pool = redis.ConnectionPool(
        connection_class=connection_class, path=str(server.socket_path), retry=retry, retry_on_error=errors
    )
    return redis.Redis(connection_pool=pool)
