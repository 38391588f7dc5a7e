"""What ending a refresh run records, once, in the same script as the status change (jobs/scripts/transition.lua
with its fragment _run_ended.lua): the ended-tasks counter, the run-time histogram, the hour's and all-time sums,
the kind's run list (the last RUN_LIST_LENGTH) and, unless cancelled, the latest outcome of its subject ("full"
or "province:CODE"), which the alert rules read. A full refresh that succeeds supersedes every province's failed
outcome. The keys and the numbers are given to the script from here: the observe side's data model is this
module and jobs/keys.py, not a string inside the script.
"""

from __future__ import annotations

from jobs import keys

# Upper bounds (seconds) of the run-time histograms (a refresh takes 30-60 minutes; buckets up to 4 h).
RUN_SECONDS_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 2700, 3600, 5400, 7200, 10800, 14400)
RUN_LIST_LENGTH = 200


def hour_of(now: float) -> int:
    """The start (epoch) of the hour `now` falls in, as the script computes it from the same `now`."""
    return int(now // keys.METRIC_HOUR_SECONDS) * keys.METRIC_HOUR_SECONDS


def run_ended_keys(kind: str, now: float) -> list[str]:
    """The keys a run of `kind` ending at `now` writes, in the order _run_ended.lua takes them."""
    return [keys.METRIC_COUNTERS, keys.run_seconds(kind), keys.metric_hour(hour_of(now)), keys.METRIC_TOTALS,
            keys.run_list(kind), keys.OUTCOMES]


def run_ended_args() -> list[int | str]:
    """The numbers _run_ended.lua takes: the hour's TTL, the histogram's bounds (comma list), the run list's length."""
    return [keys.METRIC_HOUR_TTL, ",".join(str(bound) for bound in RUN_SECONDS_BUCKETS), RUN_LIST_LENGTH]
