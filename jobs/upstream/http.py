"""The Directory HTTP API client: one pooled httpx.Client shared by every thread of a refresh (jobs.upstream.client)."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar, Unpack
from urllib.parse import quote

import httpx

from jobs import jsonfast
from jobs.errors import TransientUpstreamError, UpstreamInconsistencyError
from jobs.upstream import shapes
from jobs.upstream.base import Hospital, Region, TotalMismatch
from jobs.upstream.base import RequestGate as RequestGate
from jobs.upstream.client import ClientOptions, PooledClient, status_outcome
from jobs.upstream.http_statuses import check_status as check_status
from jobs.upstream.http_statuses import retry_after_seconds as retry_after_seconds
from jobs.upstream.listing import Listing, Page
from jobs.upstream.retry import Backoff

T = TypeVar("T")

PAGE_SIZE = 500
# Pages of one leaf asked at once once its `total` has shown there are more (see _listing).
AHEAD_PAGES = 8
# What a server may answer for a page past a listing's last instead of an empty page.
OUT_OF_RANGE = frozenset({400, 404, 416, 422})

class HttpDirectoryClient(PooledClient):
    """An Upstream over the Directory HTTP API; thread-safe, retries transient failures itself."""

    def __init__(self, base_url: str, token: str | None = None, **options: Unpack[ClientOptions]) -> None:
        super().__init__(base_url, token, options, defaults=(16, 30.0, Backoff()))
        self._page_pool: ThreadPoolExecutor | None = None  # made by the first leaf of more than 2 pages
        self._page_pool_lock = threading.Lock()
        self._mismatches: dict[str, TotalMismatch] = {}  # region code -> how its listing, taken, disagreed
        self._mismatches_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HttpDirectoryClient(base_url={self.base_url!r}, concurrency={self.concurrency})"

    def provinces(self) -> list[Region]:
        return self._get("/regions", None, _provinces)

    def children(self, region: Region) -> list[Region]:
        return self._get(f"/regions/{quote(region['code'], safe='')}/children", None, shapes.regions)

    def hospitals(self, region: Region) -> list[Hospital]:
        """Every hospital of a leaf, its pages checked against each other (see jobs.upstream.listing);
        an inconsistent listing is read again from page 1, and after the last attempt fails the region.
        One whose `total` disagrees is taken as a stale count only if listed the same twice
        (`take_total_mismatch` then tells it)."""
        path = f"/regions/{quote(region['code'], safe='')}/hospitals"
        # Only whole-listing contradictions restart it; a failed page was already retried on its own.
        listing = self._with_retries(lambda: self._confirmed(path), f"GET {path}", retry_on=UpstreamInconsistencyError)
        mismatch = listing.mismatch
        with self._mismatches_lock:
            if mismatch is None:
                self._mismatches.pop(region["code"], None)
            else:
                self._mismatches[region["code"]] = mismatch
        return listing.hospitals

    def take_total_mismatch(self, region: Region) -> TotalMismatch | None:
        """The stale `total` the last listing of `region` was taken with (None if it agreed), told once."""
        with self._mismatches_lock:
            return self._mismatches.pop(region["code"], None)

    def _confirmed(self, path: str) -> Listing:
        """A listing that agrees with its total, or the second of two that gave the same records (see
        Listing.confirm), the page after its end found empty."""
        first = self._listing(path)
        if first.mismatch is None:
            return first
        again = self._listing(path)
        past = again.last_page + 1
        again.past_end(past, self._get(path, {"page": past, "page_size": PAGE_SIZE}, _hospital_page, past_end=True))
        return first.confirm(again)

    def _listing(self, path: str) -> Listing:
        """Pages 1 and 2 one after the other (a server that ignores `page` shows it at page 2, for two
        requests), then, if `total` says more are left, up to AHEAD_PAGES of them at once: a leaf of n
        pages costs about 3 round trips instead of n. They are checked in order, as if asked one by one;
        past what `total` promised, paging goes on one page at a time until a short page."""
        listing = Listing(f"GET {path}", PAGE_SIZE)
        first = self._page(path, 1)
        if listing.add(1, first) or listing.add(2, self._page(path, 2)):
            return listing
        number = 3
        promised = -(-first.total // len(first.items))  # pages at the size the server serves
        if promised >= number:
            if self._pages_ahead(path, listing, number, promised):
                return listing
            number = promised + 1
        while not listing.add(number, self._page(path, number)):
            number += 1
        return listing

    def _pages_ahead(self, path: str, listing: Listing, first: int, last: int) -> bool:
        """Pages `first`..`last` into `listing`, in order, AHEAD_PAGES at most in flight; True if one ended it."""
        with self._page_pool_lock:
            if self._page_pool is None:
                self._page_pool = ThreadPoolExecutor(max_workers=max(1, self.concurrency), thread_name_prefix="page")
            pool = self._page_pool
        asked: collections.deque[Future[Page]] = collections.deque()
        following = first
        try:
            for number in range(first, last + 1):
                while following <= min(last, number + AHEAD_PAGES - 1):
                    asked.append(pool.submit(self._page, path, following))
                    following += 1
                if listing.add(number, asked.popleft().result()):
                    return True
            return False
        finally:
            for future in asked:
                future.cancel()  # past the page that ended the listing (or failed): not needed

    def _page(self, path: str, number: int) -> Page:
        return self._get(path, {"page": number, "page_size": PAGE_SIZE}, _hospital_page)

    def close(self) -> None:
        with self._page_pool_lock:
            pool, self._page_pool = self._page_pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        super().close()

    def _get(
        self, path: str, params: dict[str, Any] | None, parse: Callable[[object], T], past_end: bool = False
    ) -> T:
        """`past_end`: a page asked past a listing's end, where a server refusing the page (OUT_OF_RANGE) has
        nothing to show: an empty page (`parse` of an empty body)."""
        what = f"GET {path}" + (f"?page={params['page']}" if params else "")
        return self._with_retries(lambda: self._attempt(path, params, parse, what, past_end), what)

    def _attempt(
        self, path: str, query: dict[str, Any] | None, parse: Callable[[object], T], what: str, past_end: bool
    ) -> T:
        self._counted()
        try:
            response = self._client.get(self.base_url + path, params=query)
        except httpx.TransportError as error:
            raise self._transport_error(what, error) from None
        if past_end and response.status_code in OUT_OF_RANGE:
            self._count(status_outcome(response.status_code))
            return parse({"items": [], "total": 0})
        return self._answer(response, what, lambda: self._read(response, parse, what))

    def _read(self, response: httpx.Response, parse: Callable[[object], T], what: str) -> T:
        try:
            return parse(jsonfast.loads_items(response.content))
        except shapes.ItemShapeError as error:  # the body arrived whole, its data breaks the contract
            raise UpstreamInconsistencyError(self._redact(f"{what}: invalid item: {error}")) from None
        except ValueError as error:  # not JSON, or not the contract's body (a faulty proxy): try again
            raise TransientUpstreamError(self._redact(f"{what}: invalid body: {error}")) from None


def _provinces(body: object) -> list[Region]:
    found = shapes.regions(body)
    if not found:
        # An empty top level is never true, and a full refresh believing it would unpublish everything.
        raise shapes.ItemShapeError("the upstream lists no provinces")
    return found


def _hospital_page(body: object) -> Page:
    return Page(
        items=shapes.hospitals(shapes.items(body)),
        total=shapes.total(body),
        page=shapes.echoed(body, "page"),
        page_size=shapes.echoed(body, "page_size"),
    )
