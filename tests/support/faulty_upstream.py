"""A loopback proxy in front of a test upstream that answers 503 for chosen region codes while told to."""

from __future__ import annotations

from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from jobs.upstream.serve import BackgroundServer


class FaultyProxy:
    """Forwards GETs to `backend`; any path naming a code in `failing` gets a 503 instead."""

    def __init__(self, backend: str) -> None:
        self.backend = backend.rstrip("/")
        self.failing: set[str] = set()
        self.paths: Counter[str] = Counter()
        self._client = httpx.Client(timeout=30)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy.paths[self.path.split("?")[0]] += 1
                if any(f"/{code}/" in self.path for code in proxy.failing):
                    self._reply(503, b'{"error": "unavailable"}')
                    return
                upstream = proxy._client.get(proxy.backend + self.path.removeprefix("/v1"))
                self._reply(upstream.status_code, upstream.content)

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._running = BackgroundServer(server)
        self.url = f"{self._running.base_url}/v1"

    def close(self) -> None:
        self._running.stop()
        self._client.close()
