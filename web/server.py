"""The web process's WSGI server: waitress, with a thread per event stream it allows plus headroom."""

from __future__ import annotations

import threading
from typing import Any

from jobs.errors import ConfigError

# Threads beyond the event streams' cap: every other request is served by these, however many streams are open.
HEADROOM_THREADS = 8


def listen(app: object, host: str, port: int, streams: int) -> Any:
    """waitress's server bound to host:port (ConfigError if it cannot be), not yet serving."""
    from waitress.server import create_server

    try:
        return create_server(app, host=host, port=port, threads=streams + HEADROOM_THREADS, ident="refreshq")
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another port with --port or PORT)"
        ) from None


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
