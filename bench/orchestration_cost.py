"""Scenario 4: what a refresh costs Redis beyond the data itself.

Server-wide counters (`INFO commandstats`, `INFO stats`, `INFO memory`) are read before and after
the full refresh of scenario 1; the difference divided by leaves and records says whether progress
and checkpoint writes are batched. Valkey counts commands run inside Lua scripts under their own
names as well as under EVALSHA, so `calls` includes both (a script's work shows up by name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

# Commands the bench itself sends while it watches (status polls, these INFO calls).
_BENCH_OWN = ("info",)


@dataclass(frozen=True)
class ServerCounters:
    calls: dict[str, int]
    net_input_bytes: int
    net_output_bytes: int
    used_memory: int


def snapshot(conn: redis.Redis) -> ServerCounters:
    commandstats = conn.info("commandstats")
    stats = conn.info("stats")
    memory = conn.info("memory")
    calls = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in commandstats.items()}
    return ServerCounters(
        calls=calls,
        net_input_bytes=int(stats["total_net_input_bytes"]),
        net_output_bytes=int(stats["total_net_output_bytes"]),
        used_memory=int(memory["used_memory"]),
    )


def calls_delta(before: ServerCounters, after: ServerCounters) -> dict[str, int]:
    names = set(before.calls) | set(after.calls)
    delta = {n: after.calls.get(n, 0) - before.calls.get(n, 0) for n in names if n not in _BENCH_OWN}
    return {n: c for n, c in sorted(delta.items(), key=lambda item: -item[1]) if c > 0}


def cost(
    before: ServerCounters, after: ServerCounters, leaves: int, records: int, json_bytes: float,
    bench_polls: int,
) -> dict[str, Any]:
    """Commands and bytes per leaf and per record, with the top commands for the why."""
    calls = calls_delta(before, after)
    total_calls = sum(calls.values())
    net_in = after.net_input_bytes - before.net_input_bytes
    leaves, records = max(leaves, 1), max(records, 1)
    return {
        "leaves": leaves,
        "records": records,
        "commands_total": total_calls,
        "commands_per_leaf": round(total_calls / leaves, 2),
        "commands_per_record": round(total_calls / records, 4),
        "bytes_written": net_in,
        "bytes_written_per_leaf": round(net_in / leaves, 1),
        "bytes_written_per_record": round(net_in / records, 1),
        "bytes_written_vs_json": round(net_in / (records * json_bytes), 3) if json_bytes else None,
        "bytes_read": after.net_output_bytes - before.net_output_bytes,
        "top_commands_per_leaf": {n: round(c / leaves, 2) for n, c in list(calls.items())[:12]},
        "bench_own_polls": bench_polls,
        "note": "calls include commands run inside Lua scripts (counted again under their own names)",
    }
