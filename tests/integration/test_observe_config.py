"""The observability settings: read once, every bad value refused naming its variable (exit 2 from the CLI),
secrets kept out of repr()."""

from __future__ import annotations

import pytest

from jobs.config import Settings
from jobs.errors import ConfigError
from tests.support.helpers import run_cli

BAD = [
    ("REFRESHQ_HEALTH_MIN_SUCCESS_RATE", "101", "0 to 100"),
    ("REFRESHQ_HEALTH_MIN_SUCCESS_RATE", "nan", "0 to 100"),
    ("REFRESHQ_HEALTH_RUN_WARNING", "0", "1 to 2592000"),
    ("REFRESHQ_HEALTH_RUN_CRITICAL", "abc", "1 to 2592000"),
    ("REFRESHQ_HEALTH_MAX_RUNNING", "-1", "0 to 10000"),
    ("REFRESHQ_STALL_SECONDS", "inf", "1 to 2592000"),
    ("REFRESHQ_HEALTH_QUEUE_AGE", "0.5", "1 to 2592000"),
    ("REFRESHQ_HEALTH_MEMORY_PERCENT", "0", "1 to 100"),
    ("REFRESHQ_ALERT_INTERVAL", "0", "1 to 86400"),
    ("REFRESHQ_ALERT_REPEAT", "-5", "1 to 2592000"),
    ("REFRESHQ_ALERT_FOR", "1e9", "0 to 86400"),
    ("REFRESHQ_ALERT_FAILURE_RATE_WARNING", "x", "0 to 100"),
    ("REFRESHQ_ALERT_FAILURE_RATE_CRITICAL", "200", "0 to 100"),
    ("REFRESHQ_ALERT_FAILURE_RATE_MIN_TASKS", "0", "1 to 1000000"),
    ("REFRESHQ_ALERT_TIMEOUT", "0", "0.1 to 300"),
    ("REFRESHQ_ALERT_WEBHOOK_URL", "ftp://hooks.example", "http://"),
    ("REFRESHQ_ALERT_WEBHOOK_SECRET", "whsec_!!!not-base64", "base64"),
    ("REFRESHQ_SMTP_URL", "mailto:ops@example.com", "smtp://"),
    ("REFRESHQ_SMTP_URL", "smtp://:25", "host"),
    ("REFRESHQ_SMTP_URL", "smtp://mail.example:port", "host"),
    ("REFRESHQ_ALERT_EMAIL_TO", "not-an-address", "email address"),
    ("REFRESHQ_ALERT_EMAIL_FROM", "a@x.example,b@x.example", "one address"),
]


@pytest.mark.parametrize(("name", "value", "expected"), BAD)
def test_a_bad_value_names_its_variable(name: str, value: str, expected: str) -> None:
    env = {name: value}
    if name in ("REFRESHQ_SMTP_URL", "REFRESHQ_ALERT_EMAIL_FROM"):
        env["REFRESHQ_ALERT_EMAIL_TO"] = "ops@example.com"
    with pytest.raises(ConfigError, match=name) as caught:
        Settings.from_env(env)
    assert expected in str(caught.value)


def test_thresholds_that_contradict_each_other_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"REFRESHQ_HEALTH_RUN_CRITICAL.*REFRESHQ_HEALTH_RUN_WARNING"):
        Settings.from_env({"REFRESHQ_HEALTH_RUN_WARNING": "600", "REFRESHQ_HEALTH_RUN_CRITICAL": "60"})
    with pytest.raises(ConfigError, match="REFRESHQ_ALERT_FAILURE_RATE_CRITICAL"):
        Settings.from_env({"REFRESHQ_ALERT_FAILURE_RATE_CRITICAL": "5"})  # below the default warning, 10
    with pytest.raises(ConfigError, match="REFRESHQ_ALERT_EMAIL_TO"):
        Settings.from_env({"REFRESHQ_SMTP_URL": "smtp://mail.example"})


def test_defaults_are_the_reference_designs() -> None:
    s = Settings.from_env({})
    h, a = s.health, s.alerts
    assert (h.min_success_rate, h.run_warning, h.run_critical, h.max_running) == (90, 3600, 7200, 5)
    assert (h.stall_seconds, h.queue_age, h.memory_percent) == (600, 600, 90)
    assert (a.interval, a.repeat, a.failure_rate_warning, a.failure_rate_critical) == (60, 14400, 10, 20)
    assert a.channels == ()
    assert s.web.metrics_token is None


def test_secrets_stay_out_of_repr() -> None:
    s = Settings.from_env({
        "REFRESHQ_SMTP_URL": "smtps://alerts:s3cret-smtp-pw@mail.example:465",
        "REFRESHQ_ALERT_EMAIL_TO": "ops@example.com, oncall@example.com",
        "REFRESHQ_ALERT_WEBHOOK_URL": "https://hook:hook-pw@hooks.example/x",
        "REFRESHQ_ALERT_WEBHOOK_SECRET": "whsec_c2VjcmV0LWtleS1ieXRlcw==",
        "REFRESHQ_METRICS_TOKEN": "scrape-token-123",
    })
    assert s.alerts.channels == ("webhook", "email")
    assert s.alerts.delivery.email_to == ("ops@example.com", "oncall@example.com")
    shown = repr(s)
    for secret in ("s3cret-smtp-pw", "hook-pw", "c2VjcmV0LWtleS1ieXRlcw", "scrape-token-123"):
        assert secret not in shown
    assert "smtps://alerts:***@mail.example:465" in shown


@pytest.mark.parametrize(("name", "value"), [("REFRESHQ_ALERT_INTERVAL", "soon"), ("REFRESHQ_SMTP_URL", "x"),
                                             ("REFRESHQ_STALL_SECONDS", "-1")])
def test_the_cli_exits_2_naming_the_variable(env: dict[str, str], name: str, value: str) -> None:
    for command in (("health",), ("metrics",), ("alerts", "list")):
        result = run_cli(*command, env={**env, name: value})
        assert result.returncode == 2, (command, result.stderr)
        assert name in result.stderr and result.stdout == ""
