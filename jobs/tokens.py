"""API tokens: a user, a role and optional limits, stored under the SHA-256 of the token only.

The token itself is shown once, when it is made, and never stored: Redis holds its SHA-256 (a token
is 32 random bytes, so a fast hash is enough: there is nothing to guess). Its public id, shown by
`tokens list` and used by `tokens revoke`, is the first 12 hex digits of that hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from jobs import keys
from jobs.errors import TokenNotFoundError, ValidationError
from jobs.owners import Owner
from jobs.redis_values import as_text

ROLES = ("read", "operate", "admin")
TOKEN_PREFIX = "rfq_"
ID_LENGTH = 12
MAX_USER_LENGTH = 200
MAX_LIMIT = 10_000


@dataclass(frozen=True)
class TokenInfo:
    """What is stored for a token (never the token)."""

    id: str
    user: str
    role: str
    max_running: int | None
    max_pending: int | None
    created_at: str

    @property
    def owner(self) -> Owner:
        return Owner(self.user, self.max_running, self.max_pending)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_user(user: str) -> str:
    """A user name: any text (quotes, emoji, other scripts) but not empty, not control characters."""
    if not user.strip():
        raise ValidationError("a user name is required")
    if len(user) > MAX_USER_LENGTH:
        raise ValidationError(f"user name too long: at most {MAX_USER_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in user):
        raise ValidationError(f"user name {user!r} holds a control character (a newline, a tab)")
    return user


def _check_limit(name: str, value: int | None) -> None:
    if value is not None and not 0 <= value <= MAX_LIMIT:
        raise ValidationError(f"{name} must be from 0 to {MAX_LIMIT}")


def create(
    conn: redis.Redis, user: str, role: str, max_running: int | None = None, max_pending: int | None = None
) -> tuple[str, TokenInfo]:
    """Make a token; return it (the only time it exists outside its holder's hands) and what is stored."""
    if role not in ROLES:
        raise ValidationError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    _check_limit("--max-running", max_running)
    _check_limit("--max-pending", max_pending)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    hashed = digest(token)
    info = TokenInfo(hashed[:ID_LENGTH], check_user(user), role, max_running, max_pending,
                     datetime.now(UTC).isoformat(timespec="seconds"))
    conn.hset(keys.TOKENS, hashed, json.dumps(info.to_dict(), ensure_ascii=False))
    return token, info


def verify(conn: redis.Redis, token: str) -> TokenInfo | None:
    """The token's record, or None for a token that was never made or was revoked."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    return lookup(conn, digest(token))


def lookup(conn: redis.Redis, hashed: str) -> TokenInfo | None:
    """By the token's SHA-256 (what a web session keeps)."""
    raw = conn.hget(keys.TOKENS, hashed)
    if raw is None:
        return None
    info = TokenInfo(**json.loads(raw))
    # The stored hash matched by name; compare again in constant time so timing says nothing more.
    return info if hmac.compare_digest(info.id, hashed[:ID_LENGTH]) else None


def list_tokens(conn: redis.Redis) -> list[TokenInfo]:
    rows = [TokenInfo(**json.loads(v)) for v in conn.hvals(keys.TOKENS)]
    return sorted(rows, key=lambda t: (t.created_at, t.id))


def revoke(conn: redis.Redis, token_id: str) -> TokenInfo:
    """Delete the token with this id (or the unique one it starts); TokenNotFoundError if none."""
    token_id = token_id.strip().lower()
    matches = [as_text(k) for k in conn.hkeys(keys.TOKENS) if as_text(k).startswith(token_id)] if token_id else []
    if len(matches) != 1:
        raise TokenNotFoundError(f"no token {token_id!r}" if not matches else f"{token_id!r} names several tokens")
    info = lookup(conn, matches[0])
    conn.hdel(keys.TOKENS, matches[0])
    assert info is not None
    return info
