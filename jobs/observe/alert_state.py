"""Alert state, as Alertmanager keeps it, in Redis: an alert is its fingerprint (rule + subject); it is
pending until its condition has held for its `for` time, then firing: notified once, again every
REFRESHQ_ALERT_REPEAT seconds (or at once when its severity rises) while it holds, and a resolved notice
when it clears.

An evaluation reads the conditions, plans the changes against the stored states and commits them in one
transaction (WATCHed) together with the notice they call for, put in the outbox (jobs.observe.delivery).
A scheduler that dies before the commit changed nothing; one that dies after it left the notice to be
delivered by whichever scheduler is active next; two that overlap retry on the WATCH. So a restart or a
failover never notifies a change twice.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from jobs import keys
from jobs.config import Settings
from jobs.observe.alert_rules import Condition, current_conditions
from jobs.observe.health import RANK
from jobs.redis_values import as_text, as_text_map

PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"
NEVER = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert still firing


def fingerprint(rule: str, subject: str) -> str:
    return hashlib.sha256(f"{rule}\0{subject}".encode()).hexdigest()[:16]


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Plan:
    """What one evaluation changes: states to store, fingerprints to drop, the alerts to notify."""

    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    notify: list[dict[str, Any]] = field(default_factory=list)


def _state(c: Condition, now: float) -> dict[str, Any]:
    return {
        "fingerprint": fingerprint(c.rule, c.subject), "rule": c.rule, "subject": c.subject,
        "severity": c.severity, "state": PENDING, "since": now, "for_seconds": c.for_seconds,
        "fired_at": None, "last_sent_at": None, "sent": 0, **_details(c),
    }


def _details(c: Condition) -> dict[str, Any]:
    return {"summary": c.summary, "description": c.description, "value": c.value, "threshold": c.threshold}


def notice_alert(state: dict[str, Any], status: str, now: float) -> dict[str, Any]:
    """One entry of a notice, shaped as in Alertmanager's webhook."""
    return {
        "status": status,
        "labels": {"alertname": state["rule"], "severity": state["severity"], "subject": state["subject"],
                   "service": "refreshq"},
        "annotations": {"summary": state["summary"], "description": state["description"]},
        "startsAt": rfc3339(state["since"]),
        "endsAt": rfc3339(now) if status == RESOLVED else NEVER,
        "fingerprint": state["fingerprint"],
        "generatorURL": "",
    }


def _fire(state: dict[str, Any], now: float, plan: Plan) -> None:
    state.update(state=FIRING, fired_at=state["fired_at"] or now, last_sent_at=now, sent=state["sent"] + 1)
    plan.states[state["fingerprint"]] = state
    plan.notify.append(notice_alert(state, FIRING, now))


def plan_changes(
    stored: dict[str, dict[str, Any]], conditions: list[Condition], now: float, repeat: float
) -> Plan:
    """The changes an evaluation makes (pure)."""
    plan, held = Plan(), set()
    for c in conditions:
        fp = fingerprint(c.rule, c.subject)
        if fp in held:
            continue  # one alert per fingerprint (the first, most severe, rule instance)
        held.add(fp)
        old = stored.get(fp)
        state = dict(old) if old else _state(c, now)
        rises = old is not None and RANK[c.severity] > RANK[old["severity"]]
        state.update(severity=c.severity, **_details(c))  # a fall in severity is shown, not notified
        if state["state"] == PENDING:
            if now - state["since"] >= c.for_seconds:
                _fire(state, now, plan)
            elif old is None:
                plan.states[fp] = state
        elif rises or now - float(state["last_sent_at"] or 0) >= repeat:
            _fire(state, now, plan)
        elif state != old:
            plan.states[fp] = state  # its description moved on (a value); nothing to notify
    for fp, old in stored.items():
        if fp not in held:
            plan.removed.append(fp)
            if old["state"] == FIRING:
                plan.notify.append(notice_alert(old, RESOLVED, now))
    return plan


def _queue_notice(pipe: redis.client.Pipeline, alerts: list[dict[str, Any]], channels: tuple[str, ...],
                  now: float) -> str:
    notice_id = f"{int(now)}-{secrets.token_hex(8)}"
    fields = {"alerts": json.dumps(alerts, ensure_ascii=False), "created_ts": repr(now),
              "channels": ",".join(channels), "attempts": "0", **{f"ch:{c}": "pending" for c in channels}}
    pipe.hset(keys.alert_notice(notice_id), mapping=fields)  # type: ignore[arg-type]
    pipe.zadd(keys.ALERT_OUTBOX, {notice_id: now})
    return notice_id


def evaluate(conn: redis.Redis, settings: Settings, now: float | None = None) -> Plan:
    """One evaluation: read the conditions, commit the state changes with their notice (if any channel)."""
    measured, conditions = current_conditions(conn, settings)
    now = measured if now is None else now
    with conn.pipeline() as pipe:
        while True:
            try:
                pipe.watch(keys.ALERTS)  # type: ignore[no-untyped-call]
                stored = {k: json.loads(v) for k, v in as_text_map(pipe.hgetall(keys.ALERTS)).items()}
                plan = plan_changes(stored, conditions, now, settings.alerts.repeat)
                pipe.multi()
                for fp, state in plan.states.items():
                    pipe.hset(keys.ALERTS, fp, json.dumps(state, ensure_ascii=False))
                if plan.removed:
                    pipe.hdel(keys.ALERTS, *plan.removed)
                if plan.notify and settings.alerts.channels:
                    _queue_notice(pipe, plan.notify, settings.alerts.channels, now)
                pipe.set(keys.ALERTS_EVALUATED, repr(now))
                pipe.execute()
                return plan
            except redis.WatchError:
                continue


def evaluate_if_due(conn: redis.Redis, settings: Settings) -> Plan | None:
    """Evaluate when REFRESHQ_ALERT_INTERVAL has passed since the last evaluation (by any scheduler)."""
    last = conn.get(keys.ALERTS_EVALUATED)
    if last is not None and time.time() - float(last) < settings.alerts.interval:
        return None
    return evaluate(conn, settings)


def _shown(state: dict[str, Any]) -> dict[str, Any]:
    since, sent = state.get("since"), state.get("last_sent_at")
    return {
        **state, "since": rfc3339(since) if since else None, "fired_at": rfc3339(state["fired_at"])
        if state.get("fired_at") else None, "last_sent_at": rfc3339(sent) if sent else None,
    }


def alerts_list(conn: redis.Redis, settings: Settings) -> dict[str, Any]:
    """Firing and pending alerts (since, last sent), each channel's state and the outbox."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.ALERTS)
        pipe.hgetall(keys.ALERT_CHANNELS)
        pipe.zcard(keys.ALERT_OUTBOX)
        pipe.zrange(keys.ALERT_OUTBOX, 0, 0, withscores=True)
        pipe.get(keys.ALERTS_EVALUATED)
        pipe.lrange(keys.ALERT_DELIVERIES, 0, 19)
        states, channel_states, outbox, first, evaluated, deliveries = pipe.execute()
    alerts = sorted((json.loads(v) for v in states.values()), key=lambda s: (s["state"] != FIRING, s["since"]))
    known = {as_text(k): json.loads(v) for k, v in channel_states.items()}
    channels = {
        name: {"configured": name in settings.alerts.channels, **known.get(name, {})}
        for name in sorted(set(settings.alerts.channels) | set(known))
    }
    return {
        "alerts": [_shown(s) for s in alerts],
        "firing": sum(1 for s in alerts if s["state"] == FIRING),
        "channels": channels,
        "outbox": {"pending": int(outbox), "next_attempt_at": rfc3339(first[0][1]) if first else None},
        "evaluated_at": rfc3339(float(evaluated)) if evaluated else None,
        "recent_deliveries": [json.loads(d) for d in deliveries],
    }
