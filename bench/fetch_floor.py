"""The fetch floor: the least any refresh can take, fetching every page and throwing the data away.

A minimal, fully pipelined crawl of the Directory HTTP API with httpx at a fixed concurrency: the
region list, the children of every province and city, and every hospitals page of every leaf.
A district is a leaf (the API has no level below it), as in refreshq's own walk. Nothing is kept
beyond what the crawl needs to find the next page, so the time is the upstream's plus the wire's.

It runs as processes of its own, as many as there are workers, each crawling every P-th province
with the per-worker concurrency: in one process, 32 threads of httpx would be held to one core by
the GIL while two workers use two, and the floor would not be a floor.
    python -m bench.fetch_floor --url http://127.0.0.1:8700/v1 --concurrency 16 --shard 0 --shards 2 \
        --out floor-0.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

PAGE_SIZE = 500  # the same page size refreshq's HTTP client asks for

Step = Callable[[], list["Step"]]


class Crawl:
    """One crawl: each step fetches one page and returns the steps it makes necessary."""

    def __init__(
        self, base_url: str, concurrency: int, shard: int = 0, shards: int = 1, province: str | None = None
    ) -> None:
        self.base = base_url.rstrip("/")
        self.shard, self.shards, self.province = shard, shards, province
        self.client = httpx.Client(
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            timeout=httpx.Timeout(30.0, pool=None),
        )
        self._lock = threading.Lock()
        self.requests = 0
        self.records = 0
        self.leaves = 0
        self.bytes = 0

    def get(self, path: str, params: dict[str, int] | None = None) -> Any:
        response = self.client.get(self.base + path, params=params)
        response.raise_for_status()
        with self._lock:  # pool threads update the counters concurrently
            self.requests += 1
            self.bytes += len(response.content)
        return json.loads(response.content)

    def regions(self) -> list[Step]:
        provinces = [p for p in self.get("/regions")["items"] if self.province in (None, p["code"])]
        return [self._children_step(r) for i, r in enumerate(provinces) if i % self.shards == self.shard]

    def _children_step(self, region: dict[str, Any]) -> Step:
        return lambda: self.children(region)

    def children(self, region: dict[str, Any]) -> list[Step]:
        kids = self.get(f"/regions/{region['code']}/children")["items"]
        if not kids:
            return [functools.partial(self.hospitals, region["code"])]
        return [
            functools.partial(self.hospitals, kid["code"]) if kid["level"] == "district" else self._children_step(kid)
            for kid in kids
        ]

    def hospitals(self, code: str, page: int = 1) -> list[Step]:
        body = self.get(f"/regions/{code}/hospitals", {"page": page, "page_size": PAGE_SIZE})
        with self._lock:
            self.records += len(body["items"])
            self.leaves += page == 1
        if page > 1:
            return []
        pages = -(-int(body["total"]) // PAGE_SIZE)
        return [functools.partial(self.hospitals, code, p) for p in range(2, pages + 1)]


def run(
    base_url: str, concurrency: int, shard: int = 0, shards: int = 1, province: str | None = None
) -> dict[str, Any]:
    """Crawl a shard with at most `concurrency` requests in flight; the figures of the crawl."""
    crawl = Crawl(base_url, concurrency, shard, shards, province)
    # Finished steps come back through a queue: concurrent.futures.wait() over thousands of pending
    # futures costs O(pending) per call, which would make the floor itself the bottleneck.
    finished: queue.SimpleQueue[Future[list[Step]]] = queue.SimpleQueue()
    started, started_at = time.perf_counter(), time.time()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="floor") as pool:

        def submit(step: Step) -> None:
            pool.submit(step).add_done_callback(finished.put)

        submit(crawl.regions)
        outstanding = 1
        while outstanding:
            steps = finished.get().result()
            outstanding += len(steps) - 1
            for step in steps:
                submit(step)
    seconds = time.perf_counter() - started
    crawl.client.close()
    return {
        "seconds": round(seconds, 3),
        "started_at": started_at,  # wall clock, so the shards of one floor can be combined
        "ended_at": started_at + seconds,
        "cpu_seconds": round(sum(os.times()[:2]), 2),  # this process's user + system time
        "requests": crawl.requests,
        "records": crawl.records,
        "leaves": crawl.leaves,
        "bytes": crawl.bytes,
        "concurrency": concurrency,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--province", default=None, help="crawl only this province code")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = run(args.url, args.concurrency, args.shard, args.shards, args.province)
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
