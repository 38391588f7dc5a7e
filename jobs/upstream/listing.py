"""Checking the pages of one leaf's hospitals against each other, so a leaf is complete or refused.

The contract's `total` cannot be trusted to end paging (a stale one truncates a leaf without an
error), and neither can a server's paging (one that ignores `page` repeats page 1 forever). So
paging ends on an empty or a short page, and whatever the pages said must then agree: the same
`total` on every page, every id new, as many distinct ids as `total`. Anything else is an
UpstreamInconsistencyError: the caller lists the leaf again from page 1, and gives up on the region
after its attempts.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs import jsonfast
from jobs.errors import UpstreamInconsistencyError
from jobs.upstream.base import Hospital


@dataclass(frozen=True)
class Page:
    """One decoded hospitals page: its items and what the server said about it."""

    items: list[Hospital]
    total: int
    page: int | None = None  # as echoed by the server, if it did
    page_size: int | None = None


class Listing:
    """The pages of one leaf as they arrive; `add` says when the listing is complete."""

    def __init__(self, what: str, page_size: int) -> None:
        self.what = what
        self._asked = page_size
        self._total: int | None = None
        self._by_id: dict[str, Hospital] = {}
        self._plain = True  # every page's items found plain when read (jsonfast.PlainRecords)

    @property
    def hospitals(self) -> list[Hospital]:
        records = list(self._by_id.values())
        return jsonfast.PlainRecords(records) if self._plain else records

    def add(self, number: int, page: Page) -> bool:
        """Take page `number` (1-based); True when it was the last one (all checks passed)."""
        if page.page is not None and page.page != number:
            self._inconsistent(f"asked for page {number}, the server answered page {page.page}")
        if self._total is None:
            self._total = page.total
        elif page.total != self._total:
            self._inconsistent(f"total changed from {self._total} to {page.total} at page {number}")
        if page.items:
            self._take(number, page.items, page.total)
            self._plain = self._plain and type(page.items) is jsonfast.PlainRecords
        # A server may serve fewer than asked (it says so in page_size): only shorter than that ends.
        size = min(self._asked, page.page_size or self._asked)
        if page.items and len(page.items) >= size:
            return False
        if len(self._by_id) != page.total:
            self._inconsistent(f"total says {page.total}, the pages served {len(self._by_id)} distinct ids")
        return True

    def _take(self, number: int, items: list[Hospital], total: int) -> None:
        fresh = 0
        for hospital in items:
            key = str(hospital["id"])
            if key in self._by_id:
                continue
            self._by_id[key] = hospital
            fresh += 1
        if fresh == 0:
            # Stop at once: a server that ignores `page` would otherwise be asked total/size times.
            self._inconsistent(f"page {number} brings no new id (a repeated page)")
        if fresh != len(items):
            self._inconsistent(f"page {number} lists {len(items) - fresh} id(s) already listed")
        if len(self._by_id) > total:
            self._inconsistent(f"{len(self._by_id)} items served by page {number}, more than total {total}")

    def _inconsistent(self, detail: str) -> None:
        raise UpstreamInconsistencyError(f"{self.what}: {detail}")
