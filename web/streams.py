"""Server-Sent Events of a refresh task: its state whenever it changes, a heartbeat, a cap on open streams.

Each stream holds one of waitress's threads for as long as it is open, so the process allows at most
REFRESHQ_WEB_STREAMS at once (`refreshq web` runs that many threads plus headroom for everything
else); past the cap a stream request answers 503 with Retry-After, and the page polls instead. Every
event carries the whole state (task and provinces) with an id naming that state: a client coming back
with `Last-Event-ID` gets nothing until the state differs from the one it has. The stream polls a
cheap fingerprint (one round trip) every POLL seconds and reads the full state only when it moved.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response, request
from werkzeug.wrappers import Response as BaseResponse

from jobs import shutdown
from jobs.statuses import TERMINAL
from web.api.problems import problem

POLL = 0.5
HEARTBEAT = 10.0
RETRY_MS = 3000  # what the browser waits before reconnecting a dropped stream
RETRY_AFTER = 5  # seconds a client refused past the cap is told to wait
MAX_SECONDS = 3600.0  # a stream ends after this long (the browser reconnects): no thread is held forever


class StreamSlots:
    """A count of open streams with a cap, shared by the process's threads."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self._open >= self.cap:
                return False
            self._open += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self._open -= 1

    @property
    def open(self) -> int:
        return self._open


class SharedReads:
    """What the streams of one task read, shared: fifty pages watching one refresh cost the same
    round trips as one (a fingerprint at most every POLL / 2 s, the state once per change)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._prints: dict[str, tuple[float, Any]] = {}
        self._states: dict[str, tuple[Any, dict[str, Any], str, str]] = {}

    def fingerprint(self, key: str, read: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            cached = self._prints.get(key)
            if cached is not None and now - cached[0] < POLL / 2:
                return cached[1]
        value = read()
        with self._lock:
            self._prints[key] = (now, value)
        return value

    def state(self, key: str, print_: Any, read: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], str, str]:
        """(state, its event id, its `state` event as sent): encoded once for every stream of the task."""
        with self._lock:
            cached = self._states.get(key)
            if cached is not None and cached[0] == print_:
                return cached[1], cached[2], cached[3]
        value = read()
        ident = event_id(value)
        text = _event(value, ident)
        with self._lock:
            self._states[key] = (print_, value, ident, text)
            if len(self._states) > 1000:  # tasks nobody watches any more
                self._states.clear()
                self._prints.clear()
        return value, ident, text


def event_id(state: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(state, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:20]


def _event(state: dict[str, Any], ident: str, name: str = "state") -> str:
    return f"id: {ident}\nevent: {name}\ndata: {json.dumps(state, ensure_ascii=False)}\n\n"


def stream(
    slots: StreamSlots, shared: SharedReads, key: str, fingerprint: Callable[[], Any],
    read: Callable[[], dict[str, Any]],
) -> BaseResponse:
    """The event stream (the caller checked that the task exists), or 503 past the cap."""
    if not slots.take():
        return problem(503, None, f"too many open event streams (REFRESHQ_WEB_STREAMS, {slots.cap}): poll instead",
                       {"Retry-After": str(RETRY_AFTER)})
    last_id = request.headers.get("Last-Event-ID")
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    events = _events(lambda: shared.fingerprint(key, fingerprint), lambda p: shared.state(key, p, read), last_id)
    response = Response(events, mimetype="text/event-stream", headers=headers)
    # On close, also when the body was never iterated (a generator's `finally` would not run then).
    response.call_on_close(slots.give_back)
    return response


def _events(
    fingerprint: Callable[[], Any], read: Callable[[Any], tuple[dict[str, Any], str, str]], last_id: str | None
) -> Iterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    seen: Any = object()
    beat = started = time.monotonic()
    while not shutdown.requested.is_set() and time.monotonic() - started < MAX_SECONDS:
        current = fingerprint()
        if current is None:
            yield "event: gone\ndata: {}\n\n"
            return
        if current != seen:
            seen = current
            state, ident, text = read(current)
            if ident != last_id:
                last_id = ident
                yield text
                beat = time.monotonic()
            if state["task"]["status"] in TERMINAL:
                yield _event(state, ident, "end")
                return
        if time.monotonic() - beat >= HEARTBEAT:
            beat = time.monotonic()
            yield ": heartbeat\n\n"  # also how a closed connection is noticed: the write fails
        time.sleep(POLL)
