from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from jobs.config import Settings
from jobs.errors import ConfigError, RefreshqError


def test_defaults_from_an_empty_environment() -> None:
    s = Settings.from_env({"HOME": "/home/ann"})
    assert s.redis_url is None
    assert s.data_dir == Path("/home/ann/.local/share/refreshq")
    assert s.max_concurrent_tasks == 5
    assert s.task_timeout == 7200
    assert s.port == 5000
    assert s.upstream_kind == "sample"


def test_xdg_data_home_and_explicit_data_dir() -> None:
    assert Settings.from_env({"XDG_DATA_HOME": "/x"}).data_dir == Path("/x/refreshq")
    assert Settings.from_env({"REFRESHQ_DATA_DIR": "/d"}).data_dir == Path("/d")


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
    assert s.redis_url == "redis://h:6379/2"
    assert s.upstream_url == "http://127.0.0.1:9/v1"
    assert (s.max_concurrent_tasks, s.task_timeout, s.port) == (3, 60, 8080)
    assert s.upstream_kind == "http"


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
    assert Settings.from_env({}).job_concurrency == 16
    assert Settings.from_env({"REFRESHQ_UPSTREAM_CONCURRENCY": "32"}).job_concurrency == 16
    assert Settings.from_env({"REFRESHQ_UPSTREAM_CONCURRENCY": "4"}).job_concurrency == 4
    assert Settings.from_env({"REFRESHQ_UPSTREAM_CONCURRENCY": "0"}).job_concurrency == 16
    raised = {"REFRESHQ_UPSTREAM_CONCURRENCY": "64", "REFRESHQ_JOB_CONCURRENCY": "48"}
    assert Settings.from_env(raised).job_concurrency == 48
    unlimited = {"REFRESHQ_UPSTREAM_CONCURRENCY": "0", "REFRESHQ_JOB_CONCURRENCY": "40"}
    assert Settings.from_env(unlimited).job_concurrency == 40


FLOAT_SETTINGS = ("REFRESHQ_UPSTREAM_RPS", "REFRESHQ_UPSTREAM_TIMEOUT", "REFRESHQ_RETRY_BASE", "REFRESHQ_RETRY_FACTOR",
                  "REFRESHQ_RETRY_CAP", "REFRESHQ_STALL_SECONDS", "REFRESHQ_UPSTREAM_RPS_MARGIN",
                  "REFRESHQ_UPSTREAM_PAUSE_MAX")


def test_every_float_setting_is_read_by_the_finite_check() -> None:
    """The list below covers every float field of Settings, so a new one cannot skip the tests."""
    floats = {f.name for f in dataclasses.fields(Settings) if f.type in ("float", float, "float | None")}
    assert {name.removeprefix("REFRESHQ_").lower() for name in FLOAT_SETTINGS} == floats


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
    assert "redis_url='redis://:***@h:6379/0'" in text and "upstream_url='http://u:***@h/v1'" in text
    assert "redis-pw-1" not in text and "upstream-pw-2" not in text


def test_settings_are_frozen() -> None:
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


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
    assert (settings.stall_seconds, settings.web_streams, settings.web_trust_proxy) == (600.0, 64, 0)
    assert Settings.from_env({"REFRESHQ_WEB_TRUST_PROXY": "1"}).web_trust_proxy == 1
    assert Settings.from_env({"REFRESHQ_STALL_SECONDS": "90.5"}).stall_seconds == 90.5
