"""The alert channels: a webhook (Alertmanager's JSON, signed as Standard Webhooks do) and email (smtplib).

Each send is bounded: every network step of it times out after REFRESHQ_ALERT_TIMEOUT seconds. A failure
raises AlertDeliveryError with a message free of credentials (URLs masked, the SMTP password never part of
any text), so it can be logged and stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from jobs.config import WHSEC_PREFIX, DeliverySettings
from jobs.errors import AlertDeliveryError
from jobs.redact import mask_urls, without_credentials

WEBHOOK, EMAIL = "webhook", "email"
FIRING, RESOLVED = "firing", "resolved"


@dataclass(frozen=True)
class Notice:
    """What one notice says: its id (the webhook-id and the email's Message-ID) and its alerts."""

    notice_id: str
    alerts: list[dict[str, Any]]

    @property
    def status(self) -> str:
        return FIRING if any(a["status"] == FIRING for a in self.alerts) else RESOLVED


def _common(dicts: list[dict[str, str]]) -> dict[str, str]:
    if not dicts:
        return {}
    first = dicts[0]
    return {k: v for k, v in first.items() if all(d.get(k) == v for d in dicts[1:])}


def webhook_body(notice: Notice) -> bytes:
    """Alertmanager's webhook payload (version 4) for the notice's alerts."""
    payload = {
        "version": "4",
        "groupKey": "refreshq",
        "truncatedAlerts": 0,
        "status": notice.status,
        "receiver": "refreshq",
        "groupLabels": {},
        "commonLabels": _common([a["labels"] for a in notice.alerts]),
        "commonAnnotations": _common([a["annotations"] for a in notice.alerts]),
        "externalURL": "",
        "alerts": notice.alerts,
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: `whsec_<base64>` decoded, any other text as its bytes."""
    if secret.startswith(WHSEC_PREFIX):
        return base64.b64decode(secret.removeprefix(WHSEC_PREFIX))
    return secret.encode()


def signature_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """webhook-id, webhook-timestamp and webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": f"v1,{base64.b64encode(digest).decode()}"}


def send_webhook(settings: DeliverySettings, notice: Notice) -> str | None:
    if not settings.webhook_url:
        raise AlertDeliveryError("webhook: REFRESHQ_ALERT_WEBHOOK_URL is not set")
    body = webhook_body(notice)
    headers = {"content-type": "application/json", "user-agent": "refreshq-alerts"}
    msg_id = f"msg_{notice.notice_id}"  # the same on every retry: receivers drop a repeat by it
    if settings.webhook_secret:
        headers |= signature_headers(settings.webhook_secret, msg_id, int(time.time()), body)
    else:
        headers["webhook-id"] = msg_id
    try:
        with httpx.Client(timeout=settings.timeout, follow_redirects=False) as client:
            response = client.post(settings.webhook_url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise AlertDeliveryError(mask_urls(f"webhook: {type(exc).__name__}: {exc}")) from None
    if not 200 <= response.status_code < 300:
        where = without_credentials(settings.webhook_url)
        raise AlertDeliveryError(f"webhook: {where} answered HTTP {response.status_code}")
    return None


def email_message(settings: DeliverySettings, notice: Notice) -> EmailMessage:
    first = notice.alerts[0]
    more = f" (+{len(notice.alerts) - 1} more)" if len(notice.alerts) > 1 else ""
    message = EmailMessage()
    message["Subject"] = f"[refreshq] {notice.status.upper()}: {first['annotations']['summary']}{more}"
    message["From"] = settings.email_from
    message["To"] = ", ".join(settings.email_to)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = f"<{notice.notice_id}@refreshq>"  # the same on every retry
    lines = []
    for alert in notice.alerts:
        labels = alert["labels"]
        lines += [
            f"[{alert['status'].upper()}] {labels['severity']} {labels['alertname']} ({labels['subject']})",
            f"  {alert['annotations']['description']}",
            f"  since {alert['startsAt']}" + (f", resolved {alert['endsAt']}" if alert["status"] == RESOLVED else ""),
            "",
        ]
    message.set_content("\n".join(lines))
    return message


def _smtp(settings: DeliverySettings) -> tuple[smtplib.SMTP, tuple[str, str] | None]:
    """A connected SMTP client (TLS from the start for smtps://, STARTTLS when offered for smtp://)."""
    url = urlsplit(settings.smtp_url or "")
    host, context = url.hostname or "", ssl.create_default_context()
    client: smtplib.SMTP
    if url.scheme == "smtps":
        client = smtplib.SMTP_SSL(host, url.port or 465, timeout=settings.timeout, context=context)
    else:
        client = smtplib.SMTP(host, url.port or 25, timeout=settings.timeout)
        client.ehlo()
        if client.has_extn("starttls"):
            client.starttls(context=context)
            client.ehlo()
    login = (unquote(url.username), unquote(url.password or "")) if url.username else None
    return client, login


def send_email(settings: DeliverySettings, notice: Notice) -> str | None:
    """Send the notice; a note when some (not all) recipients were refused: sending again would repeat it
    to the others, so that counts as delivered."""
    if not settings.smtp_url:
        raise AlertDeliveryError("email: REFRESHQ_SMTP_URL is not set")
    message = email_message(settings, notice)
    where = without_credentials(settings.smtp_url)
    try:
        client, login = _smtp(settings)
        try:
            if login is not None:
                client.login(*login)
            refused = client.send_message(message)
        finally:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()
    except smtplib.SMTPResponseException as exc:
        raise AlertDeliveryError(f"email: {where} refused: {exc.smtp_code} {_text(exc.smtp_error)}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise AlertDeliveryError(f"email: {where} refused every recipient ({len(exc.recipients)})") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise AlertDeliveryError(f"email: {where}: {type(exc).__name__}: {exc}") from None
    return f"{where} refused {len(refused)} of {len(settings.email_to)} recipients" if refused else None


def _text(value: bytes | str) -> str:
    return (value.decode(errors="replace") if isinstance(value, bytes) else value)[:200]


SENDERS = {WEBHOOK: send_webhook, EMAIL: send_email}


def send(channel: str, settings: DeliverySettings, notice: Notice) -> str | None:
    """Deliver the notice on one channel (a note if only partly); AlertDeliveryError if it was not."""
    return SENDERS[channel](settings, notice)
