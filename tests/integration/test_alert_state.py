"""Alerts as Alertmanager keeps them, on the real server: pending for its `for` time, firing once, repeated
only after REFRESHQ_ALERT_REPEAT (or when it gets worse), resolved once; overlapping evaluations notify a
change once; signed webhooks and emails delivered from the outbox, retried when refused, never lost."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import standardwebhooks
from aiosmtpd.smtp import AuthResult

from bench.observe_seed import FakeRun, fake_run
from jobs import keys, queues
from jobs.config import Settings
from jobs.duties.alerts import AlertDuty
from jobs.observe import alert_state, delivery, health
from jobs.observe import report as reports
from jobs.redis_values import as_text_map
from scheduler import Scheduler
from tests.support.helpers import redis_keys_holding, run_cli, wait_until
from tests.support.observe_helpers import MailSink, self_signed, smtp_server, webhook_receiver

SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGVzdHMtMTIzNDU2Nzg5MA=="


def _settings(env: dict[str, str], **extra: str) -> Settings:
    return Settings.from_env({**env, **extra})


def _notices(conn: redis.Redis) -> list[dict[str, Any]]:
    """The notices in the outbox, oldest first, with their alerts decoded."""
    found = []
    for notice_id in delivery.outbox_ids(conn):
        fields = as_text_map(conn.hgetall(keys.alert_notice(notice_id)))
        found.append({"id": notice_id, **fields, "alerts": json.loads(fields["alerts"])})
    return found


def _statuses(notice: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(a["labels"]["alertname"], a["labels"]["subject"], a["status"]) for a in notice["alerts"]]


def test_pending_then_firing_once_repeated_after_repeat_then_resolved(conn: redis.Redis, env: dict[str, str]) -> None:
    settings = _settings(env, REFRESHQ_ALERT_FOR="30", REFRESHQ_ALERT_REPEAT="600",
                         REFRESHQ_ALERT_WEBHOOK_URL="http://127.0.0.1:9/hook")
    job = queues.queue(conn, queues.LOW).enqueue("tests.support.job_functions.add", 1, 2)  # no worker: "no_worker"
    t0 = time.time()
    alert_state.evaluate(conn, settings, now=t0)
    [pending] = reports.alerts_list(conn, settings)["alerts"]
    assert (pending["rule"], pending["subject"], pending["state"]) == ("no_worker", "low", "pending")
    assert _notices(conn) == []
    alert_state.evaluate(conn, settings, now=t0 + 29)
    assert _notices(conn) == []  # its `for` time has not passed
    alert_state.evaluate(conn, settings, now=t0 + 30)
    [first] = _notices(conn)
    assert _statuses(first) == [("no_worker", "low", "firing")] and first["ch:webhook"] == "pending"
    for later in (t0 + 31, t0 + 300, t0 + 629):
        alert_state.evaluate(conn, settings, now=later)
    assert len(_notices(conn)) == 1  # sent once, not at every evaluation
    alert_state.evaluate(conn, settings, now=t0 + 630)
    assert [_statuses(n) for n in _notices(conn)][1] == [("no_worker", "low", "firing")]  # the repeat
    listed = reports.alerts_list(conn, settings)
    assert listed["firing"] == 1 and listed["alerts"][0]["sent"] == 2
    assert listed["alerts"][0]["last_sent_at"] == alert_state.rfc3339(t0 + 630)
    job.delete()
    alert_state.evaluate(conn, settings, now=t0 + 640)
    resolved = _notices(conn)[2]
    assert _statuses(resolved) == [("no_worker", "low", "resolved")]
    assert resolved["alerts"][0]["endsAt"] == alert_state.rfc3339(t0 + 640)
    assert resolved["alerts"][0]["startsAt"] == alert_state.rfc3339(t0)
    alert_state.evaluate(conn, settings, now=t0 + 700)
    assert len(_notices(conn)) == 3 and reports.alerts_list(conn, settings)["alerts"] == []


def test_a_rise_in_severity_is_notified_at_once_a_fall_is_not(conn: redis.Redis, env: dict[str, str]) -> None:
    now = time.time()
    fake_run(conn, FakeRun("t_long", "full", now - 60, now - 50, progress=10))
    hook = {"REFRESHQ_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/hook"}
    warning = _settings(env, REFRESHQ_HEALTH_RUN_WARNING="10", REFRESHQ_HEALTH_RUN_CRITICAL="1000", **hook)
    critical = _settings(env, REFRESHQ_HEALTH_RUN_WARNING="10", REFRESHQ_HEALTH_RUN_CRITICAL="20", **hook)
    alert_state.evaluate(conn, warning, now=now)
    alert_state.evaluate(conn, critical, now=now + 1)
    alert_state.evaluate(conn, warning, now=now + 2)
    severities = [n["alerts"][0]["labels"]["severity"] for n in _notices(conn)]
    assert severities == ["warning", "critical"]
    assert reports.alerts_list(conn, warning)["alerts"][0]["severity"] == "warning"  # shown, not notified


def test_overlapping_evaluations_notify_a_change_once(conn: redis.Redis, env: dict[str, str]) -> None:
    """Two schedulers evaluating at the same moment (a failover overlap): the WATCHed commit lets one win."""
    settings = _settings(env, REFRESHQ_ALERT_FOR="0", REFRESHQ_ALERT_WEBHOOK_URL="http://127.0.0.1:9/hook")
    queues.queue(conn, queues.HIGH).enqueue("tests.support.job_functions.add", 1, 2)
    clients = [redis.Redis(connection_pool=conn.connection_pool) for _ in range(8)]
    now, start = time.time(), threading.Barrier(len(clients))

    def evaluate(client: redis.Redis) -> None:
        start.wait()
        alert_state.evaluate(client, settings, now=now)

    threads = [threading.Thread(target=evaluate, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [_statuses(n) for n in _notices(conn)] == [[("no_worker", "high", "firing")]]


def test_a_signed_webhook_verifies_and_keeps_its_id_across_retries(conn: redis.Redis, env: dict[str, str]) -> None:
    with webhook_receiver(status=503) as hook:
        settings = _settings(env, REFRESHQ_ALERT_FOR="0", REFRESHQ_ALERT_WEBHOOK_URL=hook.url,
                             REFRESHQ_ALERT_WEBHOOK_SECRET=SECRET, REFRESHQ_RETRY_BASE="0.1")
        now = time.time()
        fake_run(conn, FakeRun("t_bad", "province", now - 30, now - 20, now - 1, "FAILED"))
        alert_state.evaluate(conn, settings)
        assert delivery.deliver_due(conn, settings) == 1
        [notice] = _notices(conn)
        assert notice["ch:webhook"] == "pending" and "HTTP 503" in notice["note:webhook"]
        hook.status = 200
        wait_until(lambda: delivery.deliver_due(conn, settings), 5, 0.05, "the retry to fall due")
    first, second = hook.received
    assert (first.status, second.status) == (503, 200)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == f"msg_{notice['id']}"
    payload = standardwebhooks.Webhook(SECRET).verify(second.body, second.headers)
    assert payload["version"] == "4" and payload["status"] == "firing" and payload["receiver"] == "refreshq"
    [alert] = payload["alerts"]
    assert alert["labels"] == {"alertname": "refresh_failed", "severity": "critical", "subject": "province:110000",
                               "service": "refreshq"}
    assert "t_bad" in alert["annotations"]["description"] and alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["fingerprint"] == alert_state.fingerprint("refresh_failed", "province:110000")
    tampered = second.body.replace(b"critical", b"warning")
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(tampered, second.headers)
    assert delivery.outbox_ids(conn) == []  # delivered: out of the outbox
    assert redis_keys_holding(conn, SECRET.removeprefix("whsec_")) == []


def test_a_notice_claimed_by_a_scheduler_no_longer_active_is_taken_over_at_once(
    conn: redis.Redis, env: dict[str, str]
) -> None:
    with webhook_receiver() as hook:
        settings = _settings(env, REFRESHQ_ALERT_FOR="0", REFRESHQ_ALERT_WEBHOOK_URL=hook.url)
        now = time.time()
        fake_run(conn, FakeRun("t_bad", "province", now - 30, now - 20, now - 1, "FAILED"))
        alert_state.evaluate(conn, settings)
        conn.set(keys.SCHEDULER_LOCK, "token-of-a")
        killed = threading.Event()
        killed.set()  # claims, then stops before sending: as a scheduler killed mid-delivery
        assert delivery.deliver_due(conn, settings, killed) == 1
        assert delivery.deliver_due(conn, settings) == 0  # its claim while it is the active one: the lease holds
        assert hook.received == []
        conn.set(keys.SCHEDULER_LOCK, "token-of-b")  # the next scheduler took the lock
        assert delivery.deliver_due(conn, settings) == 1  # not after the lease (70 s here)
        assert len(hook.accepted()) == 1
        assert delivery.deliver_due(conn, settings) == 0
    assert delivery.outbox_ids(conn) == [] and conn.hlen(keys.ALERT_CLAIMS) == 0


def test_a_raw_secret_signs_with_its_bytes(conn: redis.Redis, env: dict[str, str]) -> None:
    with webhook_receiver() as hook:
        settings = _settings(env, REFRESHQ_ALERT_FOR="0", REFRESHQ_ALERT_WEBHOOK_URL=hook.url,
                             REFRESHQ_ALERT_WEBHOOK_SECRET="plain text secret")
        fake_run(conn, FakeRun("t_bad", "full", time.time() - 5, time.time() - 4, time.time(), "FAILED"))
        alert_state.evaluate(conn, settings)
        delivery.deliver_due(conn, settings)
    [received] = hook.accepted()
    assert standardwebhooks.Webhook(b"plain text secret").verify(received.body, received.headers)["status"] == "firing"


class _Auth:
    def __init__(self, sink: MailSink) -> None:
        self.sink = sink

    def __call__(self, *args: Any) -> AuthResult:
        return self.sink.authenticate(*args)


def _tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    import ssl

    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts the test certificate, nothing else
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@pytest.mark.parametrize("scheme", ["smtp", "smtps"])
def test_email_over_starttls_or_tls_with_a_login_that_is_never_stored(
    conn: redis.Redis, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    sink = MailSink()
    context = _tls(tmp_path, monkeypatch)
    # aiosmtpd offers AUTH over STARTTLS only when told TLS is required; on implicit TLS it cannot tell.
    tls: dict[str, Any] = {"tls_context": context, "require_starttls": True, "auth_require_tls": True}
    if scheme == "smtps":
        tls = {"ssl_context": context, "auth_require_tls": False}
    with smtp_server(sink, authenticator=_Auth(sink), **tls) as server:
        settings = _settings(env, REFRESHQ_ALERT_FOR="0",
                             REFRESHQ_SMTP_URL=f"{scheme}://alerts:s3cret-smtp-pw@127.0.0.1:{server.port}",
                             REFRESHQ_ALERT_EMAIL_FROM="refreshq@example.com",
                             REFRESHQ_ALERT_EMAIL_TO="ops@example.com,oncall@example.com")
        fake_run(conn, FakeRun("t_bad", "full", time.time() - 5, time.time() - 4, time.time(), "FAILED"))
        alert_state.evaluate(conn, settings)
        delivery.deliver_due(conn, settings)
    [message] = sink.accepted()
    assert sink.logins == [("alerts", "s3cret-smtp-pw")]
    assert message["Subject"] == "[refreshq] FIRING: refresh full failed"
    assert (message["From"], message["To"]) == ("refreshq@example.com", "ops@example.com, oncall@example.com")
    assert message["Message-ID"].endswith("@refreshq>")
    assert "critical refresh_failed (full)" in message.get_content()
    assert redis_keys_holding(conn, "s3cret-smtp-pw") == []
    assert delivery.outbox_ids(conn) == []


def test_a_refusing_smtp_server_leaves_the_notice_pending_and_retried(conn: redis.Redis, env: dict[str, str]) -> None:
    sink = MailSink(refuse=True)
    with smtp_server(sink) as server, webhook_receiver() as hook:
        settings = _settings(env, REFRESHQ_ALERT_FOR="0", REFRESHQ_RETRY_BASE="0.2", REFRESHQ_RETRY_CAP="0.2",
                             REFRESHQ_SMTP_URL=f"smtp://127.0.0.1:{server.port}",
                             REFRESHQ_ALERT_EMAIL_TO="ops@x.example", REFRESHQ_ALERT_WEBHOOK_URL=hook.url)
        fake_run(conn, FakeRun("t_bad", "full", time.time() - 5, time.time() - 4, time.time(), "FAILED"))
        alert_state.evaluate(conn, settings)
        for _ in range(3):  # three refused attempts, each after its backoff
            wait_until(lambda: delivery.deliver_due(conn, settings), 5, 0.05, "an attempt to fall due")
        [notice] = _notices(conn)
        assert (notice["ch:email"], notice["ch:webhook"], notice["tries:email"]) == ("pending", "delivered", "3")
        assert "550" in notice["note:email"] and sink.refused == 3
        channel = reports.alerts_list(conn, settings)["channels"]["email"]
        assert channel["failures"] == 3 and "550" in channel["last_error"]
        failing = [i for i in reports.health_report(conn, settings)["issues"] if i["rule"] == "alert_channel_failing"]
        assert [i["subject"] for i in failing] == ["email"]
        sink.refuse = False
        wait_until(lambda: delivery.deliver_due(conn, settings), 5, 0.05, "the next attempt")
    assert len(sink.accepted()) == 1 and len(hook.accepted()) == 1  # the webhook is not sent again
    assert delivery.outbox_ids(conn) == []
    assert reports.alerts_list(conn, settings)["channels"]["email"]["failures"] == 0


def test_delivery_never_holds_up_the_tick(conn: redis.Redis, env: dict[str, str]) -> None:
    with webhook_receiver(hang=3.0) as hook:
        settings = _settings(env, REFRESHQ_ALERT_FOR="0", REFRESHQ_ALERT_INTERVAL="1", REFRESHQ_ALERT_TIMEOUT="0.5",
                             REFRESHQ_ALERT_WEBHOOK_URL=hook.url)
        queues.queue(conn, queues.LOW).enqueue("tests.support.job_functions.add", 1, 2)
        duty = AlertDuty(settings)
        scheduler = Scheduler(conn, duties=[duty])
        try:
            ticks = []
            for _ in range(3):
                started = time.monotonic()
                scheduler.run_once()
                ticks.append(time.monotonic() - started)
                time.sleep(0.2)
            assert max(ticks) < 0.5, ticks  # the evaluation is quick; the hanging receiver is the thread's
            wait_until(lambda: reports.alerts_list(conn, settings)["channels"].get("webhook", {}).get("failures"),
                       10, 0.05, "a timed-out attempt to be recorded")
        finally:
            duty.close()
    [entry] = [d for d in reports.alerts_list(conn, settings)["recent_deliveries"] if d["channel"] == "webhook"][:1]
    assert entry["outcome"] == "pending" and "Timeout" in entry["note"] and entry["seconds"] < 2.5


def test_alerts_test_sends_on_every_channel_and_names_the_one_that_failed(
    conn: redis.Redis, env: dict[str, str]
) -> None:
    sink = MailSink(refuse=True)
    with smtp_server(sink) as server, webhook_receiver() as hook:
        channels = {"REFRESHQ_ALERT_WEBHOOK_URL": hook.url, "REFRESHQ_SMTP_URL": f"smtp://127.0.0.1:{server.port}",
                    "REFRESHQ_ALERT_EMAIL_TO": "ops@x.example"}
        failed = run_cli("alerts", "test", env={**env, **channels})
        assert failed.returncode == 1 and "email" in failed.stderr and "webhook: sent" in failed.stdout
        sink.refuse = False
        ok = run_cli("alerts", "test", env={**env, **channels})
        assert ok.returncode == 0, ok.stderr
    assert len(hook.accepted()) == 2 and len(sink.accepted()) == 1
    assert json.loads(hook.accepted()[0].body)["alerts"][0]["labels"]["alertname"] == "refreshq_test"
    none = run_cli("alerts", "test", env=env)
    assert none.returncode == 2 and "REFRESHQ_ALERT_WEBHOOK_URL" in none.stderr
    listed = run_cli("alerts", "list", "--json", env={**env, **channels})
    assert listed.returncode == 0
    assert json.loads(listed.stdout)["channels"]["email"]["failures"] == 0
    assert health.CHANNEL_FAILURES == 3
