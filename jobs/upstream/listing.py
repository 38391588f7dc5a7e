"""Checking the pages of one leaf's hospitals against each other, so a leaf is complete or refused.

The contract's `total` cannot be trusted to end paging (a stale one truncates a leaf without an
error), and neither can a server's paging (one that ignores `page` repeats page 1 forever). So
paging ends on an empty or a short page, and whatever the pages said must then agree: the same
`total` on every page, every id new. Anything else is an UpstreamInconsistencyError: the caller lists
the leaf again from page 1, and gives up on the region after its attempts.

A listing that ends properly with more or fewer distinct ids than `total` is a *disagreement*, not yet an
error: a count cache that lags its data says so on every listing, a listing that changes does not. The
caller lists the leaf a second time, asking one page past its end, and takes it as a stale count
(`TotalMismatch`) only if both listings gave the same records and that page is empty (a server capping
its pages below the size it admits serves more there). A count that overstates is believed stale only
when the listing ends on a short page that is not empty and less than a page short of `total`: a cut
listing (a pagination depth limit, a proxy that drops the rest) ends on an empty page or whole pages
short, and publishing it would drop records the upstream still has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

from jobs import jsonfast
from jobs.errors import UpstreamInconsistencyError
from jobs.upstream.base import Hospital, TotalMismatch

# Past `total`, a listing may go on for this many pages (or as far again as `total`, if more) before it
# is refused: a stale count of a leaf that grew is a few items short, a server inventing ids never ends.
OVERRUN_PAGES = 10


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
        self.last_page = 0  # the page that ended the listing (0 while it goes on)
        self._last_items = 0
        self._size = page_size  # the page size the server served at (the smaller of asked and echoed)

    @property
    def hospitals(self) -> list[Hospital]:
        records = list(self._by_id.values())
        return jsonfast.PlainRecords(records) if self._plain else records

    @property
    def mismatch(self) -> TotalMismatch | None:
        """How the ended listing disagrees with its `total` (None when it agrees)."""
        listed = len(self._by_id)
        if self._total is None or listed == self._total:
            return None
        return TotalMismatch(total=self._total, listed=listed)

    def add(self, number: int, page: Page) -> bool:
        """Take page `number` (1-based); True when it was the last one (all checks passed)."""
        if page.page is not None and page.page != number:
            self._inconsistent(f"asked for page {number}, the server answered page {page.page}")
        if self._total is None:
            self._total = page.total
        elif page.total != self._total:
            self._inconsistent(f"total changed from {self._total} to {page.total} at page {number}")
        # A server may serve fewer than asked (it says so in page_size): only shorter than that ends.
        self._size = min(self._asked, page.page_size or self._asked)
        if page.items:
            self._take(number, page.items, page.total)
            self._plain = self._plain and type(page.items) is jsonfast.PlainRecords
        if page.items and len(page.items) >= self._size:
            return False
        self.last_page, self._last_items = number, len(page.items)
        self._check_end()
        return True

    def _check_end(self) -> None:
        """Refuse an ended listing short of `total` in a way a stale count does not explain (see the module)."""
        mismatch = self.mismatch
        if mismatch is None or mismatch.listed > mismatch.total:
            return
        if self._last_items == 0 or mismatch.total - mismatch.listed >= self._size:
            self._inconsistent(f"total says {mismatch.total}, the pages served {mismatch.listed} distinct ids")

    def past_end(self, number: int, page: Page) -> None:
        """Check page `number`, asked past the page that ended the listing: it must hold nothing."""
        if page.items:
            self._inconsistent(f"page {self.last_page} ended the listing, but page {number} lists "
                               f"{len(page.items)} item(s) more (the server serves fewer than it says)")

    def confirm(self, again: Listing) -> Listing:
        """The listing to keep when this one disagreed with its total and `again` is the second listing: that
        one if it agrees now, else both must have given the same records (a stale count)."""
        if again.mismatch is None or again._by_id == self._by_id:
            return again
        first, second = self.mismatch, again.mismatch
        self._inconsistent(f"two listings differ (total {first.total if first else '?'}, {len(self._by_id)} "
                           f"ids, then total {second.total}, {len(again._by_id)} ids): not a stale count")

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
        if len(self._by_id) > total + max(total, OVERRUN_PAGES * self._size):
            self._inconsistent(f"{len(self._by_id)} items served by page {number}, far more than total {total}")

    def _inconsistent(self, detail: str) -> NoReturn:
        raise UpstreamInconsistencyError(f"{self.what}: {detail}")
