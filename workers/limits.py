"""Global limits shared by every worker on every machine, kept in Redis.

- Upstream requests: at most N in flight and R started per second, across all workers. Each
  request holds a lease that expires on its own, so a worker that dies mid-request does not leak
  its slot. (httpx limits one process's connections; only Redis can see every machine's.)
- Running tasks: at most REFRESHQ_MAX_CONCURRENT_TASKS, admitted first come first served by the
  START script when a task's plan job runs (see jobs.refresh).
"""

from __future__ import annotations

import contextlib
import random
import secrets
import time
from collections.abc import Iterator

import redis

from jobs import keys
from jobs.scripts import Scripts

# A lease outlives the longest request (the client's timeout) so it is never dropped under a live one.
DEFAULT_LEASE_SECONDS = 60.0


class UpstreamGate:
    """A request gate for the upstream clients: `with gate(): send the request`."""

    def __init__(self, conn: redis.Redis, concurrency: int, rps: float, lease_seconds: float = DEFAULT_LEASE_SECONDS):
        self.conn = conn
        self.concurrency = concurrency
        self.rps = rps
        self.lease_seconds = lease_seconds
        self._lease = Scripts(conn).upstream_lease

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        token = secrets.token_hex(8)
        while not self._lease(
            keys=[keys.UPSTREAM_IN_FLIGHT, keys.UPSTREAM_RECENT],
            args=[token, self.concurrency, self.rps, self.lease_seconds],
        ):
            time.sleep(random.uniform(0.002, 0.01))
        try:
            yield
        finally:
            if self.concurrency > 0:
                self.conn.zrem(keys.UPSTREAM_IN_FLIGHT, token)
