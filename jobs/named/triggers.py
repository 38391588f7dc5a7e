"""When a schedule fires: cron expressions in a timezone, or fixed intervals; and which missed fires still run.

Pure functions of explicit times (epoch seconds), never of the wall clock, so the scheduler's tick and
the tests can drive them with any `now`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter  # type: ignore[import-untyped]

from jobs.errors import ScheduleError

DEFAULT_TIMEZONE = "Asia/Shanghai"
# Enough to count the missed fires of any sane schedule; beyond it the count is reported as a lower bound.
MAX_FIRES = 10_000
# The longest interval a schedule may have: a year. Longer ones are surely typos, and unbounded ones
# overflow the date arithmetic of the next run (an interval of 10**20 s is past year 9999).
MAX_INTERVAL = 366 * 86_400
# The longest a missed fire may be late and still run (see plan_fires): the same year.
MAX_GRACE = MAX_INTERVAL
# Runs of one schedule queued or running at once.
MAX_INSTANCES = 100
_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def zone(name: str) -> ZoneInfo:
    """The timezone called `name`, or ScheduleError."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file, a directory
        shown = repr(name) if len(name) <= 64 else repr(name[:64]) + "..."
        raise ScheduleError(f"unknown timezone {shown}: expected an IANA name such as Asia/Shanghai or UTC") from None


def whole(value: object, low: int, high: int) -> bool:
    """True for a whole number (not a bool) from `low` to `high`."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_run_options(max_instances: object, misfire_grace_time: object) -> None:
    """ScheduleError unless both are whole numbers in range (a schedule's --max-instances, --misfire-grace-time)."""
    if not whole(max_instances, 1, MAX_INSTANCES):
        raise ScheduleError(f"max instances {max_instances!r} is not valid: expected 1 to {MAX_INSTANCES}")
    if not whole(misfire_grace_time, 1, MAX_GRACE):
        raise ScheduleError(
            f"misfire grace time {misfire_grace_time!r} is not valid: expected 1 to {MAX_GRACE} seconds (366 days)"
        )


@dataclass(frozen=True)
class Trigger:
    """A cron expression (5 fields: minute hour day month weekday) in a timezone, or an interval in seconds."""

    cron: str | None = None
    interval: int | None = None
    timezone: str = DEFAULT_TIMEZONE

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.interval is None):
            raise ScheduleError("a schedule needs exactly one of a cron expression or an interval")
        tz = zone(self.timezone)
        if self.interval is not None and (
            isinstance(self.interval, bool) or not isinstance(self.interval, int)
            or not 1 <= self.interval <= MAX_INTERVAL
        ):
            raise ScheduleError(
                f"interval {self.interval!r} is not valid: expected a whole number of seconds from 1 to "
                f"{MAX_INTERVAL} (366 days)"
            )
        if self.cron is not None:
            _check_cron(self.cron, tz)

    @property
    def kind(self) -> str:
        return "cron" if self.cron is not None else "interval"

    def describe(self) -> str:
        if self.cron is not None:
            return f"cron '{self.cron}' {self.timezone}"
        return f"every {self.interval} s"

    def next_after(self, t: float, anchor: float | None = None) -> float:
        """The first fire strictly after `t`; an interval counts from `anchor` (a past fire) when given."""
        if self.interval is not None:
            if anchor is None or anchor > t:
                return t + self.interval
            return anchor + (math.floor((t - anchor) / self.interval) + 1) * self.interval
        assert self.cron is not None
        start = datetime.fromtimestamp(t, zone(self.timezone))
        return float(croniter(self.cron, start).get_next(datetime).timestamp())

    def fires_between(self, first: float, last: float, limit: int = MAX_FIRES) -> list[float]:
        """Fire times f with first <= f <= last, where `first` is itself a fire time (at most `limit`)."""
        fires: list[float] = []
        t = first
        while t <= last and len(fires) < limit:
            fires.append(t)
            t = self.next_after(t, anchor=first)
        return fires


def _check_cron(expr: str, tz: ZoneInfo) -> None:
    fields = expr.split()
    if not (len(fields) == 5 or (len(fields) == 1 and fields[0].lower() in _MACROS)):
        raise ScheduleError(
            f"cron expression {expr!r} is not valid: expected 5 fields (minute hour day-of-month month day-of-week)"
        )
    if not croniter.is_valid(expr):
        raise ScheduleError(f"cron expression {expr!r} is not valid")
    try:
        croniter(expr, datetime.now(tz)).get_next(datetime)
    except (CroniterBadCronError, CroniterBadDateError, ValueError):
        raise ScheduleError(f"cron expression {expr!r} never fires") from None


@dataclass(frozen=True)
class FirePlan:
    """What a due schedule does at `now`: the fires to run, those dropped, and the next due time."""

    run: list[float]
    missed: int        # fires later than the grace time: skipped
    coalesced: int     # fires merged into the one that runs
    next_due: float


def plan_fires(trigger: Trigger, due: float, now: float, grace: float, coalesce: bool) -> FirePlan:
    """Fires from `due` up to `now`: those within `grace` seconds of now run (only the latest if coalescing).

    A scheduler that was down finds several missed fires here; on time it finds exactly one.
    """
    window = max(due, now - grace)
    in_grace = trigger.fires_between(trigger.next_after(window - 1e-6, anchor=due) if window > due else due, now)
    missed = len(trigger.fires_between(due, window - 1e-6)) if window > due else 0
    next_due = trigger.next_after(now, anchor=due)
    if coalesce and len(in_grace) > 1:
        return FirePlan(in_grace[-1:], missed, len(in_grace) - 1, next_due)
    return FirePlan(in_grace, missed, 0, next_due)
