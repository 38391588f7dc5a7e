"""`refreshq workers ...`: watch and steer workers and pools on every machine, through Redis
(jobs.workforce; the web API offers the same functions)."""

from __future__ import annotations

import json
from typing import Any

import click

from commands.runtime import Runtime, pass_runtime
from jobs import workforce

_QUEUE = click.option("--queue", "-q", "queue_names", multiple=True, help="A queue (repeatable).")
_POOL = click.option("--pool", "pool_name", default=None, help="A pool, by name.")
_WORKER = click.option("--worker", "worker_name", default=None, help="One worker, by name.")


@click.group()
def workers() -> None:
    """Workers and pools: list, suspend, resume, drain, stop, scale."""


@workers.command("list")
@_POOL
@click.option("--queue", "-q", "queue_name", default=None, help="Only workers listening on this queue.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@pass_runtime
def list_workers(rt: Runtime, pool_name: str | None, queue_name: str | None, as_json: bool) -> None:
    """Pools, workers (RQ's registry) and what is suspended."""
    found = workforce.overview(rt.conn, pool_name, queue_name)
    if as_json:
        click.echo(json.dumps(found))
        return
    _print_overview(found)


def _print_overview(found: dict[str, Any]) -> None:
    for p in found["pools"]:
        click.echo(f"pool {p['name']}: {p['state']}, {p['running']}/{p['wanted']} {p['mode']} workers on "
                   f"{','.join(p['queues'])} (host {p['host']}, pid {p['pid']})")
    for w in found["workers"]:
        job = f" job {w['current_job']}" if w["current_job"] else ""
        click.echo(f"worker {w['name']}: {w['state']}{job} on {','.join(w['queues'])} "
                   f"(pool {w['pool'] or '-'}, host {w['host']}, pid {w['pid']}, "
                   f"{w['successful_jobs']} ok, {w['failed_jobs']} failed)")
    _print_suspended(found["suspended"])


def _print_suspended(suspended: dict[str, Any]) -> None:
    queues = ", ".join(suspended["queues"]) or "none"
    pools = ", ".join(suspended["pools"]) or "none"
    rq_flag = "; RQ's global suspension is on (`rq resume`)" if suspended["rq_suspended"] else ""
    click.echo(f"suspended queues: {queues}; suspended pools: {pools}{rq_flag}")


@workers.command()
@_QUEUE
@_POOL
@pass_runtime
def suspend(rt: Runtime, queue_names: tuple[str, ...], pool_name: str | None) -> None:
    """No worker takes another job from these queues (default: all), or no worker of the pool takes any."""
    _print_suspended(workforce.suspend(rt.conn, queue_names, pool_name))


@workers.command()
@_QUEUE
@_POOL
@pass_runtime
def resume(rt: Runtime, queue_names: tuple[str, ...], pool_name: str | None) -> None:
    """Undo `suspend` (with no option: every queue and pool)."""
    _print_suspended(workforce.resume(rt.conn, queue_names, pool_name))


def _print_targets(action: str, targets: dict[str, list[str]]) -> None:
    asked = [f"pool {p}" for p in targets["pools"]] + [f"worker {w}" for w in targets["workers"]]
    click.echo(f"{action}: {', '.join(asked) or 'nothing running'}")


@workers.command()
@_POOL
@_WORKER
@pass_runtime
def drain(rt: Runtime, pool_name: str | None, worker_name: str | None) -> None:
    """Finish the running jobs, take nothing new, exit (a pool: all its workers, then itself)."""
    _print_targets("draining", workforce.drain(rt.conn, pool_name, worker_name))


@workers.command()
@_POOL
@_WORKER
@pass_runtime
def stop(rt: Runtime, pool_name: str | None, worker_name: str | None) -> None:
    """Warm shutdown: refresh jobs checkpoint and requeue at once, named tasks get a few seconds."""
    _print_targets("stopping", workforce.stop(rt.conn, pool_name, worker_name))


@workers.command()
@click.argument("processes", type=click.IntRange(0, workforce.MAX_PROCESSES))
@click.option("--pool", "pool_name", required=True, help="The pool to resize.")
@pass_runtime
def scale(rt: Runtime, processes: int, pool_name: str) -> None:
    """Run PROCESSES workers in the pool (kept in Redis: a restarted pool keeps it)."""
    done = workforce.scale(rt.conn, pool_name, processes)
    note = "" if done["running"] else " (not running now: applies when it starts)"
    click.echo(f"pool {pool_name}: {processes} processes wanted{note}")
