"""Failed sign-ins slow a guesser down: after MAX_FAILURES in a WINDOW_SECONDS window, a client address (and
the user whose password was tried) is refused with 429 and Retry-After until the window has passed, the
right password included; successful sign-ins do not count.

Counted in Redis (jobs.keys.signin_failures), so every web process sees every failure. A window starts
with its first failure and ends WINDOW_SECONDS later (the key's expiry), so at most MAX_FAILURES guesses
fit in any WINDOW_SECONDS. What counts: a wrong password on the sign-in form, HTTP Basic or a /metrics
scrape (against the address and the password's user, `admin`), and a wrong token (against the address
only: a token is 32 random bytes and names no user until it is right). An IPv6 client counts by its /64,
as one host usually holds the whole network.
"""

from __future__ import annotations

import ipaddress
import math

import redis
from flask import request
from werkzeug.exceptions import TooManyRequests

from jobs import keys

MAX_FAILURES = 10
WINDOW_SECONDS = 300


def client_address() -> str:
    """The caller's address as counted: werkzeug's remote_addr (the proxy's X-Forwarded-For when trusted,
    web.app), an IPv6 one as its /64."""
    raw = request.remote_addr or "unknown"
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class Throttle:
    """Failure counts of addresses and users in Redis."""

    def __init__(self, conn: redis.Redis) -> None:
        self.conn = conn

    @staticmethod
    def _keys(user: str | None) -> list[str]:
        found = [keys.signin_failures("address", client_address())]
        return found + ([keys.signin_failures("user", user)] if user is not None else [])

    def wait(self, user: str | None = None) -> int:
        """Seconds until this request's address (and `user`) may try again; 0 if it may now."""
        names = self._keys(user)
        with self.conn.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.get(name)
                pipe.pttl(name)
            found = pipe.execute()
        wait = 0
        for count, ttl_ms in zip(found[::2], found[1::2], strict=True):
            if count is not None and int(count) >= MAX_FAILURES:
                wait = max(wait, math.ceil(ttl_ms / 1000) if ttl_ms > 0 else WINDOW_SECONDS)
        return wait

    def check(self, user: str | None = None) -> None:
        """Raise TooManyRequests (429, Retry-After) while this address or `user` is throttled."""
        wait = self.wait(user)
        if wait:
            raise TooManyRequests(
                f"too many failed sign-ins from this address or for this user: try again in {wait} s",
                retry_after=wait,
            )

    def failed(self, user: str | None = None) -> None:
        """Count one failed sign-in of this request's address (and `user`)."""
        with self.conn.pipeline(transaction=True) as pipe:
            for name in self._keys(user):
                pipe.set(name, 0, ex=WINDOW_SECONDS, nx=True)  # the window starts with its first failure
                pipe.incr(name)
            pipe.execute()
