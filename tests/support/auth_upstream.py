"""A loopback Directory HTTP API that requires HTTP Basic credentials (as sent for `http://user:pass@host/v1`)."""

from __future__ import annotations

import base64
from typing import Any

from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import DirectoryHandler, DirectoryServer, RunningUpstream
from tests.support.helpers import with_credentials


class _BasicAuthHandler(DirectoryHandler):
    server: BasicAuthServer

    def _serve(self, kind: str, code: str, query: dict[str, list[str]]) -> None:
        if self.headers.get("Authorization") != self.server.expected:
            self.server.refused += 1
            self._send(401, {"error": "basic credentials required"})
            return
        self.server.accepted += 1
        # Whatever the client put in the request line, the test can check it never held the secret.
        self.server.request_lines.append(self.requestline)
        super()._serve(kind, code, query)


class BasicAuthServer(DirectoryServer):
    def __init__(self, directory: SampleDirectory, user: str, password: str, **kwargs: Any) -> None:
        super().__init__(("127.0.0.1", 0), directory, **kwargs)
        self.RequestHandlerClass = _BasicAuthHandler
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.accepted = 0
        self.refused = 0
        self.request_lines: list[str] = []


class BasicAuthUpstream(RunningUpstream):
    """Serving on a background thread; `.url` has no credentials, `.url_with(user, password)` has them."""

    server: BasicAuthServer

    def url_with(self, user: str, password: str) -> str:
        return with_credentials(self.url, user, password)


def start_basic_auth(scale: int, user: str, password: str) -> BasicAuthUpstream:
    return BasicAuthUpstream(BasicAuthServer(SampleDirectory(scale), user, password))
