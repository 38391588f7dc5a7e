"""When a schedule fires, as pure functions of explicit times: cron in a timezone (across a change of
daylight saving time), intervals on their grid, and which missed fires run after a scheduler was down
(misfire grace, coalescing). No server, no clock."""

from __future__ import annotations

import random
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from jobs.errors import ScheduleError
from jobs.named.triggers import (
    MAX_GRACE,
    MAX_INSTANCES,
    MAX_INTERVAL,
    Trigger,
    check_run_options,
    plan_fires,
)

T0 = 1_900_000_000.0
SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")


def at(zone: ZoneInfo, *fields: int) -> float:
    return datetime(*fields, tzinfo=zone).timestamp()  # type: ignore[misc]


# -- the next fire ---------------------------------------------------------------------------------


def test_an_interval_fires_on_its_grid_from_its_anchor() -> None:
    every_10 = Trigger(interval=10)
    assert every_10.next_after(T0) == T0 + 10  # no anchor: from now
    assert every_10.next_after(T0 + 25, anchor=T0) == T0 + 30  # on the grid, not 10 s from now
    assert every_10.next_after(T0 + 30, anchor=T0) == T0 + 40  # strictly after
    assert every_10.next_after(T0, anchor=T0 + 5) == T0 + 10  # an anchor in the future is ignored


def test_a_cron_expression_fires_in_its_timezone() -> None:
    shanghai = Trigger(cron="30 4 * * *")  # the default timezone
    assert shanghai.timezone == "Asia/Shanghai"
    start = at(SHANGHAI, 2030, 1, 1, 4, 29)
    assert shanghai.next_after(start) == start + 60
    assert shanghai.next_after(start + 60) == start + 60 + 86_400  # strictly after: the next day
    assert Trigger(cron="30 4 * * *", timezone="UTC").next_after(start) == at(ZoneInfo("UTC"), 2030, 1, 1, 4, 30)


def test_a_cron_expression_keeps_its_local_time_across_daylight_saving_changes() -> None:
    noon = Trigger(cron="0 12 * * *", timezone="America/New_York")
    before = noon.next_after(at(NEW_YORK, 2030, 3, 9, 11, 0))  # the day before clocks go forward
    after = noon.next_after(before)
    assert datetime.fromtimestamp(after, NEW_YORK).hour == 12
    assert after - before == 23 * 3600  # that day is an hour short
    back = noon.next_after(at(NEW_YORK, 2030, 11, 2, 11, 0))  # and the day before they go back
    assert noon.next_after(back) - back == 25 * 3600


def test_fires_between_lists_the_grid_and_stops_at_its_limit() -> None:
    every_60 = Trigger(interval=60)
    assert every_60.fires_between(T0, T0 + 180) == [T0, T0 + 60, T0 + 120, T0 + 180]
    assert every_60.fires_between(T0, T0 - 1) == []
    assert len(every_60.fires_between(T0, T0 + 10**7, limit=50)) == 50


# -- misfires --------------------------------------------------------------------------------------


def test_on_time_exactly_one_fire_runs() -> None:
    plan = plan_fires(Trigger(interval=10), due=T0 + 10, now=T0 + 10.4, grace=60, coalesce=True)
    assert (plan.run, plan.missed, plan.coalesced, plan.next_due) == ([T0 + 10], 0, 0, T0 + 20)


def test_after_a_long_stop_the_fires_within_grace_are_coalesced_into_the_latest() -> None:
    # Due every 60 s from T0+60; the scheduler comes back at T0+1215 with a grace of 300 s.
    plan = plan_fires(Trigger(interval=60), due=T0 + 60, now=T0 + 1215, grace=300, coalesce=True)
    assert plan.run == [T0 + 1200]
    assert (plan.missed, plan.coalesced) == (15, 4)  # 20 fires: 15 too late, 5 in grace run as one
    assert plan.next_due == T0 + 1260


def test_without_coalescing_every_fire_within_grace_runs() -> None:
    plan = plan_fires(Trigger(interval=60), due=T0 + 60, now=T0 + 1215, grace=150, coalesce=False)
    assert plan.run == [T0 + 1080, T0 + 1140, T0 + 1200]
    assert (plan.missed, plan.coalesced, plan.next_due) == (17, 0, T0 + 1260)


def test_a_fire_later_than_its_grace_never_runs() -> None:
    plan = plan_fires(Trigger(interval=1000), due=T0 + 1000, now=T0 + 1215, grace=30, coalesce=True)
    assert (plan.run, plan.missed, plan.coalesced, plan.next_due) == ([], 1, 0, T0 + 2000)


def test_a_cron_schedule_missed_over_days_runs_once_and_resumes_on_its_time() -> None:
    daily = Trigger(cron="30 3 * * *")
    due = at(SHANGHAI, 2030, 1, 1, 3, 30)
    now = at(SHANGHAI, 2030, 1, 5, 3, 40)  # four days later, ten minutes after that day's fire
    plan = plan_fires(daily, due=due, now=now, grace=3600, coalesce=True)
    assert plan.run == [at(SHANGHAI, 2030, 1, 5, 3, 30)]
    assert (plan.missed, plan.coalesced) == (4, 0)
    assert plan.next_due == at(SHANGHAI, 2030, 1, 6, 3, 30)


def test_every_fire_is_run_missed_or_coalesced_exactly_once() -> None:
    """For any schedule and any outage, the fires from `due` to `now` are accounted for once each, the
    ones that run are within grace, and the next one is on the grid after now."""
    rng = random.Random(7)
    for _ in range(500):
        interval = rng.randint(1, 3600)
        trigger = Trigger(interval=interval)
        due = T0 + rng.randint(0, 10_000)
        now = due + rng.uniform(0, 50 * interval)
        grace = rng.randint(1, 20 * interval)
        coalesce = rng.random() < 0.5
        plan = plan_fires(trigger, due, now, grace, coalesce)
        every = trigger.fires_between(due, now)
        in_grace = [f for f in every if f >= now - grace]
        case = (interval, due, now, grace, coalesce)
        assert plan.run == (in_grace[-1:] if coalesce else in_grace), case
        assert (plan.missed, plan.coalesced) == (len(every) - len(in_grace), len(in_grace) - len(plan.run)), case
        assert plan.next_due > now and (plan.next_due - due) % interval == 0, case
        assert plan.next_due - now <= interval, case


# -- what a schedule may be ------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "problem"), [
    ({}, "exactly one"),
    ({"cron": "* * * * *", "interval": 5}, "exactly one"),
    ({"interval": 0}, "interval 0 is not valid"),
    ({"interval": MAX_INTERVAL + 1}, f"interval {MAX_INTERVAL + 1} is not valid"),
    ({"interval": True}, "interval True is not valid"),
    ({"interval": 2.5}, "interval 2.5 is not valid"),
    ({"cron": "* * *"}, "expected 5 fields"),
    ({"cron": "@reboot"}, "expected 5 fields"),
    ({"cron": "61 * * * *"}, "is not valid"),
    ({"cron": "0 0 31 2 *"}, "never fires"),
    ({"interval": 5, "timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
])
def test_a_trigger_that_cannot_be_is_refused(options: dict[str, object], problem: str) -> None:
    with pytest.raises(ScheduleError, match=problem):
        Trigger(**options)  # type: ignore[arg-type]


def test_what_a_trigger_may_be() -> None:
    assert Trigger(interval=MAX_INTERVAL).describe() == f"every {MAX_INTERVAL} s"
    assert Trigger(cron="@daily", timezone="UTC").describe() == "cron '@daily' UTC"
    assert Trigger(cron="0 9 * * 1-5").kind == "cron" and Trigger(interval=1).kind == "interval"


@pytest.mark.parametrize(("instances", "grace", "problem"), [
    (0, 1, "max instances 0"), (MAX_INSTANCES + 1, 1, "max instances"), (True, 1, "max instances True"),
    (1, 0, "misfire grace time 0"), (1, MAX_GRACE + 1, "misfire grace time"), (1, 1.5, "misfire grace time 1.5"),
])
def test_run_options_out_of_range_are_refused(instances: object, grace: object, problem: str) -> None:
    with pytest.raises(ScheduleError, match=problem):
        check_run_options(instances, grace)


def test_run_options_at_their_bounds_are_accepted() -> None:
    for instances, grace in ((1, 1), (MAX_INSTANCES, MAX_GRACE)):
        check_run_options(instances, grace)  # raises if refused
