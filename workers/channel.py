"""A worker's command channel (RQ's pub/sub channel `rq:pubsub:<worker>`: shutdown, kill-horse, stop-job,
refreshq's drain), listened to on a thread that never holds the worker's stop.

RQ 2.12 listens through redis-py's `PubSub.run_in_thread(sleep_time=60)` and, as the worker stops, calls the
thread's `stop()`. Up to redis-py 8.1 `stop()` only clears a flag, which the thread looks at when it next
wakes (RQ then joins it for 1 s and closes its connection under it); from 8.2 `stop()` joins the thread
with no timeout. A listener that has already read the answer to RQ's UNSUBSCRIBE waits up to its 60 s for a
subscription instead of reading its socket, so a stopping worker was held 60 s, one stop in four. And on
8.1 and older a `stop()` that comes before the thread has run is undone when it runs.

So the listener here is refreshq's own thread, using only `PubSub.get_message`, which behaves the same on
every redis-py the declared range allows: it wakes every POLL_SECONDS to look at its flag, its `stop()`
never waits, and the stopping worker waits for it at most JOIN_SECONDS (one stuck in a reconnect during an
outage is a daemon thread: it ends with the process). The listener closes its connection as it ends, which
ends the subscription on the server: nothing is sent on that connection from the worker's thread while
the listener reads it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import redis
from redis.client import PubSub

from jobs import shutdown
from jobs.rqseam.worker import ChannelSeam

# How often the listener looks at its stop flag when no command arrives (a wake-up reads nothing from
# the server: it is the timeout of a poll on the socket).
POLL_SECONDS = 0.5
# How long a stopping worker waits for its listener to close its connection, at most.
JOIN_SECONDS = 2 * POLL_SECONDS


class Listener(threading.Thread):
    """Hands each message of a subscribed PubSub to its handler, until stopped; see the module's docstring."""

    def __init__(self, pubsub: PubSub, on_error: Callable[[Exception, PubSub, Listener], None]) -> None:
        super().__init__(name="refreshq-command-channel", daemon=True)
        self.pubsub = pubsub
        self.on_error = on_error  # RQ's signature: (exception, pubsub, thread); may stop() the thread
        self._stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self._stopped.is_set():
                try:
                    self.pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_SECONDS)
                except Exception as exc:
                    self.on_error(exc, self.pubsub, self)
        finally:
            with contextlib.suppress(redis.RedisError, OSError):
                self.pubsub.close()

    def stop(self) -> None:
        self._stopped.set()


class ChannelMixin(ChannelSeam):
    """For RQ worker classes: RQ's subscribe/unsubscribe of the worker's channel, through a Listener."""

    listener: Listener | None = None  # in place of RQ's `pubsub_thread`, which stays None

    def listen_for_commands(self) -> None:
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = pubsub = self.connection.pubsub()
        pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.listener = Listener(pubsub, self.command_channel_error)
        self.listener.start()

    def stop_listening_for_commands(self) -> None:
        listener = self.listener
        if listener is None:
            return
        self.log.info("Worker %s: unsubscribing from channel %s", self.name, self.pubsub_channel_name)
        listener.stop()
        listener.join(JOIN_SECONDS)

    def command_channel_error(self, exc: Exception, pubsub: PubSub, listener: Any) -> None:
        # RQ's handler logs and retries every 2 s, forever; a stopping worker needs no more commands.
        if shutdown.requested.is_set() and isinstance(exc, redis.ConnectionError):
            listener.stop()
            return
        self.rq_command_channel_error(exc, pubsub, listener)
