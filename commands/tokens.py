"""`refreshq tokens create | list | revoke`: API tokens for the web process (only their SHA-256 is stored)."""

from __future__ import annotations

import json

import click

from commands.runtime import Runtime, pass_runtime
from jobs import tokens


@click.group("tokens")
def tokens_group() -> None:
    """API tokens: a user, a role (read, operate, admin) and optional limits on the user's work."""


@tokens_group.command("create")
@click.option("--user", required=True, help="Who the token is for: the owner of what it starts.")
@click.option("--role", type=click.Choice(tokens.ROLES), required=True,
              help="read: GET only; operate: also start refreshes and runs, cancel or resume its own; admin: all.")
@click.option("--max-running", type=click.IntRange(0, tokens.MAX_LIMIT), default=None,
              help="Refresh tasks and runs of the user running at once (default: no limit).")
@click.option("--max-pending", type=click.IntRange(0, tokens.MAX_LIMIT), default=None,
              help="Refresh tasks and runs of the user waiting at once (default: no limit).")
@pass_runtime
def create(rt: Runtime, user: str, role: str, max_running: int | None, max_pending: int | None) -> None:
    """Make a token; it is printed once, alone on the last line (store it now: it cannot be shown again)."""
    token, info = tokens.create(rt.conn, user, role, max_running, max_pending)
    limits = ", ".join(f"{name} {value}" for name, value in
                       (("max running", max_running), ("max pending", max_pending)) if value is not None)
    click.echo(f"token {info.id} for user {info.user!r}, role {info.role}" + (f", {limits}" if limits else ""))
    click.echo("shown once; send it as 'Authorization: Bearer <token>':")
    click.echo(token)


@tokens_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_runtime
def list_command(rt: Runtime, as_json: bool) -> None:
    """Show every token's id, user, role and limits (never the token)."""
    rows = tokens.list_tokens(rt.conn)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], ensure_ascii=False))
        return
    for r in rows:
        limits = f"running<={_limit(r.max_running)} pending<={_limit(r.max_pending)}"
        click.echo(f"{r.id}  {r.role:<8} {limits:<28} {r.created_at}  {r.user}")
    click.echo(f"{len(rows)} tokens")


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


@tokens_group.command("revoke")
@click.argument("token_id")
@pass_runtime
def revoke(rt: Runtime, token_id: str) -> None:
    """Delete a token by its id (as `tokens list` shows it): requests with it answer 401 from now on."""
    info = tokens.revoke(rt.conn, token_id)
    click.echo(f"revoked token {info.id} of user {info.user!r}")
