from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobs.config import ServerSettings, Settings
from jobs.errors import ConfigError, RefreshqError


def test_defaults_from_an_empty_environment() -> None:
    s = Settings.from_env({"HOME": "/home/ann"})
    assert s.server.redis_url is None
    assert s.server.data_dir == Path("/home/ann/.local/share/refreshq")
    assert s.limits.max_concurrent_tasks == 5
    assert s.limits.task_timeout == 7200
    assert s.web.port == 5000
    assert s.upstream.kind == "sample"


def test_xdg_data_home_and_explicit_data_dir() -> None:
    assert Settings.from_env({"XDG_DATA_HOME": "/x"}).server.data_dir == Path("/x/refreshq")
    assert Settings.from_env({"REFRESHQ_DATA_DIR": "/d"}).server.data_dir == Path("/d")


def test_values_are_read() -> None:
    s = Settings.from_env(
        {
            "REDIS_URL": "redis://h:6379/2",
            "REFRESHQ_UPSTREAM_URL": "http://127.0.0.1:9/v1/",
            "REFRESHQ_UPSTREAM_TOKEN": "tok",
            "REFRESHQ_MAX_CONCURRENT_TASKS": "3",
            "REFRESHQ_TASK_TIMEOUT": "60",
            "PORT": "8080",
        }
    )
    assert s.server.redis_url == "redis://h:6379/2"
    assert s.upstream.url == "http://127.0.0.1:9/v1"
    assert (s.limits.max_concurrent_tasks, s.limits.task_timeout, s.web.port) == (3, 60, 8080)
    assert s.upstream.kind == "http"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("REFRESHQ_MAX_CONCURRENT_TASKS", "abc", "whole number"),
        ("REFRESHQ_MAX_CONCURRENT_TASKS", "0", "whole number from 1"),
        ("REFRESHQ_TASK_TIMEOUT", "99999999999999999999", "whole number from 1 to 2592000"),
        ("REFRESHQ_UPSTREAM_CONCURRENCY", "100000", "0 to 1024"),
        ("REFRESHQ_JOB_CONCURRENCY", "0", "whole number from 1 to 1024"),
        ("REFRESHQ_SAMPLE_SCALE", "10000000000000", "0 to 100000000"),
        ("REFRESHQ_RETRY_MAX", "1000", "0 to 100"),
        ("REFRESHQ_RETRY_FACTOR", "1e300", "1 to 10"),
        ("REFRESHQ_TASK_MODULES", "jobs.named.builtin,nope..module", "'nope..module' is not a module name"),
        ("REFRESHQ_TASK_TIMEOUT", "2h", "whole number"),
        ("PORT", "http", "whole number"),
        ("PORT", "70000", "65535"),
        ("REDIS_URL", "localhost:6379", "redis://"),
        ("REFRESHQ_UPSTREAM_URL", "ftp://x", "http://"),
        ("REFRESHQ_LLM_BASE_URL", "nope", "http://"),
        ("REFRESHQ_UPSTREAM_RPS", "fast", "number"),
    ],
)
def test_bad_values_name_the_variable_and_what_it_expects(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({name: value})
    assert name in str(err.value)
    assert expected in str(err.value)
    assert isinstance(err.value, RefreshqError)


def test_a_job_keeps_in_flight_its_own_cap_within_the_global_limit() -> None:
    assert Settings.from_env({}).pacing.job_concurrency == 16
    assert Settings.from_env({"REFRESHQ_UPSTREAM_CONCURRENCY": "32"}).pacing.job_concurrency == 16
    assert Settings.from_env({"REFRESHQ_UPSTREAM_CONCURRENCY": "4"}).pacing.job_concurrency == 4
    assert Settings.from_env({"REFRESHQ_UPSTREAM_CONCURRENCY": "0"}).pacing.job_concurrency == 16
    raised = {"REFRESHQ_UPSTREAM_CONCURRENCY": "64", "REFRESHQ_JOB_CONCURRENCY": "48"}
    assert Settings.from_env(raised).pacing.job_concurrency == 48
    unlimited = {"REFRESHQ_UPSTREAM_CONCURRENCY": "0", "REFRESHQ_JOB_CONCURRENCY": "40"}
    assert Settings.from_env(unlimited).pacing.job_concurrency == 40


FLOAT_SETTINGS = ("REFRESHQ_UPSTREAM_RPS", "REFRESHQ_UPSTREAM_TIMEOUT", "REFRESHQ_RETRY_BASE", "REFRESHQ_RETRY_FACTOR",
                  "REFRESHQ_RETRY_CAP", "REFRESHQ_STALL_SECONDS", "REFRESHQ_UPSTREAM_RPS_MARGIN",
                  "REFRESHQ_UPSTREAM_PAUSE_MAX", "REFRESHQ_HEALTH_MIN_SUCCESS_RATE", "REFRESHQ_HEALTH_RUN_WARNING",
                  "REFRESHQ_HEALTH_RUN_CRITICAL", "REFRESHQ_HEALTH_QUEUE_AGE", "REFRESHQ_HEALTH_MEMORY_PERCENT",
                  "REFRESHQ_ALERT_INTERVAL", "REFRESHQ_ALERT_REPEAT", "REFRESHQ_ALERT_FOR",
                  "REFRESHQ_ALERT_FAILURE_RATE_WARNING", "REFRESHQ_ALERT_FAILURE_RATE_CRITICAL",
                  "REFRESHQ_ALERT_TIMEOUT")


def test_every_float_setting_is_read_by_the_finite_check() -> None:
    """The list below covers every float variable of Settings, so a new one cannot skip the tests."""
    floats = {name for name, _where, f in Settings.variables() if f.type in ("float", float, "float | None")}
    assert set(FLOAT_SETTINGS) == floats


@pytest.mark.parametrize("name", FLOAT_SETTINGS)
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400"])
def test_non_finite_numbers_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({name: value})
    assert f"{name}={value!r} is not valid: expected a number from" in str(err.value)


def test_credentials_in_a_bad_url_are_masked_in_the_error() -> None:
    for name in ("REDIS_URL", "REFRESHQ_UPSTREAM_URL", "REFRESHQ_LLM_BASE_URL"):
        with pytest.raises(ConfigError) as err:
            Settings.from_env({name: "ftp://admin:hunter2-secret@example.com/v1"})
        assert "hunter2" not in str(err.value) and "ftp://admin:***@example.com/v1" in str(err.value)


def test_llm_needs_a_model() -> None:
    with pytest.raises(ConfigError, match="REFRESHQ_LLM_MODEL"):
        Settings.from_env({"REFRESHQ_LLM_BASE_URL": "http://127.0.0.1:1/v1"})


def test_secrets_stay_out_of_repr() -> None:
    s = Settings.from_env(
        {
            "REFRESHQ_UPSTREAM_TOKEN": "s3cret-token",
            "REFRESHQ_LLM_API_KEY": "sk-key",
            "REFRESHQ_LLM_BASE_URL": "http://127.0.0.1:1/v1",
            "REFRESHQ_LLM_MODEL": "m",
            "REFRESHQ_WEB_PASSWORD": "pw-123",
        }
    )
    text = repr(s)
    for secret in ("s3cret-token", "sk-key", "pw-123"):
        assert secret not in text
    with_urls = Settings.from_env({"REDIS_URL": "redis://:redis-pw-1@h:6379/0",
                                   "REFRESHQ_UPSTREAM_URL": "http://u:upstream-pw-2@h/v1"})
    text = repr(with_urls)
    assert "redis_url='redis://:***@h:6379/0'" in text and "url='http://u:***@h/v1'" in text
    assert "redis-pw-1" not in text and "upstream-pw-2" not in text


def test_settings_are_frozen() -> None:
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.web.port = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        s.web = s.web  # type: ignore[misc]


@pytest.mark.parametrize(("name", "value"), [
    ("REFRESHQ_STALL_SECONDS", "0"), ("REFRESHQ_STALL_SECONDS", "2592001"), ("REFRESHQ_STALL_SECONDS", "soon"),
    ("REFRESHQ_WEB_STREAMS", "0"), ("REFRESHQ_WEB_STREAMS", "1001"), ("REFRESHQ_WEB_STREAMS", "2.5"),
    ("REFRESHQ_WEB_TRUST_PROXY", "-1"), ("REFRESHQ_WEB_TRUST_PROXY", "6"), ("REFRESHQ_WEB_TRUST_PROXY", "yes"),
])
def test_web_settings_out_of_range_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}={value!r} is not valid"):
        Settings.from_env({name: value})


def test_web_settings_defaults() -> None:
    settings = Settings.from_env({})
    assert (settings.health.stall_seconds, settings.web.streams, settings.web.trust_proxy) == (600.0, 64, 0)
    assert Settings.from_env({"REFRESHQ_WEB_TRUST_PROXY": "1"}).web.trust_proxy == 1
    assert Settings.from_env({"REFRESHQ_STALL_SECONDS": "90.5"}).health.stall_seconds == 90.5


class _Recording(dict[str, str]):
    """An environment that counts which variables are looked up, and how often."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.asked: list[str] = []

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        self.asked.append(name)
        return super().get(name, default)

    def __getitem__(self, name: str) -> str:
        self.asked.append(name)
        return super().__getitem__(name)


# Not settings: where the default data directory is when REFRESHQ_DATA_DIR is unset.
DATA_DIR_BASES = {"XDG_DATA_HOME", "HOME"}


def test_every_variable_is_declared_once_and_read_once() -> None:
    """One declaration per variable (its one default), and from_env reads each through it, once: no
    variable is read twice (with a second default) or read without being declared."""
    declared = [name for name, _where, _field in Settings.variables()]
    assert len(declared) == len(set(declared)), sorted(n for n in declared if declared.count(n) > 1)
    env = _Recording({"HOME": "/home/ann"})
    Settings.from_env(env)
    assert sorted(n for n in env.asked if n not in DATA_DIR_BASES) == sorted(declared)
    assert len(declared) >= 45  # the scan sees every group


def test_an_empty_environment_gives_each_fields_default() -> None:
    """The defaults are written once, on the fields: what an unset variable reads is Settings()'s value."""
    home = {"HOME": "/home/ann"}
    defaults = Settings(server=ServerSettings(data_dir=Path("/home/ann/.local/share/refreshq")))
    assert Settings.from_env(home) == defaults
    assert Settings.from_env({**home, **{name: "" for name, _w, _f in Settings.variables()}}) == defaults


def test_variables_say_where_each_lands() -> None:
    where = {name: place for name, place, _field in Settings.variables()}
    assert where["REFRESHQ_UPSTREAM_RPS"] == "pacing.rps" and where["PORT"] == "web.port"
    assert where["REFRESHQ_SMTP_URL"] == "alerts.delivery.smtp_url"
    settings = Settings.from_env({"REFRESHQ_UPSTREAM_RPS": "7", "REFRESHQ_SMTP_URL": "smtp://h",
                                  "REFRESHQ_ALERT_EMAIL_TO": "a@b.c"})
    assert (settings.pacing.rps, settings.alerts.delivery.smtp_url) == (7.0, "smtp://h")
