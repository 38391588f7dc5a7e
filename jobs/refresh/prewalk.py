"""Walking the provinces of a full refresh from its plan job, all at once, before their jobs run.

A province job that walks its own tree spends two or three upstream round trips at low concurrency
before it fetches a single leaf, and a full refresh has 34 of them. The plan job walks them together
instead, with every request it may keep in flight, and hands each province to its job the moment its
tree is saved (jobs.refresh.walk keeps it; the job then finds it walked). The provinces with the most
cities are walked first, so their jobs start first: a big province left for the end would keep one
worker busy while the others idle.

It only saves the province jobs work: a province whose walk fails here is handed over unwalked, and
its job walks it again and reports what the upstream said, as it would have without this.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import redis

from jobs import keys
from jobs.refresh.fence import Fence
from jobs.refresh.published import Leaf
from jobs.refresh.walk import COMPLETE, leaves_of_city, province_leaf, save_walk
from jobs.upstream.base import Region, Upstream

log = logging.getLogger("refreshq.refresh")
T = TypeVar("T")


def prewalk(
    conn: redis.Redis, task_id: str, provinces: list[Region], upstream: Upstream, concurrency: int,
    ready: Callable[[Region], None], stop: Callable[[], bool], fence: Fence | None = None,
) -> None:
    """Walk `provinces`, calling `ready` once for each of them (walked or not), as soon as it can start.
    `stop()` true (a cancel, a warm shutdown) ends the walking: the provinces left are handed over as they are.
    Walks are saved while `fence` (the plan job's claim) holds."""
    walked = _walked(conn, task_id, provinces)
    for province in provinces:
        if province["code"] in walked:
            ready(province)
    todo = [p for p in provinces if p["code"] not in walked]
    if not todo:
        return
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="prewalk") as pool:
        listed = {p["code"]: pool.submit(_unless(stop, upstream.children), p) for p in todo}
        cities: dict[str, list[Region]] = {}
        for province in todo:
            found = _result(listed[province["code"]], province)
            if found is None:
                ready(province)  # refused, failed or stopped: its job walks it
            elif not found:
                save_walk(conn, task_id, province, [], [province_leaf(province)], [], fence)
                ready(province)
            else:
                cities[province["code"]] = found
        _walk_cities(conn, task_id, [p for p in todo if p["code"] in cities], cities, upstream, pool, ready, stop,
                     fence)


def _walk_cities(
    conn: redis.Redis, task_id: str, provinces: list[Region], cities: dict[str, list[Region]],
    upstream: Upstream, pool: ThreadPoolExecutor, ready: Callable[[Region], None], stop: Callable[[], bool],
    fence: Fence | None,
) -> None:
    """The districts of every city, the largest provinces' first (asked first, handed over first); each
    province saved and handed over once its cities have answered."""
    largest_first = sorted(provinces, key=lambda p: -len(cities[p["code"]]))
    asked: list[tuple[Region, list[Future[list[Leaf]]], list[tuple[Region, str]]]] = []
    for province in largest_first:
        failures: list[tuple[Region, str]] = []
        fetch = _unless(stop, _city_walker(upstream, province, failures))
        asked.append((province, [pool.submit(fetch, city) for city in cities[province["code"]]], failures))
    for province, futures, failures in asked:
        found = [_result(future, province) for future in futures]
        if all(leaves is not None for leaves in found):
            leaves = sorted((leaf for group in found for leaf in group or ()), key=lambda leaf: leaf.code)
            save_walk(conn, task_id, province, cities[province["code"]], leaves, failures, fence)
        ready(province)


def _city_walker(
    upstream: Upstream, province: Region, failures: list[tuple[Region, str]]
) -> Callable[[Region], list[Leaf]]:
    return lambda city: leaves_of_city(upstream, province, city, failures)


class _Stopped(Exception):
    """Raised in place of a request once the walking has been told to stop."""


def _unless(stop: Callable[[], bool], call: Callable[[Region], T]) -> Callable[[Region], T]:
    def guarded(region: Region) -> T:
        if stop():
            raise _Stopped()
        return call(region)
    return guarded


def _result(future: Future[T], province: Region) -> T | None:
    """What a request gave, or None when it failed; its job walks the province again and says why."""
    try:
        return future.result()
    except _Stopped:
        return None
    except Exception as exc:  # whatever it was, the province job meets it again and reports it
        log.info("refresh: walking %s ahead of its job failed (%s); its job walks it", province["code"], exc)
        return None


def _walked(conn: redis.Redis, task_id: str, provinces: list[Region]) -> set[str]:
    with conn.pipeline(transaction=False) as pipe:
        for province in provinces:
            pipe.hexists(keys.province_plan(task_id, province["code"]), COMPLETE)
        return {p["code"] for p, done in zip(provinces, pipe.execute(), strict=True) if done}


