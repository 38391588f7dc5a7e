"""Real loopback receivers for the alert tests: an HTTP webhook receiver and an SMTP server (aiosmtpd),
each recording what it received; and a self-signed certificate for the TLS cases."""

from __future__ import annotations

import email
import email.policy
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support.helpers import free_port, serving


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered
    at: float  # time.time() when it arrived


class WebhookReceiver(ThreadingHTTPServer):
    """POSTs to any path are recorded; `status` is answered (`hang` seconds late, for timeouts)."""

    daemon_threads = True

    def __init__(self, status: int = 200, hang: float = 0.0) -> None:
        super().__init__(("127.0.0.1", 0), _WebhookHandler)
        self.status = status
        self.hang = hang
        self.lock = threading.Lock()
        self.received: list[Received] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def accepted(self) -> list[Received]:
        """The requests answered 2xx, in order."""
        with self.lock:
            return [r for r in self.received if 200 <= r.status < 300]

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(r.body) for r in self.accepted()]


class _WebhookHandler(BaseHTTPRequestHandler):
    server: WebhookReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        arrived = time.time()
        if self.server.hang:
            time.sleep(self.server.hang)
        status = self.server.status
        headers = {k.lower(): v for k, v in self.headers.items()}
        with self.server.lock:
            self.server.received.append(Received(headers, body, status, arrived))
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def webhook_receiver(status: int = 200, hang: float = 0.0) -> Iterator[WebhookReceiver]:
    with serving(WebhookReceiver(status, hang)) as server:
        yield server


@dataclass
class MailSink:
    """An aiosmtpd handler that keeps the messages it accepted; `refuse` answers DATA with 550 instead."""

    refuse: bool = False
    messages: list[EmailMessage] = field(default_factory=list)
    refused: int = 0
    logins: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            if self.refuse:
                self.refused += 1
                return "550 5.7.1 refused by the test server"
            raw = envelope.original_content or b""
            message = email.message_from_bytes(raw, policy=email.policy.default)
            self.messages.append(message)  # type: ignore[arg-type]
        return "250 OK"

    def accepted(self) -> list[EmailMessage]:
        with self.lock:
            return list(self.messages)

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                     auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login = (auth_data.login.decode(), auth_data.password.decode())
            with self.lock:
                self.logins.append(login)
            return AuthResult(success=login == ("alerts", "s3cret-smtp-pw"))
        return AuthResult(success=False)


@contextmanager
def smtp_server(sink: MailSink, **kwargs: Any) -> Iterator[Controller]:
    """aiosmtpd on 127.0.0.1 (kwargs: tls_context for STARTTLS, ssl_context for smtps, authenticator...)."""
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (openssl), to trust with SSL_CERT_FILE."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key
