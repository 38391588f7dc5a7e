"""The one base of the loopback HTTP servers (jobs.upstream.serve.BackgroundServer): it answers until its
block ends, then its port is closed and its thread gone; the upstream fakes, the model and the webhook
sink all run on it."""

from __future__ import annotations

import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from jobs.upstream.serve import BackgroundServer, RunningUpstream, start_background
from tests.support.auth_upstream import BasicAuthUpstream
from tests.support.faulty_upstream import FaultyProxy
from tests.support.helpers import serving
from tests.support.limited_upstream import LimitedUpstream
from tests.support.observe_helpers import webhook_receiver
from tests.support.upstream_servers import RunningChat


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_it_answers_until_its_block_ends_then_closes_its_port_and_thread() -> None:
    with BackgroundServer(ThreadingHTTPServer(("127.0.0.1", 0), _Hello)) as running:
        port = running.server.server_address[1]
        assert running.base_url == f"http://127.0.0.1:{port}"
        assert httpx.get(running.base_url).text == "hello"
    assert not running._thread.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_the_fakes_run_on_it() -> None:
    for fake in (RunningUpstream, LimitedUpstream, BasicAuthUpstream, RunningChat):
        assert issubclass(fake, BackgroundServer), fake
    with start_background(10) as upstream:
        proxy = FaultyProxy(upstream.url)
        try:
            assert isinstance(proxy._running, BackgroundServer)
            assert httpx.get(f"{proxy.url}/regions").status_code == 200
        finally:
            proxy.close()
    with webhook_receiver() as hook, serving(ThreadingHTTPServer(("127.0.0.1", 0), _Hello)) as plain:
        assert httpx.post(hook.url, json={}).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{plain.server_address[1]}").text == "hello"

