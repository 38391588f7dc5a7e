"""Settings: one frozen object built from the environment when a command starts, never at import."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from jobs.errors import ConfigError
from jobs.redact import mask_url

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
MAX_STALL_SECONDS = 30 * 86_400.0
MAX_WEB_STREAMS = 1000
MAX_PROXY_HOPS = 5
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _default_data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".local" / "share")
    return Path(base) / "refreshq"


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1, maximum: int | None = None) -> int:
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


def _plain(x: float) -> str:
    return str(int(x)) if x == int(x) else f"{x:g}"  # 1000000, not 1e+06


def _float(env: Mapping[str, str], name: str, default: float, minimum: float, maximum: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    expected = f"a number from {_plain(minimum)} to {_plain(maximum)}"
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not valid: expected {expected}") from None
    # float() reads "nan" and "inf": neither is a usable limit, delay or rate.
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise ConfigError(f"{name}={raw!r} is not valid: expected {expected}")
    return value


def _rps(env: Mapping[str, str]) -> float | None:
    """REFRESHQ_UPSTREAM_RPS: a number (a hard cap, 0 for none) or `auto` (unset: auto) -> None."""
    name, raw = "REFRESHQ_UPSTREAM_RPS", env.get("REFRESHQ_UPSTREAM_RPS")
    if raw is None or raw.strip().lower() in ("", "auto"):
        return None
    try:
        return _float(env, name, 0.0, 0.0, MAX_UPSTREAM_RPS)
    except ConfigError as error:
        raise ConfigError(f"{error}, or auto") from None


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    if not raw.startswith(tuple(f"{s}://" for s in schemes)):
        allowed = ", ".join(f"{s}://" for s in schemes)
        raise ConfigError(f"{name}={mask_url(raw)!r} is not valid: expected a URL starting with {allowed}")
    return raw.rstrip("/")


def _modules(env: Mapping[str, str], name: str, default: str) -> tuple[str, ...]:
    modules = tuple(m.strip() for m in (env.get(name) or default).split(",") if m.strip())
    for module in modules:
        if not _MODULE_NAME.fullmatch(module):
            raise ConfigError(f"{name}: {module!r} is not a module name: expected e.g. jobs.named.builtin,myapp.tasks")
    return modules


def _str(env: Mapping[str, str], name: str) -> str | None:
    raw = (env.get(name) or "").strip()
    return raw or None


REDIS_SCHEMES = ("redis", "rediss", "unix")
# Requests one job keeps in flight by default (REFRESHQ_JOB_CONCURRENCY), within the global limit if any.
DEFAULT_JOB_CONCURRENCY = 16
HTTP_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class Settings:
    """Everything refreshq reads from the environment. Secrets are kept out of repr()."""

    redis_url: str | None = None
    data_dir: Path = field(default_factory=lambda: _default_data_dir(os.environ))
    upstream_url: str | None = None
    upstream_token: str | None = field(default=None, repr=False)
    llm_base_url: str | None = None
    llm_api_key: str | None = field(default=None, repr=False)
    llm_model: str | None = None
    sample_scale: int = 1_000_000
    max_concurrent_tasks: int = 5
    task_timeout: int = 7200
    upstream_concurrency: int = 16
    job_concurrency_max: int = DEFAULT_JOB_CONCURRENCY
    # Requests per second to the upstream: a hard cap, paced by send time; 0: no per-second limit at all;
    # None (REFRESHQ_UPSTREAM_RPS unset or `auto`): learned from the upstream's answers (jobs.pacing).
    upstream_rps: float | None = None
    # The share of a configured cap left unused, room for the time between sending and arriving.
    upstream_rps_margin: float = 0.03
    # The longest a Retry-After pauses every worker's requests (a longer one is cut to this).
    upstream_pause_max: float = 60.0
    upstream_timeout: float = 30.0
    upstream_attempts: int = 5
    retry_base: float = 1.0
    retry_factor: float = 2.0
    retry_cap: float = 60.0
    retry_max: int = 3
    max_pending: int = 1000
    port: int = 5000
    web_host: str = "127.0.0.1"
    web_password: str | None = field(default=None, repr=False)
    # A RUNNING task whose progress has not moved for this long is flagged stalled (web, observability).
    stall_seconds: float = 600.0
    # Server-Sent Event streams the web process keeps open at once (its threads: this many plus headroom).
    web_streams: int = 64
    # Proxies in front of the web process whose X-Forwarded-For / -Proto it believes (0: none, headers ignored).
    web_trust_proxy: int = 0
    task_modules: tuple[str, ...] = ("jobs.named.builtin",)
    metrics_token: str | None = field(default=None, repr=False)
    # Defined below: thresholds of the health rules, and the alert rules' settings and channels.
    health: HealthThresholds = field(default_factory=lambda: HealthThresholds())
    alerts: AlertSettings = field(default_factory=lambda: AlertSettings())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build the settings; raise ConfigError naming the first bad variable."""
        env = os.environ if environ is None else environ
        data_dir = _str(env, "REFRESHQ_DATA_DIR")
        llm_base_url = _url(env, "REFRESHQ_LLM_BASE_URL", HTTP_SCHEMES)
        llm_model = _str(env, "REFRESHQ_LLM_MODEL")
        if llm_base_url and not llm_model:
            raise ConfigError("REFRESHQ_LLM_MODEL is not set: expected a model name when REFRESHQ_LLM_BASE_URL is set")
        return cls(
            redis_url=_url(env, "REDIS_URL", REDIS_SCHEMES),
            # Relative to the directory the command starts in, resolved once so the whole process agrees.
            data_dir=Path(data_dir).expanduser().absolute() if data_dir else _default_data_dir(env),
            upstream_url=_url(env, "REFRESHQ_UPSTREAM_URL", HTTP_SCHEMES),
            upstream_token=_str(env, "REFRESHQ_UPSTREAM_TOKEN"),
            llm_base_url=llm_base_url,
            llm_api_key=_str(env, "REFRESHQ_LLM_API_KEY"),
            llm_model=llm_model,
            sample_scale=_int(env, "REFRESHQ_SAMPLE_SCALE", 1_000_000, minimum=0, maximum=MAX_SAMPLE_SCALE),
            max_concurrent_tasks=_int(env, "REFRESHQ_MAX_CONCURRENT_TASKS", 5, maximum=MAX_TASKS),
            task_timeout=_int(env, "REFRESHQ_TASK_TIMEOUT", 7200, maximum=MAX_TASK_TIMEOUT),
            upstream_concurrency=_int(  # 0: no global limit (see job_concurrency)
                env, "REFRESHQ_UPSTREAM_CONCURRENCY", 16, minimum=0, maximum=MAX_UPSTREAM_CONCURRENCY
            ),
            job_concurrency_max=_int(
                env, "REFRESHQ_JOB_CONCURRENCY", DEFAULT_JOB_CONCURRENCY, maximum=MAX_UPSTREAM_CONCURRENCY
            ),
            upstream_rps=_rps(env),
            upstream_rps_margin=_float(env, "REFRESHQ_UPSTREAM_RPS_MARGIN", 0.03, 0.0, MAX_RPS_MARGIN),
            upstream_pause_max=_float(env, "REFRESHQ_UPSTREAM_PAUSE_MAX", 60.0, 0.0, MAX_UPSTREAM_PAUSE),
            upstream_timeout=_float(env, "REFRESHQ_UPSTREAM_TIMEOUT", 30.0, 0.1, MAX_UPSTREAM_TIMEOUT),
            upstream_attempts=_int(env, "REFRESHQ_UPSTREAM_ATTEMPTS", 5, maximum=MAX_ATTEMPTS),
            retry_base=_float(env, "REFRESHQ_RETRY_BASE", 1.0, 0.0, MAX_RETRY_BASE),
            retry_factor=_float(env, "REFRESHQ_RETRY_FACTOR", 2.0, 1.0, MAX_RETRY_FACTOR),
            retry_cap=_float(env, "REFRESHQ_RETRY_CAP", 60.0, 0.0, MAX_RETRY_CAP),
            retry_max=_int(env, "REFRESHQ_RETRY_MAX", 3, minimum=0, maximum=MAX_ATTEMPTS),
            max_pending=_int(env, "REFRESHQ_MAX_PENDING", 1000, maximum=MAX_PENDING),
            port=_int(env, "PORT", 5000, maximum=65535),
            web_host=_str(env, "REFRESHQ_WEB_HOST") or "127.0.0.1",
            web_password=_str(env, "REFRESHQ_WEB_PASSWORD"),
            stall_seconds=_float(env, "REFRESHQ_STALL_SECONDS", 600.0, 1.0, MAX_STALL_SECONDS),
            web_streams=_int(env, "REFRESHQ_WEB_STREAMS", 64, maximum=MAX_WEB_STREAMS),
            web_trust_proxy=_int(env, "REFRESHQ_WEB_TRUST_PROXY", 0, minimum=0, maximum=MAX_PROXY_HOPS),
            task_modules=_modules(env, "REFRESHQ_TASK_MODULES", "jobs.named.builtin"),
            metrics_token=_str(env, "REFRESHQ_METRICS_TOKEN"),
            health=HealthThresholds.from_env(env),
            alerts=AlertSettings.from_env(env),
        )

    def __repr__(self) -> str:
        # A repr ends up in tracebacks and logs: secrets are left out, credentials inside URLs masked.
        parts = []
        for f in fields(self):
            if not f.repr:
                continue
            value = getattr(self, f.name)
            shown = repr(mask_url(value)) if f.name.endswith("_url") and isinstance(value, str) else repr(value)
            parts.append(f"{f.name}={shown}")
        return f"Settings({', '.join(parts)})"

    @property
    def job_concurrency(self) -> int:
        """Requests one job keeps in flight at most (its threads and connections): REFRESHQ_JOB_CONCURRENCY,
        within the global limit. More threads than that in one process cost more CPU per record than
        they gain (a full refresh, 2 workers, 32 in flight: 1.63x the fetch floor with 32 threads a
        job, 1.44-1.51x with 16, 1.48x with 12, 1.61x with 8, side by side); raise it for an upstream
        that answers slowly but cheaply."""
        return min(self.upstream_concurrency or self.job_concurrency_max, self.job_concurrency_max)

    @property
    def upstream_kind(self) -> str:
        """Which upstream a new task talks to: the HTTP API, an LLM, or the built-in sample."""
        if self.upstream_url:
            return "http"
        if self.llm_base_url:
            return "llm"
        return "sample"


MAX_SECONDS = 30 * 86_400.0


@dataclass(frozen=True)
class HealthThresholds:
    """Thresholds of the health rules (`refreshq health`), the reference design's by default; the alert
    rules share the run-time, stall and queue-age ones."""

    min_success_rate: float = 90.0      # percent of the refreshes ended in 24 h that succeeded
    run_warning: float = 3600.0         # seconds a task may run before a warning...
    run_critical: float = 7200.0        # ...and before it is critical
    max_running: int = 5                # running tasks before a warning
    stall_seconds: float = 600.0        # a running task's progress unmoved this long: stalled
    queue_age: float = 600.0            # seconds the oldest job of a queue may wait
    memory_percent: float = 90.0        # Redis used_memory as a share of maxmemory

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HealthThresholds:
        warning = _float(env, "REFRESHQ_HEALTH_RUN_WARNING", 3600.0, 1.0, MAX_SECONDS)
        critical = _float(env, "REFRESHQ_HEALTH_RUN_CRITICAL", 7200.0, 1.0, MAX_SECONDS)
        if critical < warning:
            raise ConfigError(
                f"REFRESHQ_HEALTH_RUN_CRITICAL={_plain(critical)!r} is not valid: expected at least "
                f"REFRESHQ_HEALTH_RUN_WARNING ({_plain(warning)})"
            )
        return cls(
            min_success_rate=_float(env, "REFRESHQ_HEALTH_MIN_SUCCESS_RATE", 90.0, 0.0, 100.0),
            run_warning=warning,
            run_critical=critical,
            max_running=_int(env, "REFRESHQ_HEALTH_MAX_RUNNING", 5, minimum=0, maximum=MAX_TASKS),
            stall_seconds=_float(env, "REFRESHQ_STALL_SECONDS", 600.0, 1.0, MAX_SECONDS),
            queue_age=_float(env, "REFRESHQ_HEALTH_QUEUE_AGE", 600.0, 1.0, MAX_SECONDS),
            memory_percent=_float(env, "REFRESHQ_HEALTH_MEMORY_PERCENT", 90.0, 1.0, 100.0),
        )


SMTP_SCHEMES = ("smtp", "smtps")
WHSEC_PREFIX = "whsec_"


def _webhook_secret(env: Mapping[str, str]) -> str | None:
    """A Standard Webhooks secret: `whsec_<base64>` (the key is the decoded bytes) or any other text (its bytes)."""
    secret = _str(env, "REFRESHQ_ALERT_WEBHOOK_SECRET")
    if secret is not None and secret.startswith(WHSEC_PREFIX):
        import base64
        import binascii

        try:
            key = base64.b64decode(secret.removeprefix(WHSEC_PREFIX), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not key:
            raise ConfigError("REFRESHQ_ALERT_WEBHOOK_SECRET is not valid: after whsec_ expected base64 of the key")
    return secret


def _smtp_url(env: Mapping[str, str]) -> str | None:
    from urllib.parse import urlsplit

    url = _url(env, "REFRESHQ_SMTP_URL", SMTP_SCHEMES)
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port
    except ValueError:
        host = None
    if not host or parts.path not in ("", "/"):
        raise ConfigError(f"REFRESHQ_SMTP_URL={mask_url(url)!r} is not valid: expected smtp[s]://[user:password@]host[:port]")
    return url


def _addresses(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    addresses = tuple(a.strip() for a in (env.get(name) or "").split(",") if a.strip())
    for address in addresses:
        if address.count("@") != 1 or address.startswith("@") or address.endswith("@") or " " in address:
            raise ConfigError(f"{name}: {address!r} is not an email address: expected e.g. ops@example.com")
    return addresses


@dataclass(frozen=True)
class AlertSettings:
    """The alert rules' timing and thresholds, and the channels notices go to (each optional)."""

    interval: float = 60.0              # seconds between two evaluations by the active scheduler
    repeat: float = 14_400.0            # a still-firing alert is sent again after this many seconds
    for_seconds: float = 60.0           # how long a backlog, a missing worker or a failure rate must hold
    failure_rate_warning: float = 10.0  # percent of the refreshes ended in 24 h that failed
    failure_rate_critical: float = 20.0
    failure_rate_min_tasks: int = 5     # ended refreshes in 24 h before a rate means anything
    timeout: float = 10.0               # seconds one delivery attempt may take, per channel
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    smtp_url: str | None = None
    email_from: str = "refreshq@localhost"
    email_to: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AlertSettings:
        warning = _float(env, "REFRESHQ_ALERT_FAILURE_RATE_WARNING", 10.0, 0.0, 100.0)
        critical = _float(env, "REFRESHQ_ALERT_FAILURE_RATE_CRITICAL", 20.0, 0.0, 100.0)
        if critical < warning:
            raise ConfigError(
                f"REFRESHQ_ALERT_FAILURE_RATE_CRITICAL={_plain(critical)!r} is not valid: expected at least "
                f"REFRESHQ_ALERT_FAILURE_RATE_WARNING ({_plain(warning)})"
            )
        smtp_url = _smtp_url(env)
        email_to = _addresses(env, "REFRESHQ_ALERT_EMAIL_TO")
        if smtp_url and not email_to:
            raise ConfigError("REFRESHQ_ALERT_EMAIL_TO is not set: expected the recipients (comma list) of "
                              "REFRESHQ_SMTP_URL's alert emails")
        sender = _addresses(env, "REFRESHQ_ALERT_EMAIL_FROM")
        if len(sender) > 1:
            raise ConfigError("REFRESHQ_ALERT_EMAIL_FROM is not valid: expected one address")
        return cls(
            interval=_float(env, "REFRESHQ_ALERT_INTERVAL", 60.0, 1.0, 86_400.0),
            repeat=_float(env, "REFRESHQ_ALERT_REPEAT", 14_400.0, 1.0, MAX_SECONDS),
            for_seconds=_float(env, "REFRESHQ_ALERT_FOR", 60.0, 0.0, 86_400.0),
            failure_rate_warning=warning,
            failure_rate_critical=critical,
            failure_rate_min_tasks=_int(env, "REFRESHQ_ALERT_FAILURE_RATE_MIN_TASKS", 5, maximum=1_000_000),
            timeout=_float(env, "REFRESHQ_ALERT_TIMEOUT", 10.0, 0.1, 300.0),
            webhook_url=_url(env, "REFRESHQ_ALERT_WEBHOOK_URL", HTTP_SCHEMES),
            webhook_secret=_webhook_secret(env),
            smtp_url=smtp_url,
            email_from=sender[0] if sender else "refreshq@localhost",
            email_to=email_to,
        )

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.repr}
        for name in ("webhook_url", "smtp_url"):
            if shown[name] is not None:
                shown[name] = mask_url(shown[name])
        return f"AlertSettings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @property
    def channels(self) -> tuple[str, ...]:
        """The configured channels, by name: "webhook", "email"."""
        return (("webhook",) if self.webhook_url else ()) + (("email",) if self.smtp_url else ())
