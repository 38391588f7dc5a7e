"""Weighted progress of a refresh (the reference design's weights), its ETA, and the record's progress that
never goes backwards: the pure arithmetic, then the script that stores it."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import redis

from jobs import keys
from jobs.refresh.progress import (
    FULL_WEIGHTS,
    PROVINCE_WEIGHTS,
    REFERENCE_CITIES_PER_PROVINCE,
    REFERENCE_DISTRICTS_PER_PROVINCE,
    Counters,
    compute_progress,
    eta_seconds,
)
from jobs.scripts import Scripts

# A full refresh of 4 provinces, all walked: 10 cities, 40 districts, 50 leaves in all.
WALKED = Counters(provinces_total=4, provinces_walked=4, cities_total=10, districts_total=40, leaves_total=50)


def done(c: Counters, provinces: int = 0, cities: int = 0, districts: int = 0, leaves: int = 0) -> Counters:
    return replace(c, provinces_processed=provinces, cities_processed=cities, districts_processed=districts,
                   leaves_done=leaves)


def test_the_weights_are_the_reference_designs() -> None:
    assert FULL_WEIGHTS == {"provinces": 10, "cities": 20, "districts": 30, "hospitals": 40}
    assert PROVINCE_WEIGHTS == {"cities": 20, "districts": 30, "hospitals": 50}
    assert sum(FULL_WEIGHTS.values()) == sum(PROVINCE_WEIGHTS.values()) == 100


@pytest.mark.parametrize(("level", "expected"), [
    ({"provinces": 4}, 10), ({"cities": 10}, 20), ({"districts": 40}, 30), ({"leaves": 50}, 40),
])
def test_each_level_of_a_full_refresh_weighs_its_share(level: dict[str, int], expected: int) -> None:
    assert compute_progress("full", done(WALKED, **level)) == expected


@pytest.mark.parametrize(("level", "expected"), [({"cities": 10}, 20), ({"districts": 40}, 30), ({"leaves": 50}, 50)])
def test_each_level_of_a_province_refresh_weighs_its_share(level: dict[str, int], expected: int) -> None:
    province = replace(WALKED, provinces_total=1, provinces_walked=1)
    assert compute_progress("province", done(province, **level)) == expected
    # A province refresh has no province level: processing its province adds nothing.
    assert compute_progress("province", done(province, provinces=1, **level)) == expected


def test_halves_count_half_and_everything_done_is_99_not_100() -> None:
    assert compute_progress("full", done(WALKED, 2, 5, 20, 25)) == 50
    assert compute_progress("full", done(WALKED, 4, 10, 40, 50)) == 99  # 100 is for a finished task
    # A level counted past its total (a re-run) is whole, not more.
    assert compute_progress("full", done(WALKED, 4, 99, 999, 999)) == 99


def test_nothing_known_yet_is_zero() -> None:
    assert compute_progress("full", Counters()) == 0
    assert compute_progress("province", Counters()) == 0
    assert compute_progress("full", Counters(provinces_total=34)) == 0


def test_unwalked_provinces_count_with_the_reference_averages_until_walked() -> None:
    # 34 provinces, none walked: the reference design's national totals stand in for the tree.
    unknown = Counters(provinces_total=34)
    cities = round(34 * REFERENCE_CITIES_PER_PROVINCE)
    districts = round(34 * REFERENCE_DISTRICTS_PER_PROVINCE)
    assert (cities, districts) == (334, 2844)
    assert compute_progress("full", replace(unknown, cities_processed=cities)) == 20
    assert compute_progress("full", replace(unknown, districts_processed=districts, leaves_done=districts)) == 70
    # Two walked provinces of 3 cities each: the 32 others are taken to have 3 each too (102 in all).
    walked = Counters(provinces_total=34, provinces_walked=2, cities_total=6, cities_processed=51)
    assert compute_progress("full", walked) == 10  # 51 of 102 cities: half of the 20 %


def test_progress_grows_with_every_counter_when_the_tree_is_known() -> None:
    """With every province walked (totals fixed), counting more of anything never lowers progress."""
    steps = range(0, 61, 6)
    for kind in ("full", "province"):
        seen = {
            (p, c, d, leaves): compute_progress(kind, done(WALKED, p, c, d, leaves))
            for p, c, d, leaves in itertools.product(range(5), steps[:3], steps, steps)
        }
        for (p, c, d, leaves), value in seen.items():
            for more in ((p + 1, c, d, leaves), (p, c + 6, d, leaves), (p, c, d + 6, leaves), (p, c, d, leaves + 6)):
                if more in seen:
                    assert seen[more] >= value, (kind, (p, c, d, leaves), more)


def test_counters_read_from_a_stats_hash_ignore_other_fields() -> None:
    raw = {"provinces_total": "34", "leaves_done": "7", "hospitals_found": "123", "p:110000:leaves_done": "7",
           "conflicts": "2"}
    counters = Counters.from_hash(raw)
    assert (counters.provinces_total, counters.leaves_done, counters.hospitals_found) == (34, 7, 123)
    assert counters.statistics() == {"provinces_processed": 0, "cities_processed": 0, "districts_processed": 0,
                                     "hospitals_found": 123}


@pytest.mark.parametrize(("progress", "elapsed", "eta"), [
    (0, 100.0, None), (50, 0.0, None), (-1, 10.0, None), (25, 30.0, 90), (50, 30.0, 30), (99, 99.0, 1),
    (100, 50.0, 0), (150, 50.0, 0),
])
def test_eta_is_the_rate_so_far_projected(progress: int, elapsed: float, eta: int | None) -> None:
    assert eta_seconds(progress, elapsed) == eta


def test_the_stored_progress_never_goes_backwards(conn: redis.Redis) -> None:
    """Reports from several jobs of a task race each other (and estimates move when provinces are walked):
    the record keeps the highest progress, while the step follows the latest report; once the task has
    ended, a late report changes nothing."""
    task_id = "task_20260101_000000_abcdef"
    record = keys.task(task_id)
    conn.hset(record, mapping={"task_id": task_id, "status": "RUNNING", "progress": "0"})
    progress = Scripts(conn).progress
    highest = 0
    for value, step in ((10, "a"), (40, "b"), (25, "c"), (40, "d"), (41, "e"), (3, "f")):
        written = progress(keys=[record, keys.task_owners(task_id), keys.METRIC_COUNTERS, keys.TASKS_BY_UPDATED,
                                 keys.tasks_with_status_by_updated("RUNNING")],
                           args=[value, step, "2026-01-01T00:00:00+00:00", 1.0, 7, "", ""])
        assert written == 1
        highest = max(highest, value)
        assert conn.hmget(record, "progress", "current_step") == [str(highest).encode(), step.encode()]
    conn.hset(record, mapping={"status": "SUCCEEDED", "progress": "100"})
    late = [50, "late", "2026-01-01T00:00:01+00:00", 2.0, 1, keys.PREFIX, "", ""]
    assert progress(keys=[record, keys.task_owners(task_id)], args=late) == 0
    assert conn.hmget(record, "progress", "current_step") == [b"100", b"f"]
