"""Settings: one frozen object built from the environment when a process starts, never at import.

Each variable is declared once, below, by the field that holds it: its name, its default and its bounds
(`variable(...)`). `from_env()` reads every one of them through those declarations, and
`Settings.variables()` lists them (the configuration reference); a field's default is the value of an
unset variable. Settings are grouped by what they configure; the groups are small frozen dataclasses.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, Self

from jobs import env_values
from jobs.env_values import WHSEC_PREFIX, plain
from jobs.errors import ConfigError
from jobs.redact import mask_url

__all__ = [
    "HTTP_SCHEMES", "MAX_SAMPLE_SCALE", "WHSEC_PREFIX", "AlertSettings", "DeliverySettings", "HealthThresholds",
    "LimitSettings", "PacingSettings", "RetrySettings", "ServerSettings", "Settings", "UpstreamSettings",
    "WebSettings",
]

# Upper bounds of the numeric settings: far beyond any sane use, low enough that no computation made
# with them (timestamps, backoff powers, thread pools, Redis expiry times) overflows or exhausts memory.
MAX_SAMPLE_SCALE = 100_000_000
MAX_TASKS = 10_000
MAX_TASK_TIMEOUT = 30 * 86_400
MAX_UPSTREAM_CONCURRENCY = 1024
MAX_UPSTREAM_RPS = 1_000_000.0
MAX_RPS_MARGIN = 0.5
MAX_UPSTREAM_PAUSE = 3600.0
MAX_UPSTREAM_TIMEOUT = 3600.0
MAX_ATTEMPTS = 100
MAX_RETRY_BASE = 3600.0
MAX_RETRY_FACTOR = 10.0
MAX_RETRY_CAP = 86_400.0
MAX_PENDING = 10_000_000
MAX_SECONDS = 30 * 86_400.0
MAX_WEB_STREAMS = 1000
MAX_PROXY_HOPS = 5
REDIS_SCHEMES = ("redis", "rediss", "unix")
HTTP_SCHEMES = ("http", "https")
SMTP_SCHEMES = ("smtp", "smtps")
# Requests one job keeps in flight by default (REFRESHQ_JOB_CONCURRENCY), within the global limit if any.
DEFAULT_JOB_CONCURRENCY = 16

Reader = Callable[[Mapping[str, str], str, Any], Any]


def variable(name: str, default: Any, reader: Reader, *, secret: bool = False,
             factory: Callable[[], Any] | None = None) -> Any:
    """A field set from the environment variable `name` by `reader`; `default` (or `factory`, for a
    default that depends on the process) is the value of an unset variable, written nowhere else."""
    meta = {"env": name, "read": reader}
    if factory is not None:
        return field(default_factory=factory, repr=not secret, metadata=meta)
    return field(default=default, repr=not secret, metadata=meta)


def _int(minimum: int = 1, maximum: int | None = None) -> Reader:
    return partial(env_values.whole, minimum=minimum, maximum=maximum)


def _float(minimum: float, maximum: float) -> Reader:
    return partial(env_values.number, minimum=minimum, maximum=maximum)


def _url(schemes: tuple[str, ...]) -> Reader:
    return partial(env_values.url, schemes=schemes)


def _declared(cls: type[Any]) -> Iterator[Field[Any]]:
    return (f for f in fields(cls) if "env" in f.metadata)


class _Group:
    """What every group shares: reading its variables, and a repr that keeps secrets and credentials out."""

    @classmethod
    def _values(cls, env: Mapping[str, str]) -> dict[str, Any]:
        """Each declared variable's value, by field name, read in declaration order."""
        values = {}
        for f in _declared(cls):
            default = f.default if f.default is not MISSING else None
            values[f.name] = f.metadata["read"](env, f.metadata["env"], default)
        return values

    @classmethod
    def read(cls, env: Mapping[str, str]) -> Self:
        """The group, from `env` (Settings.from_env reads every group)."""
        return cls(**cls._values(env))

    def __repr__(self) -> str:
        # A repr ends up in tracebacks and logs: secrets are left out, credentials inside URLs masked.
        parts = []
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.repr:
                shown = mask_url(value) if f.name.endswith("url") and isinstance(value, str) else value
                parts.append(f"{f.name}={shown!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


@dataclass(frozen=True, repr=False)
class ServerSettings(_Group):
    """What every process of a deployment must agree on: its Redis, its data directory, its task modules."""

    redis_url: str | None = variable("REDIS_URL", None, _url(REDIS_SCHEMES))
    # Unset: $XDG_DATA_HOME/refreshq, read when the settings are made (a default of the process, not a constant).
    data_dir: Path = variable("REFRESHQ_DATA_DIR", None, env_values.data_dir,  # noqa: RUF009 - a field declaration
                              factory=lambda: env_values.default_data_dir(os.environ))
    task_modules: tuple[str, ...] = variable("REFRESHQ_TASK_MODULES", ("jobs.named.builtin",), env_values.modules)


@dataclass(frozen=True, repr=False)
class UpstreamSettings(_Group):
    """Which upstream a new refresh talks to (the HTTP API, an LLM or the built-in sample) and how one
    request to it is made."""

    url: str | None = variable("REFRESHQ_UPSTREAM_URL", None, _url(HTTP_SCHEMES))
    token: str | None = variable("REFRESHQ_UPSTREAM_TOKEN", None, env_values.text, secret=True)
    llm_base_url: str | None = variable("REFRESHQ_LLM_BASE_URL", None, _url(HTTP_SCHEMES))
    llm_api_key: str | None = variable("REFRESHQ_LLM_API_KEY", None, env_values.text, secret=True)
    llm_model: str | None = variable("REFRESHQ_LLM_MODEL", None, env_values.text)
    sample_scale: int = variable("REFRESHQ_SAMPLE_SCALE", 1_000_000, _int(0, MAX_SAMPLE_SCALE))
    timeout: float = variable("REFRESHQ_UPSTREAM_TIMEOUT", 30.0, _float(0.1, MAX_UPSTREAM_TIMEOUT))
    attempts: int = variable("REFRESHQ_UPSTREAM_ATTEMPTS", 5, _int(1, MAX_ATTEMPTS))

    @classmethod
    def read(cls, env: Mapping[str, str]) -> Self:
        values = cls._values(env)
        if values["llm_base_url"] and not values["llm_model"]:
            raise ConfigError("REFRESHQ_LLM_MODEL is not set: expected a model name when REFRESHQ_LLM_BASE_URL is set")
        return cls(**values)

    @property
    def kind(self) -> str:
        """Which upstream a new task talks to: the HTTP API, an LLM, or the built-in sample."""
        if self.url:
            return "http"
        if self.llm_base_url:
            return "llm"
        return "sample"


@dataclass(frozen=True, repr=False)
class PacingSettings(_Group):
    """How many requests the workers keep in flight and send per second (jobs.pacing, jobs.limits)."""

    # 0: no global limit (see job_concurrency).
    concurrency: int = variable("REFRESHQ_UPSTREAM_CONCURRENCY", 16, _int(0, MAX_UPSTREAM_CONCURRENCY))
    job_concurrency_max: int = variable("REFRESHQ_JOB_CONCURRENCY", DEFAULT_JOB_CONCURRENCY,
                                        _int(1, MAX_UPSTREAM_CONCURRENCY))
    # Requests per second to the upstream: a hard cap, paced by send time; 0: no per-second limit at all;
    # None (REFRESHQ_UPSTREAM_RPS unset or `auto`): learned from the upstream's answers (jobs.pacing).
    rps: float | None = variable("REFRESHQ_UPSTREAM_RPS", None, partial(env_values.rate, maximum=MAX_UPSTREAM_RPS))
    # The share of a configured cap left unused, room for the time between sending and arriving.
    rps_margin: float = variable("REFRESHQ_UPSTREAM_RPS_MARGIN", 0.03, _float(0.0, MAX_RPS_MARGIN))
    # The longest a Retry-After pauses every worker's requests (a longer one is cut to this).
    pause_max: float = variable("REFRESHQ_UPSTREAM_PAUSE_MAX", 60.0, _float(0.0, MAX_UPSTREAM_PAUSE))

    @property
    def job_concurrency(self) -> int:
        """Requests one job keeps in flight at most (its threads and connections): REFRESHQ_JOB_CONCURRENCY,
        within the global limit. More threads than that in one process cost more CPU per record than
        they gain (a full refresh, 2 workers, 32 in flight: 1.63x the fetch floor with 32 threads a
        job, 1.44-1.51x with 16, 1.48x with 12, 1.61x with 8, side by side); raise it for an upstream
        that answers slowly but cheaply."""
        return min(self.concurrency or self.job_concurrency_max, self.job_concurrency_max)


@dataclass(frozen=True, repr=False)
class LimitSettings(_Group):
    """How many refresh tasks run and wait at once, and how long one may run."""

    max_concurrent_tasks: int = variable("REFRESHQ_MAX_CONCURRENT_TASKS", 5, _int(1, MAX_TASKS))
    task_timeout: int = variable("REFRESHQ_TASK_TIMEOUT", 7200, _int(1, MAX_TASK_TIMEOUT))
    max_pending: int = variable("REFRESHQ_MAX_PENDING", 1000, _int(1, MAX_PENDING))


@dataclass(frozen=True, repr=False)
class RetrySettings(_Group):
    """The scheduler's retries of failed refresh jobs: delay base * factor ** n, at most cap, max times."""

    base: float = variable("REFRESHQ_RETRY_BASE", 1.0, _float(0.0, MAX_RETRY_BASE))
    factor: float = variable("REFRESHQ_RETRY_FACTOR", 2.0, _float(1.0, MAX_RETRY_FACTOR))
    cap: float = variable("REFRESHQ_RETRY_CAP", 60.0, _float(0.0, MAX_RETRY_CAP))
    max: int = variable("REFRESHQ_RETRY_MAX", 3, _int(0, MAX_ATTEMPTS))


@dataclass(frozen=True, repr=False)
class WebSettings(_Group):
    """The web process: where it listens, who may use it, and what it holds open."""

    port: int = variable("PORT", 5000, _int(1, 65535))
    host: str = variable("REFRESHQ_WEB_HOST", "127.0.0.1", env_values.text)
    password: str | None = variable("REFRESHQ_WEB_PASSWORD", None, env_values.text, secret=True)
    # Server-Sent Event streams the web process keeps open at once (its threads: this many plus headroom).
    streams: int = variable("REFRESHQ_WEB_STREAMS", 64, _int(1, MAX_WEB_STREAMS))
    # Proxies in front of the web process whose X-Forwarded-For / -Proto it believes (0: none, headers ignored).
    trust_proxy: int = variable("REFRESHQ_WEB_TRUST_PROXY", 0, _int(0, MAX_PROXY_HOPS))
    metrics_token: str | None = variable("REFRESHQ_METRICS_TOKEN", None, env_values.text, secret=True)


def _at_least(values: Mapping[str, Any], low: str, high: str, names: tuple[str, str]) -> None:
    if values[high] < values[low]:
        raise ConfigError(f"{names[1]}={plain(values[high])!r} is not valid: expected at least "
                          f"{names[0]} ({plain(values[low])})")


@dataclass(frozen=True, repr=False)
class HealthThresholds(_Group):
    """Thresholds of the health rules (`refreshq health`), the reference design's by default; the alert
    rules share the run-time, stall and queue-age ones."""

    # Percent of the refreshes ended in 24 h that succeeded.
    min_success_rate: float = variable("REFRESHQ_HEALTH_MIN_SUCCESS_RATE", 90.0, _float(0.0, 100.0))
    # Seconds a task may run before a warning, and before it is critical.
    run_warning: float = variable("REFRESHQ_HEALTH_RUN_WARNING", 3600.0, _float(1.0, MAX_SECONDS))
    run_critical: float = variable("REFRESHQ_HEALTH_RUN_CRITICAL", 7200.0, _float(1.0, MAX_SECONDS))
    max_running: int = variable("REFRESHQ_HEALTH_MAX_RUNNING", 5, _int(0, MAX_TASKS))
    # A RUNNING task whose progress has not moved for this long is stalled (health, alerts, web).
    stall_seconds: float = variable("REFRESHQ_STALL_SECONDS", 600.0, _float(1.0, MAX_SECONDS))
    queue_age: float = variable("REFRESHQ_HEALTH_QUEUE_AGE", 600.0, _float(1.0, MAX_SECONDS))
    # Redis used_memory as a share of maxmemory.
    memory_percent: float = variable("REFRESHQ_HEALTH_MEMORY_PERCENT", 90.0, _float(1.0, 100.0))

    @classmethod
    def read(cls, env: Mapping[str, str]) -> Self:
        values = cls._values(env)
        _at_least(values, "run_warning", "run_critical",
                  ("REFRESHQ_HEALTH_RUN_WARNING", "REFRESHQ_HEALTH_RUN_CRITICAL"))
        return cls(**values)


@dataclass(frozen=True, repr=False)
class DeliverySettings(_Group):
    """Where alert notices go (each channel optional) and how long one delivery attempt may take."""

    timeout: float = variable("REFRESHQ_ALERT_TIMEOUT", 10.0, _float(0.1, 300.0))
    webhook_url: str | None = variable("REFRESHQ_ALERT_WEBHOOK_URL", None, _url(HTTP_SCHEMES))
    webhook_secret: str | None = variable("REFRESHQ_ALERT_WEBHOOK_SECRET", None, env_values.webhook_secret, secret=True)
    smtp_url: str | None = variable("REFRESHQ_SMTP_URL", None, partial(env_values.smtp_url, schemes=SMTP_SCHEMES))
    email_from: str = variable("REFRESHQ_ALERT_EMAIL_FROM", "refreshq@localhost", env_values.address)
    email_to: tuple[str, ...] = variable("REFRESHQ_ALERT_EMAIL_TO", (), env_values.addresses)

    @classmethod
    def read(cls, env: Mapping[str, str]) -> Self:
        values = cls._values(env)
        if values["smtp_url"] and not values["email_to"]:
            raise ConfigError("REFRESHQ_ALERT_EMAIL_TO is not set: expected the recipients (comma list) of "
                              "REFRESHQ_SMTP_URL's alert emails")
        return cls(**values)

    @property
    def channels(self) -> tuple[str, ...]:
        """The configured channels, by name: "webhook", "email"."""
        return (("webhook",) if self.webhook_url else ()) + (("email",) if self.smtp_url else ())


@dataclass(frozen=True, repr=False)
class AlertSettings(_Group):
    """The alert rules' timing and thresholds, and where their notices go (`delivery`)."""

    # Seconds between two evaluations by the active scheduler.
    interval: float = variable("REFRESHQ_ALERT_INTERVAL", 60.0, _float(1.0, 86_400.0))
    # A still-firing alert is sent again after this many seconds.
    repeat: float = variable("REFRESHQ_ALERT_REPEAT", 14_400.0, _float(1.0, MAX_SECONDS))
    # How long a backlog, a missing worker or a failure rate must hold.
    for_seconds: float = variable("REFRESHQ_ALERT_FOR", 60.0, _float(0.0, 86_400.0))
    # Percent of the refreshes ended in 24 h that failed.
    failure_rate_warning: float = variable("REFRESHQ_ALERT_FAILURE_RATE_WARNING", 10.0, _float(0.0, 100.0))
    failure_rate_critical: float = variable("REFRESHQ_ALERT_FAILURE_RATE_CRITICAL", 20.0, _float(0.0, 100.0))
    # Ended refreshes in 24 h before a rate means anything.
    failure_rate_min_tasks: int = variable("REFRESHQ_ALERT_FAILURE_RATE_MIN_TASKS", 5, _int(1, 1_000_000))
    delivery: DeliverySettings = field(default_factory=DeliverySettings)

    @classmethod
    def read(cls, env: Mapping[str, str]) -> Self:
        values = cls._values(env)
        _at_least(values, "failure_rate_warning", "failure_rate_critical",
                  ("REFRESHQ_ALERT_FAILURE_RATE_WARNING", "REFRESHQ_ALERT_FAILURE_RATE_CRITICAL"))
        return cls(**values, delivery=DeliverySettings.read(env))

    @property
    def channels(self) -> tuple[str, ...]:
        """The configured channels, by name (see DeliverySettings)."""
        return self.delivery.channels


@dataclass(frozen=True)
class Settings:
    """Everything refreshq reads from the environment, by group. Secrets are kept out of repr()."""

    server: ServerSettings = field(default_factory=ServerSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    pacing: PacingSettings = field(default_factory=PacingSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    web: WebSettings = field(default_factory=WebSettings)
    health: HealthThresholds = field(default_factory=HealthThresholds)
    alerts: AlertSettings = field(default_factory=AlertSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build the settings; raise ConfigError naming the first bad variable."""
        env = os.environ if environ is None else environ
        return cls(
            server=ServerSettings.read(env), upstream=UpstreamSettings.read(env),
            pacing=PacingSettings.read(env), limits=LimitSettings.read(env),
            retry=RetrySettings.read(env), web=WebSettings.read(env),
            health=HealthThresholds.read(env), alerts=AlertSettings.read(env),
        )

    @staticmethod
    def variables() -> Iterator[tuple[str, str, Field[Any]]]:
        """Every environment variable the settings read: (name, where it lands, e.g. "pacing.rps", its field)."""
        groups: list[tuple[str, type[Any]]] = [(f.name, f.default_factory) for f in fields(Settings)]  # type: ignore[misc]
        groups.append(("alerts.delivery", DeliverySettings))
        for prefix, group in groups:
            for f in _declared(group):
                yield f.metadata["env"], f"{prefix}.{f.name}", f
