"""Keeping credentials out of what refreshq prints, logs and stores: URLs with userinfo, tokens, keys.

One masking rule for every printed URL (REDIS_URL, REFRESHQ_UPSTREAM_URL, REFRESHQ_LLM_BASE_URL):
`scheme://user:***@host/...`, or `scheme://***@host/...` when the userinfo is a single part (often a
token). URLs stored with a task carry no userinfo at all; the worker re-attaches it from its settings.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
# Secrets shorter than this are masked inside URLs but not replaced everywhere in a text: replacing
# every "pw" or "a" would garble whole log lines without hiding anything a guess would not find.
MIN_SECRET = 3
_PASSWORD_PARAM = re.compile(r"(?i)(^|&)(password=)[^&#]*")
# `scheme://userinfo@` anywhere in a text. The userinfo runs to the last '@' before whitespace, a quote,
# '?' or '#', so an unencoded '/' or '@' in a password is masked too (at worst a path is over-masked).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s'\"<>?#]+)@")


def _mask_userinfo(userinfo: str) -> str:
    user, colon, _password = userinfo.partition(":")
    return f"{user}:{MASK}" if colon else MASK


def mask_url(url: str) -> str:
    """The URL with its password (userinfo, or a `password=` query parameter) replaced by ***, for printing."""
    base, query_sep, query = mask_urls(url).partition("?")
    return base + query_sep + _PASSWORD_PARAM.sub(rf"\1\2{MASK}", query)


def mask_urls(text: str) -> str:
    """Every URL in `text` with its userinfo masked (log lines, exception messages)."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{_mask_userinfo(m['userinfo'])}@", text)


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """(the URL without userinfo, (user, password) percent-decoded, or None when it has none)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=hostport)), (unquote(user), unquote(password))


def without_credentials(url: str) -> str:
    """The URL as it may be stored: no userinfo."""
    return split_credentials(url)[0]


def credential_parts(url: str | None) -> list[str]:
    """The secret strings a URL carries (raw and decoded), to scrub them from texts."""
    if not url:
        return []
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return []
    userinfo = parts.netloc.rpartition("@")[0]
    user, colon, password = userinfo.partition(":")
    secrets = [userinfo, password, unquote(password)] if colon else [userinfo, user, unquote(user)]
    return [s for s in secrets if s]


class Redactor:
    """Removes secrets from text that may end up in an exception message or a log line: the given
    secrets (tokens, keys, URL passwords) wherever they appear, and the userinfo of any URL."""

    def __init__(self, *secrets: str | None) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        text = mask_urls(text)
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text


def url_redactor(url: str | None, *secrets: str | None) -> Redactor:
    """A Redactor for a client of `url` that also holds `secrets`."""
    return Redactor(*secrets, *credential_parts(url))


class RedactingFormatter(logging.Formatter):
    """A log formatter that masks URL userinfo and the given secrets in every line, tracebacks included.

    The clients already keep credentials out of their messages; this is the backstop for text refreshq
    does not write itself (library log lines, exception messages of other packages).
    """

    def __init__(self, fmt: str | None = None, secrets: Iterable[str | None] = ()) -> None:
        super().__init__(fmt)
        self._redact = Redactor(*secrets)

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))
