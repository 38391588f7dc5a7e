"""The verdict on one leaf's hospitals pages (jobs.upstream.listing), page by page, without a server: a
listing ends on an empty or short page and is complete only if every page agrees with the others."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.errors import UpstreamInconsistencyError
from jobs.upstream.listing import Listing, Page

WHAT = "GET /regions/110105/hospitals"


def hospitals(*numbers: int) -> list[Any]:
    return [{"id": f"H{n:03d}", "name": f"第{n}医院"} for n in numbers]


def pages(listing: Listing, *served: Page) -> list[bool]:
    """What `add` answered for each page, in order."""
    return [listing.add(number, page) for number, page in enumerate(served, start=1)]


def test_a_short_page_ends_a_complete_listing() -> None:
    listing = Listing(WHAT, page_size=5)
    ends = pages(listing, Page(hospitals(1, 2, 3, 4, 5), 13), Page(hospitals(6, 7, 8, 9, 10), 13),
                 Page(hospitals(11, 12, 13), 13))
    assert ends == [False, False, True]
    assert [h["id"] for h in listing.hospitals] == [f"H{n:03d}" for n in range(1, 14)]


def test_an_empty_page_ends_a_listing_of_whole_pages() -> None:
    listing = Listing(WHAT, page_size=2)
    assert pages(listing, Page(hospitals(1, 2), 4), Page(hospitals(3, 4), 4), Page([], 4)) == [False, False, True]
    assert len(listing.hospitals) == 4


def test_an_empty_leaf_is_one_page() -> None:
    listing = Listing(WHAT, page_size=500)
    assert listing.add(1, Page([], 0)) is True
    assert listing.hospitals == []


def test_a_server_serving_smaller_pages_than_asked_is_read_to_the_end() -> None:
    """Asked for 500, the server says it serves 2: a page of 2 is full, not the last."""
    listing = Listing(WHAT, page_size=500)
    ends = pages(listing, Page(hospitals(1, 2), 3, page=1, page_size=2), Page(hospitals(3), 3, page=2, page_size=2))
    assert ends == [False, True]
    assert len(listing.hospitals) == 3


@pytest.mark.parametrize(("served", "why"), [
    ([Page(hospitals(1, 2), 4, page=2)], "asked for page 1, the server answered page 2"),
    ([Page(hospitals(1, 2), 4), Page(hospitals(3), 5)], "total changed from 4 to 5 at page 2"),
    ([Page(hospitals(1, 2), 9), Page(hospitals(1, 2), 9)], "page 2 brings no new id (a repeated page)"),
    ([Page(hospitals(1, 1), 2)], "page 1 lists 1 id(s) already listed"),
    ([Page(hospitals(1, 2), 4), Page(hospitals(2, 3), 4)], "page 2 lists 1 id(s) already listed"),
    ([Page(hospitals(1, 2), 3), Page(hospitals(3, 4), 3)], "4 items served by page 2, more than total 3"),
    ([Page(hospitals(1, 2), 5), Page(hospitals(3), 5)], "total says 5, the pages served 3 distinct ids"),
    ([Page(hospitals(1, 2), 2), Page([], 3)], "total changed from 2 to 3 at page 2"),
    ([Page([], 1)], "total says 1, the pages served 0 distinct ids"),
], ids=["wrong page", "total drift", "repeated page", "dup in a page", "dup across pages", "over total",
        "under total", "drift on the empty page", "empty but counted"])
def test_pages_that_contradict_each_other_are_refused_naming_the_request(served: list[Page], why: str) -> None:
    listing = Listing(WHAT, page_size=2)
    with pytest.raises(UpstreamInconsistencyError) as refused:
        pages(listing, *served)
    assert str(refused.value) == f"{WHAT}: {why}"
