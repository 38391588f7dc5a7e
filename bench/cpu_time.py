"""CPU seconds spent by the processes of a scenario, read from /proc and from the server's INFO.

On a 2-core machine the question behind a slow refresh is often "which process had the CPU":
comparing the CPU seconds of the workers, the upstream and the server with wall time x cores
answers it without a profiler.
"""

from __future__ import annotations

import os

import redis

from bench.worker_memory import children

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name may hold spaces; the fields after it are fixed.
            return f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return []


def process_seconds(pid: int) -> float:
    """User + system CPU of a process, its reaped children (finished work-horses) and live ones."""
    fields = _stat_fields(pid)
    if not fields:
        return 0.0
    # After the name: state(0) ... utime(11) stime(12) cutime(13) cstime(14), in clock ticks.
    own = sum(int(fields[i]) for i in (11, 12, 13, 14))
    live = 0
    for child in children(pid):
        child_fields = _stat_fields(child)
        if child_fields:
            live += int(child_fields[11]) + int(child_fields[12])
    return (own + live) / _TICKS


def server_seconds(conn: redis.Redis) -> float:
    cpu = conn.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def snapshot(conn: redis.Redis, groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each named group of pids, and of the server."""
    seconds = {name: sum(process_seconds(pid) for pid in pids) for name, pids in groups.items()}
    seconds["server"] = server_seconds(conn)
    return seconds


def delta(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """CPU seconds spent in between, per group, against what the machine's cores could give."""
    spent = {name: round(after[name] - before[name], 1) for name in before}
    spent["total"] = round(sum(spent.values()), 1)
    spent["wall_x_cores"] = round(wall * (os.cpu_count() or 1), 1)
    return spent
