"""How refreshq's Redis clients retry a lost server, and a server that refuses writes for now.

A command gives up within a second or two: it fails with a clear message instead of hanging. A
long-running process (worker, work-horse, scheduler) waits for the server to come back, however
long it takes, logging when the outage starts, now and then while it lasts and when it ends, and
gives up as soon as the process is asked to stop (jobs/shutdown.py), so a SIGTERM is honoured
whether the server is back or not.

A server that answers but refuses writes it cannot take now -- out of memory under a noeviction policy
(OOM), a read-only replica after a failover (READONLY), unable to persist (MISCONF), too few replicas
in sync (NOREPLICAS) -- is an outage too, for writes only: reads go on. A refused command wrote nothing
(a single command, a script, refused at its first write, and a MULTI/EXEC, aborted whole with EXECABORT),
so it is repeated; a pipeline without MULTI may have applied some of its commands before the refused
one, and is repeated only when running it again changes nothing more (see `Pipeline`). A command's
client fails at once with WritesRefusedError instead.

redis-py's own Retry cannot do the last two: it logs nothing and only knows a count of attempts.
Wrong credentials are never retried: the server will refuse them again (redis-py files them under
ConnectionError, so a plain Retry loops on them).
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.client import Pipeline as RedisPipeline
from redis.exceptions import AuthorizationError, OutOfMemoryError, ReadOnlyError
from redis.retry import Retry

from jobs import keys, shutdown
from jobs.errors import WritesRefusedError

log = logging.getLogger("refreshq.redis")

T = TypeVar("T")

# Seconds between two "still unreachable" lines while an outage lasts.
OUTAGE_LOG_EVERY = 30.0
# A command's attempts after the first: enough to replace a connection the server dropped.
COMMAND_RETRIES = 2
# Once a stop is requested, attempts before giving up (one reconnect, in case the first failure
# was a connection the server had closed).
_ATTEMPTS_WHEN_STOPPING = 2
_SLEEP_SLICE = 0.1
# How long after a write was last refused a missing heartbeat or claim renewal is no sign of a dead worker:
# none could be written meanwhile, and workers renew theirs within seconds once writes are taken again.
LIVENESS_GRACE = 20.0

_RETRIED: tuple[type[Exception], ...] = (
    redis.ConnectionError, redis.TimeoutError, socket.timeout, redis.ResponseError,  # ResponseError: refusals only
)
_NEVER_RETRIED: tuple[type[Exception], ...] = (redis.AuthenticationError, AuthorizationError)

OOM, READONLY, MISCONF, NOREPLICAS = "OOM", "READONLY", "MISCONF", "NOREPLICAS"
# The code of a refusal, at the start of the server's answer, of redis-py's note on a pipeline's failed
# command, or of an EXECABORT that names why the transaction was discarded. UNBLOCKED: a blocking command
# (a worker's BLMOVE) cut short as its primary turned into a replica -- the first sign of a failover.
_REFUSAL_CODE = re.compile(r"(?:^|caused error: |discarded because of: )(OOM|READONLY|MISCONF|NOREPLICAS|UNBLOCKED) ")
_WHY = {
    OOM: "is out of memory (maxmemory reached, nothing it may evict)",
    READONLY: "is a read-only replica (after a failover, REDIS_URL must lead to the new primary)",
    MISCONF: "cannot persist to disk (its last save failed)",
    NOREPLICAS: "has too few replicas in sync (min-replicas-to-write)",
}
# Commands a pipeline may send again after some of its commands were applied: reads, and writes that set or
# remove a value whatever was there (run twice, they leave what running them once left; a count they answer,
# such as DEL's, may differ).
_REPEATABLE = frozenset(name.encode() for name in (
    "GET", "MGET", "EXISTS", "TYPE", "TTL", "PTTL", "STRLEN", "GETRANGE", "HGET", "HMGET", "HGETALL", "HKEYS",
    "HVALS", "HLEN", "HEXISTS", "HSTRLEN", "LLEN", "LRANGE", "LINDEX", "LPOS", "SCARD", "SMEMBERS", "SISMEMBER",
    "SMISMEMBER", "ZCARD", "ZSCORE", "ZMSCORE", "ZRANK", "ZREVRANK", "ZCOUNT", "ZRANGE", "ZREVRANGE",
    "ZRANGEBYSCORE", "ZREVRANGEBYSCORE", "XLEN", "XRANGE", "XREVRANGE", "PING", "INFO", "TIME",
    "SET", "SETEX", "PSETEX", "MSET", "HSET", "HMSET", "HDEL", "DEL", "UNLINK", "EXPIRE", "PEXPIRE", "EXPIREAT",
    "PEXPIREAT", "PERSIST", "SADD", "SREM", "ZREM", "LPUSHX",
))
_PARTIAL = "refreshq_partial"  # set on a refusal a pipeline without MULTI must not repeat


def refusal(error: BaseException) -> str | None:
    """OOM, READONLY, MISCONF or NOREPLICAS when `error` is the server refusing a write it cannot take now."""
    if isinstance(error, OutOfMemoryError):
        return OOM
    if isinstance(error, ReadOnlyError):
        return READONLY
    if isinstance(error, redis.ResponseError) and (found := _REFUSAL_CODE.search(str(error))):
        return READONLY if found.group(1) == "UNBLOCKED" else found.group(1)
    return None


def refused_message(where: str, reason: str, error: BaseException) -> str:
    """`Redis at X refuses writes: it is out of memory (...) [OOM command not allowed ...]`."""
    return f"Redis at {where} refuses writes: it {_WHY[reason]}; reads still work [{_coded(reason, error)}]"


def _coded(reason: str, error: BaseException) -> str:
    """The server's answer with its code: redis-py drops the code of the answers it has a class for."""
    text = str(error)
    return text if text.startswith(reason) else f"{reason} {text}"


class Outage:
    """One log line when the server is lost, one every OUTAGE_LOG_EVERY seconds, one when it is back;
    shared by every connection and thread of a process, so threads do not each log every attempt. The
    same for writes the server refuses."""

    def __init__(self, where: str, every: float = OUTAGE_LOG_EVERY) -> None:
        self.where = where
        self.every = every
        self._lock = threading.Lock()
        self._since: float | None = None
        self._logged_at = 0.0
        self._refused_since: float | None = None
        self._refused_logged_at = 0.0

    def failed(self, error: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            if self._since is None:
                self._since = self._logged_at = now
                log.warning("Redis at %s unreachable (%s); retrying until it is back", self.where, error)
            elif now - self._logged_at >= self.every:
                self._logged_at = now
                log.warning("Redis at %s still unreachable after %.0f s (%s)", self.where, now - self._since, error)

    def refused(self, reason: str, error: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            if self._refused_since is None:
                self._refused_since = self._refused_logged_at = now
                log.warning("%s; waiting until it takes them again", refused_message(self.where, reason, error))
                REFUSALS.started(reason, str(error))
            elif now - self._refused_logged_at >= self.every:
                self._refused_logged_at = now
                log.warning("Redis at %s still refuses writes after %.0f s (%s %s)", self.where,
                            now - self._refused_since, reason, error)
        REFUSALS.seen()

    def recovered(self, lost: bool = True, refused: bool = True) -> None:
        """A command went through after it had found the server lost (`lost`), or refusing it (`refused`)."""
        with self._lock:
            now = time.monotonic()
            if lost and self._since is not None:
                log.info("Redis at %s is back after %.1f s", self.where, now - self._since)
                self._since = None
            if refused and self._refused_since is not None:
                log.info("Redis at %s takes writes again after %.1f s", self.where, now - self._refused_since)
                REFUSALS.ended(now - self._refused_since)
                self._refused_since = None


class RefusalWatcher(Protocol):
    """Told when this process first finds its writes refused, and when they are taken again."""

    def refusal_started(self, reason: str, message: str) -> None: ...

    def refusal_ended(self, seconds: float) -> None: ...


class Refusals:
    """This process's view of refused writes: when it last saw one, and who wants to know (an alarm)."""

    def __init__(self) -> None:
        self._last = float("-inf")
        self._watchers: list[RefusalWatcher] = []

    def watch(self, watcher: RefusalWatcher) -> None:
        self._watchers.append(watcher)

    def unwatch(self, watcher: RefusalWatcher) -> None:
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    def seen(self) -> None:
        self._last = time.monotonic()

    def within(self, seconds: float = LIVENESS_GRACE) -> bool:
        """Whether a write of this process was refused in the last `seconds` (or is being refused now)."""
        return time.monotonic() - self._last < seconds

    def started(self, reason: str, message: str) -> None:
        self.seen()
        for watcher in list(self._watchers):
            watcher.refusal_started(reason, message)

    def ended(self, seconds: float) -> None:
        for watcher in list(self._watchers):
            watcher.refusal_ended(seconds)


REFUSALS = Refusals()


class ServerRetry(Retry):
    """redis-py's Retry, bounded by a count (commands) or by a stop request (long-running processes); a
    refused write is waited out by the second, never retried by the first (WritesRefusedError)."""

    def __init__(self, retries: int, outage: Outage | None = None, where: str = "") -> None:
        """`retries` < 0: retry until the process is asked to stop, reporting to `outage`."""
        super().__init__(ExponentialBackoff(cap=2.0, base=0.05), retries, _RETRIED)
        self.outage = outage
        self.where = outage.where if outage is not None else where

    def __deepcopy__(self, _memo: dict[int, Any]) -> ServerRetry:
        # redis-py deep-copies the Retry into every connection; the outage log must stay one per process.
        return self

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[[Exception], Any] | Callable[[Exception, int], Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        failures = refusals = 0
        while True:
            try:
                result = do()
            except self._supported_errors as error:
                reason = refusal(error)
                if reason is not None:
                    refusals += 1
                    self._wait_out_refusal(reason, error, refusals)
                    _failed(fail, error, refusals, with_failure_count)  # a new connection: maybe the new primary
                    continue
                if isinstance(error, (redis.ResponseError, *_NEVER_RETRIED)) or (
                    is_retryable is not None and not is_retryable(error)
                ):
                    raise
                failures += 1
                _failed(fail, error, failures, with_failure_count)
                if self._gives_up(failures):
                    raise error
                if self.outage is not None and failures > 1:
                    # A single failure is a connection the server closed (a restart, an idle timeout),
                    # replaced at the next attempt: an outage is when reconnecting fails too.
                    self.outage.failed(error)
                _pause(self._backoff.compute(failures))
                continue
            if (failures or refusals) and self.outage is not None:
                self.outage.recovered(lost=failures > 0, refused=refusals > 0)
            return result

    def _wait_out_refusal(self, reason: str, error: Exception, attempt: int) -> None:
        """Pause before the refused command is sent again; WritesRefusedError when it may not be."""
        if self.outage is None or self._retries >= 0 or shutdown.requested.is_set() or getattr(error, _PARTIAL, False):
            if getattr(error, _PARTIAL, False):
                log.warning("Redis refused part of a pipeline whose other writes were applied: not repeated (%s)",
                            error)
            raise WritesRefusedError(refused_message(self.where or "?", reason, error)) from error
        self.outage.refused(reason, error)
        _pause(self._backoff.compute(attempt))

    def _gives_up(self, failures: int) -> bool:
        if shutdown.requested.is_set() and failures >= _ATTEMPTS_WHEN_STOPPING:
            return True
        return self._retries >= 0 and failures > self._retries


def _failed(fail: Callable[..., Any], error: Exception, count: int, with_failure_count: bool) -> None:
    if with_failure_count:
        fail(error, count)
    else:
        fail(error)


def _pause(seconds: float) -> None:
    """Sleep, cut short by a stop request (polled: see jobs/shutdown.py on why not Event.wait)."""
    deadline = time.monotonic() + seconds
    while not shutdown.requested.is_set() and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, _SLEEP_SLICE))


class Pipeline(RedisPipeline):
    """redis-py's pipeline, marking a refusal it must not repeat: one after other commands of it were applied
    (a pipeline without MULTI, or a MULTI/EXEC that ran and whose script was refused at its first write),
    unless every command applied is repeatable (`_REPEATABLE`): sending HINCRBY twice would count twice.
    An EXECABORT (a command refused while queued, or the EXEC) applied nothing: it is repeated."""

    def _execute_pipeline(self, connection: Any, commands: Any, raise_on_error: bool) -> list[Any]:
        replies: list[Any] = super()._execute_pipeline(connection, commands, False)  # type: ignore[no-untyped-call]
        return self._checked(commands, replies, raise_on_error)

    def _execute_transaction(self, connection: Any, commands: Any, raise_on_error: bool) -> list[Any]:
        replies: list[Any] = super()._execute_transaction(connection, commands, False)  # raises an EXECABORT
        return self._checked(commands, replies, raise_on_error)

    def _checked(self, commands: Any, replies: list[Any], raise_on_error: bool) -> list[Any]:
        if not raise_on_error:
            return replies
        applied = [args for (args, _options), reply in zip(commands, replies, strict=True)
                   if not isinstance(reply, redis.ResponseError)]
        if any(_command_name(args) not in _REPEATABLE for args in applied):
            for reply in replies:
                if isinstance(reply, redis.ResponseError) and refusal(reply):
                    setattr(reply, _PARTIAL, True)
        self.raise_first_error(commands, replies)  # type: ignore[no-untyped-call]
        return replies


def _command_name(args: tuple[Any, ...]) -> bytes:
    name = args[0]
    return (name.encode() if isinstance(name, str) else bytes(name)).split(b" ")[0].upper()


class Client(redis.Redis):
    """redis-py's client, whose pipelines are `Pipeline`s."""

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        return Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


def writes_refused(conn: redis.Redis) -> dict[str, str] | None:
    """{reason, message} when the server refuses writes now, else None: one no-op write (LPUSHX on a key that
    never exists: refused as any write is, never stored, never retried)."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.lpushx(keys.WRITES_PROBE, 0)
        [reply] = pipe.execute(raise_on_error=False)
    return refusal_of(reply)


def refusal_of(reply: Any) -> dict[str, str] | None:
    """{reason, message} if a probe's reply (see writes_refused) is a refusal."""
    if isinstance(reply, Exception) and (reason := refusal(reply)):
        return {"reason": reason, "message": f"Redis refuses writes: it {_WHY[reason]} [{_coded(reason, reply)}]"}
    return None
