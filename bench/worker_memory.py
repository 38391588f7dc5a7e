"""Peak memory of worker processes and their work-horses, sampled from /proc while a scenario runs.

RQ forks a work-horse per job, so a worker's footprint is the worker plus whichever horse is alive.
VmHWM gives each process's own peak even between samples; the sampled sum (worker + horses) is the
conservative figure compared with the target (a forked horse shares pages with its parent, so the
sum counts shared pages twice).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class Peak:
    """What one worker reached, in kB."""

    pid: int
    sum_rss_kb: int = 0  # max over samples of worker VmRSS + its children's VmRSS
    worker_hwm_kb: int = 0
    horse_hwm_kb: int = 0  # the largest VmHWM of any child seen
    horses_seen: int = 0

    def as_dict(self) -> dict[str, float]:
        return {
            "pid": self.pid,
            "peak_rss_mb": round(self.sum_rss_kb / 1024, 1),
            "worker_hwm_mb": round(self.worker_hwm_kb / 1024, 1),
            "horse_hwm_mb": round(self.horse_hwm_kb / 1024, 1),
            "horses_seen": self.horses_seen,
        }


def read_status_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in kB; empty once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    values = {}
    for line in lines:
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


class MemorySampler:
    """A daemon thread sampling the given worker pids every `interval` seconds until stopped."""

    def __init__(self, pids: list[int], interval: float = 0.1) -> None:
        self.peaks = {pid: Peak(pid) for pid in pids}
        self._interval = interval
        self._horses: dict[int, set[int]] = {pid: set() for pid in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()  # one last look, so a short run still has a figure

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def sample(self) -> None:
        for pid, peak in self.peaks.items():
            worker = read_status_kb(pid)
            if not worker:
                continue
            total = worker.get("VmRSS", 0)
            peak.worker_hwm_kb = max(peak.worker_hwm_kb, worker.get("VmHWM", 0))
            for child in children(pid):
                status = read_status_kb(child)
                total += status.get("VmRSS", 0)
                peak.horse_hwm_kb = max(peak.horse_hwm_kb, status.get("VmHWM", 0))
                self._horses[pid].add(child)
            peak.sum_rss_kb = max(peak.sum_rss_kb, total)
            peak.horses_seen = len(self._horses[pid])

    def results(self) -> list[dict[str, float]]:
        return [peak.as_dict() for peak in self.peaks.values()]
