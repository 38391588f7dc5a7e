"""Walking a province's region tree once per task, kept in Redis so a re-run does not walk again."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import redis

from jobs import keys
from jobs.errors import PermanentUpstreamError
from jobs.redis_values import as_text_map
from jobs.refresh import records
from jobs.refresh.fence import Fence, guarded, unfenced
from jobs.refresh.published import Leaf
from jobs.scripts import Scripts
from jobs.upstream.base import Region, Upstream

COMPLETE = "__complete__"
_FAILED = "__failed__"


def walk_province(
    conn: redis.Redis, task_id: str, province: Region, upstream: Upstream, concurrency: int,
    fence: Fence | None = None,
) -> tuple[list[Leaf], int]:
    """The leaves of a province and how many of its regions the upstream refused (404); the walk is saved
    while `fence` holds."""
    plan_key = keys.province_plan(task_id, province["code"])
    saved = as_text_map(conn.hgetall(plan_key))
    if COMPLETE in saved:
        leaves = [Leaf.from_json(v) for k, v in saved.items() if not k.startswith("__")]
        return sorted(leaves, key=lambda leaf: leaf.code), int(saved.get(_FAILED, "0"))
    cities = upstream.children(province)  # a refused province fails as a whole
    failures: list[tuple[Region, str]] = []
    if not cities:
        leaves = [province_leaf(province)]
    else:
        leaves = _walk_cities(upstream, province, cities, concurrency, failures)
    save_walk(conn, task_id, province, cities, leaves, failures, fence)
    return leaves, len(failures)


def _walk_cities(
    upstream: Upstream, province: Region, cities: list[Region], concurrency: int,
    failures: list[tuple[Region, str]],
) -> list[Leaf]:
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(cities)))) as pool:
        nested = list(pool.map(lambda city: leaves_of_city(upstream, province, city, failures), cities))
    return sorted((leaf for group in nested for leaf in group), key=lambda leaf: leaf.code)


def province_leaf(province: Region) -> Leaf:
    """The one leaf of a province without cities (Hong Kong, Macau): the province itself."""
    return Leaf(province["code"], province["name"], province["level"], "", province["name"])


def leaves_of_city(
    upstream: Upstream, province: Region, city: Region, failures: list[tuple[Region, str]]
) -> list[Leaf]:
    try:
        districts = upstream.children(city)
    except PermanentUpstreamError as exc:
        failures.append((city, str(exc)))
        return []
    if not districts:
        return [Leaf(city["code"], city["name"], city["level"], city["name"], province["name"])]
    return [Leaf(d["code"], d["name"], d["level"], city["name"], province["name"]) for d in districts]


def save_walk(
    conn: redis.Redis, task_id: str, province: Region, cities: list[Region], leaves: list[Leaf],
    failures: list[tuple[Region, str]], fence: Fence | None = None,
) -> None:
    """Keep a province's walked tree, its refused regions and its counters (once), in one transaction made
    while `fence` holds (the plan's claim, or the province's)."""
    code = province["code"]
    districts = sum(1 for leaf in leaves if leaf.level == "district")

    def writes(pipe: redis.client.Pipeline) -> None:
        pipe.hset(keys.province_plan(task_id, code), mapping={
            **{leaf.code: leaf.to_json() for leaf in leaves}, _FAILED: len(failures), COMPLETE: 1,
        })
        for region, error in failures:
            records.failed_region(pipe, task_id, region, error, province=code)
        Scripts(conn).count_once(
            keys=[keys.task_walked(task_id), keys.task_stats(task_id)],
            args=[
                code, keys.PROVINCES_WALKED, 1, keys.CITIES_TOTAL, len(cities), keys.CITIES_PROCESSED, len(cities),
                keys.DISTRICTS_TOTAL, districts, keys.LEAVES_TOTAL, len(leaves),
                keys.province_stat(code, keys.PROVINCE_LEAVES_TOTAL), len(leaves),
            ],
            client=pipe,
        )

    guarded(conn, fence or unfenced(task_id), "walk", writes)
