"""Readers of one environment variable each: its text to a setting's value, or a ConfigError naming it.

Every reader is called as `read(env, name, default)` by jobs.config, which declares each variable once,
with its default and bounds (the table users read in the configuration reference). A reader returns
`default` when the variable is unset or blank; none of them looks at the process's environment itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobs.errors import ConfigError
from jobs.redact import mask_url

_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
WHSEC_PREFIX = "whsec_"


def plain(x: float) -> str:
    return str(int(x)) if x == int(x) else f"{x:g}"  # 1000000, not 1e+06


def whole(env: Mapping[str, str], name: str, default: int, minimum: int = 1, maximum: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    expected = f"a whole number >= {minimum}" if maximum is None else f"a whole number from {minimum} to {maximum}"
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not valid: expected {expected}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise ConfigError(f"{name}={raw!r} is not valid: expected {expected}")
    return value


def number(env: Mapping[str, str], name: str, default: float, minimum: float, maximum: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    expected = f"a number from {plain(minimum)} to {plain(maximum)}"
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not valid: expected {expected}") from None
    # float() reads "nan" and "inf": neither is a usable limit, delay or rate.
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise ConfigError(f"{name}={raw!r} is not valid: expected {expected}")
    return value


def rate(env: Mapping[str, str], name: str, default: float | None, maximum: float) -> float | None:
    """A number (a hard cap, 0 for none) or `auto` (the default when unset: None, a rate learned)."""
    raw = env.get(name)
    if raw is None or raw.strip().lower() in ("", "auto"):
        return default
    try:
        return number(env, name, 0.0, 0.0, maximum)
    except ConfigError as error:
        raise ConfigError(f"{error}, or auto") from None


def text(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    raw = (env.get(name) or "").strip()
    return raw or default


def url(env: Mapping[str, str], name: str, default: str | None, schemes: tuple[str, ...]) -> str | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not raw.startswith(tuple(f"{s}://" for s in schemes)):
        allowed = ", ".join(f"{s}://" for s in schemes)
        raise ConfigError(f"{name}={mask_url(raw)!r} is not valid: expected a URL starting with {allowed}")
    return raw.rstrip("/")


def modules(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    found = tuple(m.strip() for m in (env.get(name) or ",".join(default)).split(",") if m.strip())
    for module in found:
        if not _MODULE_NAME.fullmatch(module):
            raise ConfigError(f"{name}: {module!r} is not a module name: expected e.g. jobs.named.builtin,myapp.tasks")
    return found


def data_dir(env: Mapping[str, str], name: str, default: Any) -> Path:
    """A directory, relative to the one the command starts in, resolved once so the whole process agrees;
    unset: $XDG_DATA_HOME/refreshq (~/.local/share/refreshq), read from the same `env`."""
    raw = text(env, name, None)
    return Path(raw).expanduser().absolute() if raw else default_data_dir(env)


def default_data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".local" / "share")
    return Path(base) / "refreshq"


def webhook_secret(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    """A Standard Webhooks secret: `whsec_<base64>` (the key is the decoded bytes) or any other text (its bytes)."""
    secret = text(env, name, default)
    if secret is not None and secret.startswith(WHSEC_PREFIX):
        import base64
        import binascii

        try:
            key = base64.b64decode(secret.removeprefix(WHSEC_PREFIX), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not key:
            raise ConfigError(f"{name} is not valid: after whsec_ expected base64 of the key")
    return secret


def smtp_url(env: Mapping[str, str], name: str, default: str | None, schemes: tuple[str, ...]) -> str | None:
    from urllib.parse import urlsplit

    found = url(env, name, default, schemes)
    if found is None:
        return None
    try:
        parts = urlsplit(found)
        host, _port = parts.hostname, parts.port
    except ValueError:
        host = None
    if not host or parts.path not in ("", "/"):
        raise ConfigError(f"{name}={mask_url(found)!r} is not valid: expected smtp[s]://[user:password@]host[:port]")
    return found


def addresses(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    found = tuple(a.strip() for a in (env.get(name) or "").split(",") if a.strip())
    for address in found:
        if address.count("@") != 1 or address.startswith("@") or address.endswith("@") or " " in address:
            raise ConfigError(f"{name}: {address!r} is not an email address: expected e.g. ops@example.com")
    return found or default


def address(env: Mapping[str, str], name: str, default: str) -> str:
    found = addresses(env, name, ())
    if len(found) > 1:
        raise ConfigError(f"{name} is not valid: expected one address")
    return found[0] if found else default
