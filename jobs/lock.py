"""The scheduler's lock: one owner at a time, renewed by its holder, lapsing when the holder stops renewing.

redis-py's `Lock` does the owner-checked acquire, renew and release (its scripts compare the token). What
it does not offer is the scheduler's one call per tick, "take the lock if free, else renew it if it is
mine", nor a boolean answer instead of an exception; this adapter adds only that.
(rq-scheduler's own lock is neither owner-checked nor renewed safely.)
"""

from __future__ import annotations

import secrets

import redis
from redis.exceptions import LockError


class OwnedLock:
    """A lock held by one owner token at a time; it expires if its holder stops renewing it."""

    def __init__(self, conn: redis.Redis, key: str, ttl_ms: int) -> None:
        self.conn = conn
        self.key = key
        self.token = secrets.token_hex(16)
        self._lock = conn.lock(key, timeout=ttl_ms / 1000, blocking=False, thread_local=False)

    def acquire(self) -> bool:
        """Take the lock if free, or renew it if already ours."""
        return bool(self._lock.acquire(blocking=False, token=self.token)) or self.renew()

    def renew(self) -> bool:
        try:
            return bool(self._lock.reacquire())
        except LockError:  # never taken by this owner, or lost (LockNotOwnedError): someone else's now
            return False

    def release(self) -> bool:
        try:
            self._lock.release()
        except LockError:
            return False
        return True

    def holder(self) -> str | None:
        value = self.conn.get(self.key)
        return value.decode() if isinstance(value, bytes) else None
