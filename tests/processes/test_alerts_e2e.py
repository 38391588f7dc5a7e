"""Alerts end to end, with real processes (`refreshq scheduler`, `refreshq worker`), a real HTTP receiver
and a real SMTP server on loopback: a failed refresh notifies once, a scheduler killed and restarted sends
nothing twice and loses nothing, a later success resolves it; repeats only after REFRESHQ_ALERT_REPEAT;
"no worker" arrives with every worker stopped."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
import standardwebhooks

from bench.observe_seed import FakeRun, fake_run
from jobs import keys
from jobs.config import Settings
from jobs.refresh.manager import SyncTaskManager
from jobs.statuses import FAILED, SUCCEEDED
from jobs.upstream.serve import start_background
from tests.support.helpers import REFRESHQ, RefusingDirectory, wait_status, wait_until, worker_process
from tests.support.observe_helpers import MailSink, WebhookReceiver, smtp_server, webhook_receiver

SCALE = 3000
SECRET = "whsec_" + "ZTJlLXRlc3Qtc2VjcmV0LWZvci13ZWJob29rcw=="


@contextmanager
def scheduler(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([REFRESHQ, "scheduler"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)


def _evaluated_after(conn: redis.Redis, moment: float, evaluations: int = 3) -> bool:
    """True once an active scheduler has evaluated `evaluations` intervals (1 s) after `moment`."""
    last = conn.get(keys.ALERTS_EVALUATED)
    return last is not None and float(last) >= moment + evaluations


def _alerts(hook: WebhookReceiver) -> list[tuple[str, str, str]]:
    return [(a["labels"]["alertname"], a["labels"]["subject"], a["status"])
            for payload in hook.payloads() for a in payload["alerts"]]


@pytest.mark.slow
def test_a_failed_refresh_alerts_once_across_a_scheduler_kill_then_resolves(
    conn: redis.Redis, env: dict[str, str]
) -> None:
    sink = MailSink()
    with webhook_receiver(status=503) as hook, smtp_server(sink) as smtp, \
            start_background(directory=RefusingDirectory(SCALE, {"310101"})) as refusing, \
            start_background(SCALE) as good:
        aenv = {**env, "REFRESHQ_UPSTREAM_URL": refusing.url, "REFRESHQ_ALERT_INTERVAL": "1",
                "REFRESHQ_ALERT_WEBHOOK_URL": hook.url, "REFRESHQ_ALERT_WEBHOOK_SECRET": SECRET,
                "REFRESHQ_SMTP_URL": f"smtp://127.0.0.1:{smtp.port}", "REFRESHQ_ALERT_EMAIL_TO": "ops@x.example",
                "REFRESHQ_RETRY_BASE": "0.2", "REFRESHQ_RETRY_CAP": "0.5"}
        manager = SyncTaskManager(Settings.from_env(aenv), conn)
        with worker_process(aenv), scheduler(aenv) as first:
            task_id = manager.create_province_refresh_task("上海")  # 310101 answers 404
            wait_status(manager, task_id, [FAILED], 120)
            failed_at = time.time()
            wait_until(lambda: sink.accepted(), 15, what="the email")
            assert time.time() - failed_at < 5  # within the interval (1 s), delivery polled twice a second
            wait_until(lambda: len(hook.received) >= 2, 15, what="webhook attempts (answered 503)")
            # Killed while the webhook is still undelivered: the notice is in the outbox, not in this process.
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
        hook.status = 200
        # The deployment moves to an upstream that answers: the workers' setting with it.
        aenv = {**aenv, "REFRESHQ_UPSTREAM_URL": good.url}
        with worker_process(aenv), scheduler(aenv):
            restarted = time.time()
            wait_until(lambda: hook.accepted(), 40, what="the webhook, from the next scheduler")
            delivered = time.time()
            wait_until(lambda: _evaluated_after(conn, delivered), 40, 0.1, "three more evaluations")
            assert len(sink.accepted()) == 1 and len(hook.accepted()) == 1  # nothing twice
            assert _alerts(hook) == [("refresh_failed", "province:310000", "firing")]
            ids = {r.headers["webhook-id"] for r in hook.received}
            assert len(ids) == 1  # every attempt of that notice carried its one id
            payload = standardwebhooks.Webhook(SECRET).verify(hook.accepted()[0].body, hook.accepted()[0].headers)
            assert task_id in payload["alerts"][0]["annotations"]["description"]
            assert sink.accepted()[0]["Subject"] == "[refreshq] FIRING: refresh province:310000 failed"
            # The failure cleared by a later run of that province that succeeds:
            fixed = SyncTaskManager(Settings.from_env(aenv), conn)
            wait_status(fixed, fixed.create_province_refresh_task("上海"), [SUCCEEDED], 120)
            wait_until(lambda: len(hook.accepted()) == 2 and len(sink.accepted()) == 2, 15, what="resolved notices")
            resolved = time.time()
            wait_until(lambda: _evaluated_after(conn, resolved), 40, 0.1, "three more evaluations")
        assert time.time() > restarted
    assert _alerts(hook)[1:] == [("refresh_failed", "province:310000", "resolved")]
    assert sink.accepted()[1]["Subject"].startswith("[refreshq] RESOLVED: ")
    assert len(hook.accepted()) == 2 and len(sink.accepted()) == 2


@pytest.mark.slow
def test_a_still_firing_alert_is_sent_again_only_after_the_repeat_time(conn: redis.Redis, env: dict[str, str]) -> None:
    now = time.time()
    fake_run(conn, FakeRun("t_bad", "full", now - 30, now - 20, now - 1, FAILED))
    with webhook_receiver() as hook:
        aenv = {**env, "REFRESHQ_ALERT_INTERVAL": "1", "REFRESHQ_ALERT_REPEAT": "3",
                "REFRESHQ_ALERT_WEBHOOK_URL": hook.url}
        with scheduler(aenv):
            wait_until(lambda: len(hook.accepted()) >= 3, 30, what="two repeats")
    arrivals = [r.at for r in hook.accepted()[:3]]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # Not before the repeat time (3 s; evaluations every 1 s would repeat after 1 s), soon after it. Arrivals
    # differ from the decisions by each delivery's own latency (off the tick), hence the half second.
    assert all(2.5 <= gap <= 6 for gap in gaps), gaps
    assert set(_alerts(hook)) == {("refresh_failed", "full", "firing")}


@pytest.mark.slow
def test_no_worker_alert_arrives_with_every_worker_stopped(conn: redis.Redis, env: dict[str, str]) -> None:
    with webhook_receiver() as hook:
        aenv = {**env, "REFRESHQ_ALERT_INTERVAL": "1", "REFRESHQ_ALERT_FOR": "2",
                "REFRESHQ_ALERT_WEBHOOK_URL": hook.url}
        with worker_process(aenv) as worker:
            wait_until(lambda: conn.scard("rq:workers:refresh"), 30, what="the worker to register")
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=20) == 0
        with scheduler(aenv):
            queued = time.time()
            SyncTaskManager(Settings.from_env(aenv), conn).create_full_refresh_task()
            wait_until(lambda: hook.accepted(), 30, what="the no-worker alert")
    [payload] = hook.payloads()
    [alert] = payload["alerts"]
    assert (alert["labels"]["alertname"], alert["labels"]["subject"], alert["labels"]["severity"]) == (
        "no_worker", "refresh", "critical")
    assert hook.accepted()[0].at - queued >= 2  # its `for` time held first
    assert "no live worker" in alert["annotations"]["description"]


