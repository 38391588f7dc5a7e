"""The web process's WSGI server: waitress, bounded so that no number of idle, slow or oversized clients
stops it from answering the others.

- Threads: the event streams' cap (REFRESHQ_WEB_STREAMS) plus HEADROOM_THREADS, so streams never take
  every thread; past the cap a stream is refused at once (web.streams).
- Connections: waitress stops accepting at `connection_limit`, 100 by default, so 101 clients that send
  nothing stopped the app; here MAX_CONNECTIONS, within the process's open-files limit (its soft limit
  raised to what that needs, at most the hard limit, when the server starts).
- poll(), not select(): waitress's loop calls select() unless told otherwise, and select() cannot watch a
  descriptor numbered FD_SETSIZE (1024) or more: the loop would die with ValueError once a thousand
  clients were connected (waitress issue #31 added `asyncore_use_poll` for that).
- Time: a connection idle for IDLE_SECONDS is closed (`channel_timeout`, looked at every CLEANUP_SECONDS);
  a request whose head and body have not all arrived REQUEST_SECONDS after its first byte is dropped,
  because a client that sends a byte now and then is never idle to waitress (a slowloris).
- Bodies: over web.api.bounds.MAX_BODY_BYTES refused with 413 by waitress from Content-Length alone,
  before a byte of it is buffered (a chunked one once it passes the limit); waitress's own refusals
  answer problem+json like the app's.

Why waitress still, rather than an asynchronous server for the streams: with poll() and these bounds it
serves the health check and the API quickly while the clients of bench scenario 6 are held, and the app,
rq-dashboard and the tests stay plain WSGI. A stream still holds a thread, so the stream cap stays.
"""

from __future__ import annotations

import resource
import threading
import time
from typing import Any

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import BaseWSGIServer
from waitress.task import ErrorTask

from jobs.errors import ConfigError
from web.api.bounds import MAX_BODY_BYTES
from web.api.problems import MEDIA_TYPE, document

# Threads beyond the event streams' cap: every other request is served by these, however many streams are open.
HEADROOM_THREADS = 8
MAX_CONNECTIONS = 10_000
# Descriptors kept for everything but client connections: Redis connections, logs, bodies buffered to files.
RESERVED_FILES = 256
IDLE_SECONDS = 30
REQUEST_SECONDS = 30.0
CLEANUP_SECONDS = 5


def raise_open_files_limit(wanted: int = MAX_CONNECTIONS + RESERVED_FILES) -> int:
    """Raise this process's soft limit of open files towards `wanted` (never past the hard limit, never
    lowered); the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # a platform that refuses: serve within the limit there is
    return soft if soft != resource.RLIM_INFINITY else wanted


def connection_limit(open_files: int, threads: int) -> int:
    """Client connections one process accepts at once: MAX_CONNECTIONS, or what its open files allow."""
    return max(32, min(MAX_CONNECTIONS, open_files - RESERVED_FILES - 2 * threads))


class _TimedParser(HTTPRequestParser):  # type: ignore[misc]
    """waitress's request parser, remembering when the request's first byte came."""

    def __init__(self, adj: Any) -> None:
        super().__init__(adj)
        self.first_byte_at = time.monotonic()


class _ProblemTask(ErrorTask):  # type: ignore[misc]
    """waitress's own refusals (a body over the limit, a malformed request, headers too large) as problem+json."""

    def execute(self) -> None:
        error = self.request.error
        detail = (f"the request body is over {MAX_BODY_BYTES:,} bytes (1 MiB)" if error.code == 413
                  else str(error.body))
        body = document(error.code, None, detail, str(getattr(self.request, "path", "") or "")).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", MEDIA_TYPE))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class BoundedChannel(HTTPChannel):  # type: ignore[misc]
    """A connection whose request must arrive whole within REQUEST_SECONDS of its first byte."""

    parser_class = _TimedParser
    error_task_class = _ProblemTask

    def readable(self) -> bool:
        # Called on every turn of the loop (at least once a second: asyncore_loop_timeout).
        partial = self.request
        if partial is not None and not self.requests and time.monotonic() - partial.first_byte_at > REQUEST_SECONDS:
            self.will_close = True  # closed by the loop's next write turn
            return False
        return bool(super().readable())


def listen(app: object, host: str, port: int, streams: int, trust_proxy: bool = False) -> Any:
    """waitress's server bound to host:port (ConfigError if it cannot be), not yet serving. `trust_proxy`:
    X-Forwarded-* headers reach the app (web.app applies them); otherwise waitress drops them."""
    from waitress.server import create_server

    threads = streams + HEADROOM_THREADS
    options = {
        "threads": threads, "ident": "refreshq", "asyncore_use_poll": True,
        "connection_limit": connection_limit(raise_open_files_limit(), threads),
        "channel_timeout": IDLE_SECONDS, "cleanup_interval": CLEANUP_SECONDS,
        # waitress refuses a Content-Length >= this: exactly MAX_BODY_BYTES is allowed.
        "max_request_body_size": MAX_BODY_BYTES + 1,
        "clear_untrusted_proxy_headers": not trust_proxy,
    }
    try:
        server = create_server(app, host=host, port=port, **options)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another port with --port or PORT)"
        ) from None
    sockets = server.map if hasattr(server, "map") else server._map  # several listeners, or one
    for listener in list(sockets.values()):
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = BoundedChannel  # every listening socket (localhost may be two)
    return server


def limits(server: Any) -> dict[str, Any]:
    """The bounds the server runs with (logged at start)."""
    adj = server.adj
    return {"threads": adj.threads, "connections": adj.connection_limit, "idle_seconds": adj.channel_timeout,
            "request_seconds": REQUEST_SECONDS, "max_body_bytes": MAX_BODY_BYTES}


class Background:
    """A server run on a daemon thread (`refreshq demo --web`), closed from inside its own loop."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.thread = threading.Thread(target=server.run, name="refreshq-web", daemon=True)

    def start(self) -> Background:
        self.thread.start()
        return self

    def stop(self) -> None:
        from waitress import wasyncore

        self.server.trigger.pull_trigger(lambda: wasyncore.close_all(self.server._map))
        self.thread.join(timeout=10)
        self.server.task_dispatcher.shutdown(timeout=5)

