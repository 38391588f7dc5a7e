"""What every command shares: settings read once when the command starts, a lazy connection, and the
start of a long-running process."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click
import redis

from jobs.config import Settings
from jobs.errors import ValidationError
from jobs.redact import RedactingFormatter, credential_parts

if TYPE_CHECKING:
    from jobs.refresh.manager import SyncRefreshManager


@dataclass
class Runtime:
    settings: Settings
    _conn: redis.Redis | None = field(default=None, repr=False)

    @property
    def conn(self) -> redis.Redis:
        """A command's connection: checked at first use, it gives up on a lost server within a second."""
        if self._conn is None:
            from jobs.connection import connect

            self._conn = connect(self.settings)
        return self._conn

    def process_conn(self) -> redis.Redis:
        """A long-running process's connection (worker, scheduler): checked now, then it waits out
        outages of any length, until the process is asked to stop."""
        from jobs.connection import connect

        self._conn = connect(self.settings, patient=True)
        return self._conn

    def manager(self) -> SyncRefreshManager:
        from jobs.refresh.manager import SyncRefreshManager

        return SyncRefreshManager(self.settings, self.conn)


pass_runtime = click.make_pass_decorator(Runtime)


LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
# Libraries whose INFO lines are one per request (httpx logs every request with its URL: thousands
# per refresh); their per-request lines are for debugging only.
QUIET_LOGGERS = ("httpx", "httpcore")


def start_process(settings: Settings, load_tasks: bool, stop_handlers: bool = True) -> None:
    """The start of a long-running process: a stop during start-up is a clean exit (until the process's
    own handlers take over), logs are scrubbed of secrets, and REFRESHQ_TASK_MODULES is imported now: a
    bad one stops the process (exit 2) instead of failing every run."""
    from jobs import shutdown

    if stop_handlers:
        shutdown.install_stop_handlers()
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter(LOG_FORMAT, secrets=_secrets(settings)))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if load_tasks:
        from jobs.named.catalog import configured_tasks

        configured_tasks(settings)


def _secrets(settings: Settings) -> list[str | None]:
    server, upstream, web, delivery = settings.server, settings.upstream, settings.web, settings.alerts.delivery
    urls = (server.redis_url, upstream.url, upstream.llm_base_url, delivery.webhook_url, delivery.smtp_url)
    return [upstream.token, upstream.llm_api_key, web.password, web.metrics_token,
            delivery.webhook_secret, *(part for url in urls for part in credential_parts(url))]


class FiniteFloat(click.FloatRange):
    """A number from `low` to `high`. click.FloatRange alone lets nan through (it passes every
    comparison), which no timeout, latency or rate can be."""

    def __init__(self, low: float, high: float) -> None:
        super().__init__(low, high)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


_UNITS = {"d": 1.0, "h": 1 / 24, "m": 1 / 1440, "s": 1 / 86400}


def parse_age_days(text: str) -> float:
    """`7d`, `12h`, `30m`, `90s` (or a bare number of days) as days."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dhms]?)\s*", text)
    if not match:
        raise ValidationError(f"--older-than {text!r} is not valid: expected e.g. 7d, 12h, 30m or 90s")
    return float(match.group(1)) * _UNITS[match.group(2) or "d"]
