"""Drawing task progress in a terminal: a bar for the task and one per province, redrawn in place."""

from __future__ import annotations

import json
import sys
import time
import unicodedata
from collections.abc import Callable
from typing import Any, TextIO

from jobs.pacing import pacing_text
from jobs.refresh.manager import SyncRefreshManager
from jobs.statuses import TERMINAL
from jobs.upstream.identity import label

BAR_WIDTH = 30
MAX_PROVINCE_ROWS = 10


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


def pad(text: str, width: int) -> str:
    """Left-justify by terminal columns: CJK characters take two."""
    used = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
    return text + " " * max(0, width - used)


def render(status: dict[str, Any], provinces: list[dict[str, Any]]) -> list[str]:
    stats = status["statistics"]
    eta = f"  eta {status['eta_seconds']}s" if status.get("eta_seconds") is not None else ""
    lines = [
        f"{status['hospital_name']}  {status['task_id']}  [{status['status']}]",
        f"  {bar(status['progress'] / 100)} {status['progress']:>3}%{eta}",
        f"  {status.get('current_step') or ''}",
        f"  provinces {stats['provinces_processed']}  cities {stats['cities_processed']}  "
        f"districts {stats['districts_processed']}  hospitals {stats['hospitals_found']}",
    ]
    if status.get("upstream"):
        lines.append(f"  upstream {label(status['upstream'])}")
    lines += _province_rows(provinces)
    conflicts = status.get("conflicts") or {}
    if conflicts.get("count"):
        shown = ", ".join(f"{e['id']} ({' / '.join(e['leaves'])})" for e in conflicts["examples"][:3])
        lines.append(f"  conflicts: {conflicts['count']} id(s) listed under two leaves, kept once: {shown}")
    mismatches = status.get("total_mismatches") or {}
    if mismatches.get("count"):
        shown = ", ".join(f"{e['leaf']} (total {e['total']}, listed {e['listed']})" for e in mismatches["examples"][:3])
        lines.append(f"  stale totals: {mismatches['count']} leaf/leaves listed the same twice against their "
                     f"total, taken: {shown}")
    if status.get("error_message"):
        lines.append(f"  error: {status['error_message']}")
    if status.get("writes_refused"):
        lines.append(f"  waiting: {status['writes_refused']['message']}; it goes on once they are taken again")
    pacing = pacing_text(status.get("upstream_pacing"))
    if pacing:
        lines.append(f"  upstream rate: {pacing}")
    return lines



def _province_rows(provinces: list[dict[str, Any]]) -> list[str]:
    if not provinces:
        return []
    running = [p for p in provinces if p["outcome"] is None and p["leaves_done"] > 0]
    waiting = [p for p in provinces if p["outcome"] is None and p["leaves_done"] == 0]
    ended = [p for p in provinces if p["outcome"] is not None]
    rows = []
    for p in (running + waiting + ended)[:MAX_PROVINCE_ROWS]:
        total = p["leaves_total"]
        fraction = 1.0 if p["outcome"] == "published" else (p["leaves_done"] / total if total else 0.0)
        label = p["outcome"] or (f"{p['leaves_done']}/{total} regions" if total else "waiting")
        rows.append(f"    {pad(p['name'], 14)} {bar(fraction, 20)} {p['hospitals']:>8} hospitals  {label}")
    published = sum(1 for p in ended if p["outcome"] == "published")
    rows.append(f"    {published}/{len(provinces)} provinces published, {len(running)} running, {len(waiting)} waiting")
    return rows


def watch(
    manager: SyncRefreshManager, task_id: str, out: TextIO = sys.stderr, interval: float = 0.5,
    on_tick: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Redraw the task's progress until it ends; return its final status."""
    drawn = 0
    live = out.isatty()
    last = ""
    while True:
        status = manager.get_task_status(task_id)
        lines = render(status, manager.province_progress(task_id))
        if live:
            out.write(("\x1b[F\x1b[2K" * drawn) + "\n".join(lines) + "\n")
            drawn = len(lines)
        elif lines[1] != last or status["status"] in TERMINAL:
            out.write(lines[1].strip() + "  " + (status.get("current_step") or "") + "\n")
            last = lines[1]
        out.flush()
        if status["status"] in TERMINAL:
            return status
        if on_tick is not None:
            on_tick()
        time.sleep(interval)


def print_status(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(status, ensure_ascii=False))
        return
    for line in render(status, []):
        print(line)
