"""Where a worker's time goes: py-spy on each worker and its work-horses during the full refresh.

Optional (`python -m bench --profile`, needs `pip install py-spy`). On-CPU samples only (idle threads
waiting on the network are left out), so the shares say where CPU goes. Sampling from outside costs the
profiled processes little, but py-spy itself needs CPU on a 2-core machine, so a profiled run's
timings are not the ones reported as results. The raw collapsed stacks are kept next to
latest.json; the summary lists the functions with the most samples, self and inclusive.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from bench.harness import Bench

RATE = 100  # samples per second per process
_LINE = re.compile(r":\d+$")


def available() -> bool:
    return shutil.which("py-spy") is not None


class WorkerProfiler:
    """One `py-spy record --subprocesses` per worker pid, stopped (and flushed) with SIGINT."""

    def __init__(self, bench: Bench, pids: list[int], out_dir: Path) -> None:
        self.bench = bench
        self.paths = [out_dir / f"profile-worker-{i + 1}.txt" for i in range(len(pids))]
        out_dir.mkdir(parents=True, exist_ok=True)
        self.procs = [
            bench.spawn(f"py-spy-{i + 1}", [
                "py-spy", "record", "--pid", str(pid), "--subprocesses", "--nonblocking", "--gil",
                "--rate", str(RATE), "--format", "raw", "--output", str(path),
            ])
            for i, (pid, path) in enumerate(zip(pids, self.paths, strict=True))
        ]

    def stop(self) -> dict[str, Any]:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
            self.bench.stop(proc, grace=1)
        return summarize([p for p in self.paths if p.exists()])


def _frame(frame: str) -> str:
    """`func (/path/to/file.py:123)` as `func (file.py)`: one entry per function, not per line."""
    name, _, where = frame.partition(" (")
    path = _LINE.sub("", where.rstrip(")")) if where else ""
    return f"{name} ({path.rsplit('/', 1)[-1]})" if path else name


def summarize(paths: list[Path], top: int = 15) -> dict[str, Any]:
    """Top functions by share of samples, self (on-CPU or waiting at that frame) and inclusive."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_frame(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            total += count
            own[frames[-1]] += count
            for name in set(frames):
                inclusive[name] += count
    share = (lambda n: round(100 * n / total, 1)) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "files": [str(p) for p in paths],
        "self_percent": {name: share(n) for name, n in own.most_common(top)},
        "inclusive_percent": {name: share(n) for name, n in inclusive.most_common(top)},
    }
