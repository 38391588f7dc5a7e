"""The Directory HTTP API client: one pooled httpx.Client shared by every thread of a refresh (jobs.upstream.client)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, Unpack
from urllib.parse import quote

import httpx

from jobs import jsonfast
from jobs.errors import TransientUpstreamError, UpstreamInconsistencyError
from jobs.upstream import shapes
from jobs.upstream.base import Hospital, Region
from jobs.upstream.base import RequestGate as RequestGate
from jobs.upstream.client import ClientOptions, PooledClient
from jobs.upstream.listing import Listing, Page
from jobs.upstream.retry import Backoff
from jobs.upstream.statuses import check_status as check_status
from jobs.upstream.statuses import retry_after_seconds as retry_after_seconds

T = TypeVar("T")

PAGE_SIZE = 500
class HttpDirectoryClient(PooledClient):
    """An Upstream over the Directory HTTP API; thread-safe, retries transient failures itself."""

    def __init__(self, base_url: str, token: str | None = None, **options: Unpack[ClientOptions]) -> None:
        super().__init__(base_url, token, options, defaults=(16, 30.0, Backoff()))

    def __repr__(self) -> str:
        return f"HttpDirectoryClient(base_url={self.base_url!r}, concurrency={self.concurrency})"

    def provinces(self) -> list[Region]:
        return self._get("/regions", None, _provinces)

    def children(self, region: Region) -> list[Region]:
        return self._get(f"/regions/{quote(region['code'], safe='')}/children", None, shapes.regions)

    def hospitals(self, region: Region) -> list[Hospital]:
        """Every hospital of a leaf, its pages checked against each other (see jobs.upstream.listing);
        an inconsistent listing is read again from page 1, and after the last attempt fails the region."""
        path = f"/regions/{quote(region['code'], safe='')}/hospitals"
        # Only whole-listing contradictions restart it; a failed page was already retried on its own.
        return self._with_retries(lambda: self._listing(path), f"GET {path}", retry_on=UpstreamInconsistencyError)

    def _listing(self, path: str) -> list[Hospital]:
        listing, number = Listing(f"GET {path}", PAGE_SIZE), 1
        while not listing.add(number, self._get(path, {"page": number, "page_size": PAGE_SIZE}, _hospital_page)):
            number += 1
        return listing.hospitals

    def _get(self, path: str, params: dict[str, Any] | None, parse: Callable[[object], T]) -> T:
        what = f"GET {path}" + (f"?page={params['page']}" if params else "")
        return self._with_retries(lambda: self._attempt(path, params, parse, what), what)

    def _attempt(self, path: str, query: dict[str, Any] | None, parse: Callable[[object], T], what: str) -> T:
        self._counted()
        try:
            response = self._client.get(self.base_url + path, params=query)
        except httpx.TransportError as error:
            raise self._transport_error(what, error) from None
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
