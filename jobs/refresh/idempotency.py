"""What a create request is (kind, province, owner) and its Idempotency-Key: a repeat returns the first task.

The key is the client's, scoped to its owner (two users' keys never meet) and kept 24 hours. It is
checked and claimed inside the create transaction, so two copies of one request racing each other
make one task. The same key with a different request is refused (IdempotencyConflictError).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import redis

from jobs import keys
from jobs.errors import IdempotencyConflictError, ValidationError
from jobs.owners import Owner

KEY_TTL = 86_400
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Created:
    task_id: str
    replayed: bool  # True: the idempotency key's earlier request made this task


@dataclass(frozen=True)
class Request:
    kind: str
    province: str | None
    owner: Owner
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        key = self.idempotency_key
        if key is not None and not (0 < len(key) <= MAX_KEY_LENGTH and key.isprintable()):
            raise ValidationError(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters")

    @property
    def _key(self) -> str | None:
        if self.idempotency_key is None:
            return None
        scoped = json.dumps([self.owner.name, self.idempotency_key], ensure_ascii=False)
        return keys.idempotency(hashlib.sha256(scoped.encode()).hexdigest())

    @property
    def _body(self) -> str:
        return json.dumps({"kind": self.kind, "province": self.province}, ensure_ascii=False, sort_keys=True)

    def watched(self) -> list[str]:
        return [self._key] if self._key else []

    def earlier_refresh(self, pipe: redis.client.Pipeline) -> str | None:
        """The task an earlier use of the key made (inside the caller's WATCH), or None."""
        if self._key is None:
            return None
        raw = pipe.get(self._key)
        if raw is None:
            return None
        earlier = json.loads(raw)
        if earlier["request"] != self._body:
            raise IdempotencyConflictError(
                f"Idempotency-Key {self.idempotency_key!r} was used for another request ({earlier['request']})"
            )
        return str(earlier["task_id"])

    def remember(self, pipe: redis.client.Pipeline, task_id: str) -> None:
        """Inside the caller's MULTI: claim the key for the new task."""
        if self._key is not None:
            value = json.dumps({"task_id": task_id, "request": self._body}, ensure_ascii=False)
            pipe.set(self._key, value, ex=KEY_TTL)
