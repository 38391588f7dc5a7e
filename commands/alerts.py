"""`refreshq alerts list | test`: alert state, channels and the outbox; a test notice on every channel."""

from __future__ import annotations

import json
import sys

import click

from commands.runtime import Runtime, pass_runtime
from jobs.errors import ConfigError
from jobs.observe import report
from jobs.observe.delivery import send_test


@click.group()
def alerts() -> None:
    """Alerts: what is firing, and whether the channels deliver."""


@alerts.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_runtime
def list_alerts(rt: Runtime, as_json: bool) -> None:
    """Firing and pending alerts (since, last sent), each channel's state, notices not yet delivered."""
    data = report.alerts_list(rt.conn, rt.settings)
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    for alert in data["alerts"]:
        sent = f", last sent {alert['last_sent_at']}" if alert["last_sent_at"] else ""
        click.echo(f"{alert['state']:<8} {alert['severity']:<8} {alert['rule']} {alert['subject']}: "
                   f"since {alert['since']}{sent}\n  {alert['description']}")
    click.echo(f"{data['firing']} firing, {len(data['alerts']) - data['firing']} pending; "
               f"last evaluated {data['evaluated_at'] or 'never'}")
    for name, state in data["channels"].items():
        configured = "configured" if state["configured"] else "not configured"
        failing = f", {state['failures']} failed in a row: {state.get('last_error')}" if state.get("failures") else ""
        click.echo(f"channel {name}: {configured}, last delivered {state.get('last_ok_at') or 'never'}{failing}")
    click.echo(f"outbox: {data['outbox']['pending']} notice(s) not yet delivered")


@alerts.command("test")
@pass_runtime
def test_alerts(rt: Runtime) -> None:
    """Send one test notice on every configured channel now; exit 1 naming each channel that failed."""
    if not rt.settings.alerts.channels:
        raise ConfigError("no alert channel is configured: set REFRESHQ_ALERT_WEBHOOK_URL and/or REFRESHQ_SMTP_URL")
    results = send_test(rt.conn, rt.settings)
    for channel, error in results.items():
        click.echo(f"{channel}: sent" if error is None else f"{channel}: FAILED: {error}", err=error is not None)
    failed = [c for c, error in results.items() if error is not None]
    if failed:
        click.echo(f"refreshq: error: alert channel(s) failed: {', '.join(failed)}", err=True)
        sys.exit(1)
