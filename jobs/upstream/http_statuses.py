"""What an upstream's HTTP status means under the contract: the error it raises, and Retry-After."""

from __future__ import annotations

import email.utils
import time

import httpx

from jobs.errors import PermanentUpstreamError, TransientUpstreamError

TRANSIENT_STATUSES = frozenset({408, 425, 429})


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    return str(error)[:200] if error else response.reason_phrase


def check_status(response: httpx.Response, what: str) -> None:
    """Turn an unsuccessful status into the error the contract gives it."""
    status = response.status_code
    if status < 300:
        return
    if status == 404:
        raise PermanentUpstreamError(f"{what}: 404 not found: {_error_text(response)}")
    if status >= 500 or status in TRANSIENT_STATUSES:
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        raise TransientUpstreamError(f"{what}: HTTP {status}", retry_after=retry_after)
    if status in (401, 403):
        raise PermanentUpstreamError(f"{what}: HTTP {status}: the upstream rejected the credentials")
    raise PermanentUpstreamError(f"{what}: HTTP {status}: {_error_text(response)}")
