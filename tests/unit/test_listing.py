"""The verdict on one leaf's hospitals pages (jobs.upstream.listing), page by page, without a server: a
listing ends on an empty or short page and is complete only if every page agrees with the others; one
that disagrees with its total only is a stale count if listed the same twice."""

from __future__ import annotations

import re
from typing import Any

import pytest

from jobs.errors import UpstreamInconsistencyError
from jobs.upstream.base import TotalMismatch
from jobs.upstream.listing import OVERRUN_PAGES, Listing, Page

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
    ([Page(hospitals(1, 2), 5), Page(hospitals(3), 5)], "total says 5, the pages served 3 distinct ids"),
    ([Page(hospitals(1, 2), 3), Page([], 3)], "total says 3, the pages served 2 distinct ids"),
    ([Page(hospitals(1, 2), 2), Page([], 3)], "total changed from 2 to 3 at page 2"),
    ([Page([], 1)], "total says 1, the pages served 0 distinct ids"),
], ids=["wrong page", "total drift", "repeated page", "dup in a page", "dup across pages", "a page short",
        "short of total on an empty page", "drift on the empty page", "empty but counted"])
def test_pages_that_contradict_each_other_are_refused_naming_the_request(served: list[Page], why: str) -> None:
    listing = Listing(WHAT, page_size=2)
    with pytest.raises(UpstreamInconsistencyError) as refused:
        pages(listing, *served)
    assert str(refused.value) == f"{WHAT}: {why}"


def test_a_listing_that_ends_properly_over_its_total_is_a_disagreement_not_an_error() -> None:
    listing = Listing(WHAT, page_size=2)
    assert pages(listing, Page(hospitals(1, 2), 3), Page(hospitals(3, 4), 3), Page(hospitals(5), 3)) == [
        False, False, True]
    assert listing.mismatch == TotalMismatch(total=3, listed=5) and listing.last_page == 3
    again = Listing(WHAT, page_size=2)
    pages(again, Page(hospitals(1, 2), 3), Page(hospitals(3, 4), 3), Page(hospitals(5), 3))
    again.past_end(4, Page([], 3))
    assert listing.confirm(again) is again and len(again.hospitals) == 5


def test_a_count_over_by_less_than_a_page_ending_on_a_short_page_may_be_stale() -> None:
    listing = Listing(WHAT, page_size=2)
    assert pages(listing, Page(hospitals(1, 2), 4), Page(hospitals(3), 4)) == [False, True]
    assert listing.mismatch == TotalMismatch(total=4, listed=3)


@pytest.mark.parametrize(("second", "why"), [
    ([Page(hospitals(1, 2), 3), Page(hospitals(3, 4), 3), Page(hospitals(5), 3)],
     "two listings differ (total 3, 4 ids, then total 3, 5 ids)"),
    ([Page(hospitals(1, 2), 3), Page([{"id": "H003", "name": "改名"}, *hospitals(4)], 3)], "two listings differ"),
], ids=["more ids", "a record changed"])
def test_two_listings_that_differ_are_no_stale_count(second: list[Page], why: str) -> None:
    listing, again = Listing(WHAT, page_size=2), Listing(WHAT, page_size=2)
    pages(listing, Page(hospitals(1, 2), 3), Page(hospitals(3, 4), 3), Page([], 3))
    pages(again, *second)
    with pytest.raises(UpstreamInconsistencyError, match=re.escape(f"{WHAT}: {why}")):
        listing.confirm(again)


def test_a_second_listing_that_agrees_with_its_total_is_taken_as_it_is() -> None:
    listing, again = Listing(WHAT, page_size=2), Listing(WHAT, page_size=2)
    pages(listing, Page(hospitals(1, 2), 2), Page(hospitals(3), 2))
    pages(again, Page(hospitals(1, 2), 3), Page(hospitals(3), 3))
    assert listing.confirm(again) is again and again.mismatch is None


def test_a_page_past_the_end_with_items_shows_a_cap_the_server_hides() -> None:
    listing = Listing(WHAT, page_size=500)
    assert listing.add(1, Page(hospitals(1, 2), 1, page_size=500)) is True
    with pytest.raises(UpstreamInconsistencyError, match="page 1 ended the listing, but page 2 lists 2 item"):
        listing.past_end(2, Page(hospitals(3, 4), 1))


def test_a_server_inventing_ids_is_stopped_past_its_total() -> None:
    """Pages of new ids that never end: refused once the listing runs OVERRUN_PAGES pages past its total."""
    listing = Listing(WHAT, page_size=2)
    with pytest.raises(UpstreamInconsistencyError, match="far more than total 1") as refused:
        for number in range(1, 100):
            listing.add(number, Page(hospitals(2 * number, 2 * number + 1), 1))
    assert f"by page {OVERRUN_PAGES + 1}" in str(refused.value)
