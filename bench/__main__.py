"""`python -m bench [--quick]`: refreshq measured against plain RQ and against the fetch floor.

Starts a private Valkey in a temp dir, an upstream and workers on 127.0.0.1, runs the scenarios,
prints a table and writes bench/results/latest.json. Every figure that is compared is measured side
by side in the same run. Any REDIS_URL or REFRESHQ_* setting of the caller is ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench import crash_recovery, full_refresh, rate_limited, report, short_jobs, status_latency, web_clients
from bench.harness import REPO, Bench, Upstream
from bench.sizes import Sizes, choose

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = (
    "full_refresh", "status_cancel", "list_tasks", "short_jobs", "web_clients", "crash_recovery", "rate_limited",
)
NEEDS_UPSTREAM = ("full_refresh", "status_cancel", "short_jobs")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="every scenario at a tiny size (CI; under a minute)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma list of: {', '.join(SCENARIOS)}")
    parser.add_argument("--scale", type=int, default=None, help="hospitals in the upstream (default 1,000,000)")
    parser.add_argument("--short-jobs", type=int, default=None, help="no-op jobs per drain (default 20,000)")
    parser.add_argument("--profile", action="store_true", help="py-spy the workers during the full refresh")
    parser.add_argument("--output", type=Path, default=None,
                        help="default bench/results/latest.json (--quick: quick.json, not committed)")
    args = parser.parse_args(argv)
    if args.output is None:
        # A quick run (CI, or .ci/run on a laptop) must not overwrite the full-size figures.
        args.output = RESULTS / ("quick.json" if args.quick else "latest.json")
    unknown = set(args.only.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario {', '.join(sorted(unknown))}: expected {', '.join(SCENARIOS)}")
    return args


def _meminfo_total() -> str:
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        return f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        return "unknown"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _git_commit() -> str | None:
    commit = _git("rev-parse", "--short", "HEAD")
    changed = _git("status", "--porcelain", "--", ".", ":!bench")
    # Figures from a work tree with uncommitted changes belong to that tree, not to the commit.
    return f"{commit}+uncommitted changes" if commit and changed else commit


def _meta(bench: Bench, sizes: Sizes, args: argparse.Namespace) -> dict[str, Any]:
    import redis
    import rq

    server = bench.conn.info("server")
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": sizes.name,
        "sizes": dataclasses.asdict(sizes),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory": _meminfo_total(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "server": f"valkey {server.get('valkey_version', server.get('redis_version'))} (embedded, unix socket)",
        "rq": rq.__version__,
        "redis_py": redis.__version__,
        "commit": _git_commit(),
        "profiled": bool(args.profile),
        "note": "a shared 2-core machine: other processes (e.g. test suites) may run at the same time; "
                "every compared figure is measured side by side in this run",
    }


def _run_scenario(name: str, results: dict[str, Any], call: Callable[[], Any]) -> None:
    """Run one scenario; a failure is recorded (and fails the run) without stopping the others."""
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        outcome = call()
    except Exception as exc:
        traceback.print_exc()
        results["scenarios"][name] = {"error": f"{type(exc).__name__}: {exc}"}
        return
    results["scenarios"].update(outcome)
    print(f"bench: {name} done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = choose(args.quick, args.scale, args.short_jobs)
    chosen = [s for s in SCENARIOS if s in args.only.split(",")]
    started = time.monotonic()
    with Bench() as bench:
        results: dict[str, Any] = {"meta": _meta(bench, sizes, args), "scenarios": {}}
        upstream: Upstream | None = None
        if set(chosen) & set(NEEDS_UPSTREAM):
            upstream = bench.start_upstream(sizes.scale, sizes.latency_ms)
        for name in chosen:
            _run_scenario(name, results, _scenario(name, bench, upstream, sizes, args))
            # Written after every scenario, so a long run that is stopped still leaves its figures.
            report.write({**results, "partial": True}, args.output)
        if upstream is not None:
            upstream.close()
    results["meta"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["meta"]["seconds"] = round(time.monotonic() - started, 1)
    return results


def _scenario(
    name: str, bench: Bench, upstream: Upstream | None, sizes: Sizes, args: argparse.Namespace
) -> Callable[[], dict[str, Any]]:
    def up() -> Upstream:
        assert upstream is not None, f"{name} needs the upstream"
        return upstream

    profile_dir = args.output.parent if args.profile else None
    calls: dict[str, Callable[[], dict[str, Any]]] = {
        "full_refresh": lambda: {"full_refresh": full_refresh.run(bench, up(), sizes, profile_dir)},
        "status_cancel": lambda: {"status_cancel": status_latency.run_under_load(bench, up(), sizes)},
        "list_tasks": lambda: {"list_tasks": status_latency.run_list(bench, sizes)},
        "short_jobs": lambda: {"short_jobs": short_jobs.run(bench, up(), sizes)},
        "web_clients": lambda: {"web_clients": web_clients.run(bench, sizes)},
        "crash_recovery": lambda: {"crash_recovery": crash_recovery.run(bench, sizes)},  # its own upstream
        "rate_limited": lambda: {"rate_limited": rate_limited.run(bench, sizes)},
    }
    return calls[name]


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C does, so every child is stopped on the way out.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    results = run(args)
    all_rows = report.rows(results)
    results["targets"] = report.targets(all_rows)
    report.write(results, args.output)
    print(report.table(all_rows))
    print(f"\nwrote {args.output} ({results['meta']['mode']}, {results['meta']['seconds']:.0f} s)")
    failed = [n for n, d in results["scenarios"].items() if isinstance(d, dict) and "error" in d]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
