"""An owner-checked, expiring lock: only its holder can renew or release it.

rq-scheduler's own lock is neither owner-checked nor renewed safely, so refreshq uses this one.
"""

from __future__ import annotations

import secrets

import redis

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class OwnedLock:
    """A lock held by one owner token at a time; it expires if its holder stops renewing it."""

    def __init__(self, conn: redis.Redis, key: str, ttl_ms: int) -> None:
        self.conn = conn
        self.key = key
        self.ttl_ms = ttl_ms
        self.token = secrets.token_hex(16)
        self._renew = conn.register_script(_RENEW)
        self._release = conn.register_script(_RELEASE)

    def acquire(self) -> bool:
        """Take the lock if free, or renew it if already ours."""
        if self.conn.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return True
        return self.renew()

    def renew(self) -> bool:
        return bool(self._renew(keys=[self.key], args=[self.token, self.ttl_ms]))

    def release(self) -> bool:
        return bool(self._release(keys=[self.key], args=[self.token]))

    def holder(self) -> str | None:
        value = self.conn.get(self.key)
        return value.decode() if isinstance(value, bytes) else None
