"""HttpDirectoryClient against an upstream that breaks each rule of the contract (tests/support/lying_upstream.py).

Every leaf comes back whole and exact, or the client says which region it could not get: never a
short list presented as a complete one, and never thousands of requests for a server going round.
A listing complete and the same twice whose only fault is its `total` (a stale count) is taken, and
the client says so (`take_total_mismatch`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from jobs.errors import PermanentUpstreamError, RegionFailedError, TransientUpstreamError
from jobs.upstream.base import Region, TotalMismatch
from jobs.upstream.http import HttpDirectoryClient
from jobs.upstream.retry import Backoff
from jobs.upstream.sample import SampleDirectory
from tests.support.lying_upstream import REPEATED_TOTAL, Lie, LyingUpstream
from tests.support.upstream_servers import walk

ATTEMPTS = 3
PAGE_CAP = 5  # the server's own page size: the leaves of 北京 below span 2 to 4 pages
FAST = Backoff(base=0.001, cap=0.005)
CHAOYANG = Region(code="110105", name="朝阳区", level="district")  # 18 hospitals at this scale: 4 pages
HAIDIAN = Region(code="110108", name="海淀区", level="district")
DONGCHENG = Region(code="110101", name="东城区", level="district")  # 15 hospitals: 3 whole pages, then an empty one
BEIJING_CITY = Region(code="110100", name="北京市", level="city")


@pytest.fixture(scope="module")
def sample() -> SampleDirectory:
    return SampleDirectory(40_000)


@pytest.fixture
def lying(sample: SampleDirectory, request: pytest.FixtureRequest) -> Iterator[LyingUpstream]:
    lies: tuple[Lie, ...] = getattr(request, "param", ())
    with LyingUpstream(sample, lies, page_cap=PAGE_CAP) as server:
        yield server


def client(url: str, attempts: int = ATTEMPTS, timeout: float = 5.0, backoff: Backoff = FAST) -> HttpDirectoryClient:
    return HttpDirectoryClient(url, timeout=timeout, max_attempts=attempts, backoff=backoff, sleep=lambda _: None)


def test_an_honest_server_with_small_pages_gives_every_leaf_exactly(
    sample: SampleDirectory, lying: LyingUpstream
) -> None:
    with client(lying.url) as upstream:
        assert sample.hospital_count("110105") == 18
        assert upstream.hospitals(CHAOYANG) == sample.hospitals(CHAOYANG)
        assert lying.state.requests["110105"] == 4  # 5 + 5 + 5 + 3: the short page ends it
        assert walk(upstream, ["110000", "820000"]) == walk(sample, ["110000", "820000"])


@pytest.mark.parametrize(
    ("lie", "why", "most"),
    [
        # A count overstating by a whole page, or a listing that ends on an empty page short of its total: what a
        # truncating proxy or a pagination depth limit looks like, never taken for a stale count.
        (Lie("total_high", "110105", by=PAGE_CAP), "total says 23, the pages served 18", 15),
        (Lie("depth_limit", "110105", by=2), "total says 18, the pages served 10", 12),
        (Lie("total_drift", "110105"), "total changed from 18 to 19 at page 2", 6),
        (Lie("repeat", "110105"), "page 2 brings no new id", 6),
        # Each short page ends the listing: the second listing's page past its end shows the hidden cap.
        (Lie("hide_cap", "110105"), "page 1 ended the listing, but page 2 lists 5 item", 9),
        (Lie("drop_field", "110105"), "'phone' is missing", 3),
        (Lie("wrong_type", "110105"), "'phone' is int", 3),
        (Lie("dup", "110105"), "page 1 lists 1 id", 3),
        # The total is off and the two listings differ: not a stale count.
        (Lie("growing", "110105"), "two listings differ", 33),
        (Lie("edited", "110105"), "two listings differ", 27),
    ],
    ids=lambda value: value.kind if isinstance(value, Lie) else "",
)
def test_a_leaf_the_upstream_keeps_lying_about_fails_that_region(
    sample: SampleDirectory, lie: Lie, why: str, most: int
) -> None:
    with LyingUpstream(sample, (lie,), page_cap=PAGE_CAP) as lying, client(lying.url) as upstream:
        with pytest.raises(RegionFailedError, match=why) as failed:
            upstream.hospitals(CHAOYANG)
        assert "110105" in str(failed.value) and f"after {ATTEMPTS} attempts" in str(failed.value)
        # The other leaves are unaffected.
        assert upstream.hospitals(HAIDIAN) == sample.hospitals(HAIDIAN)
        asked = lying.state.requests["110105"]
    # Each listing stops at the page that shows the lie (a bad item is asked for once an attempt).
    assert asked <= most


@pytest.mark.parametrize(("lie", "by"), [("total_low", 1), ("total_low", 5), ("total_low", 18), ("total_high", 1),
                                         ("total_high", PAGE_CAP - 1)])
def test_a_stale_total_on_a_complete_listing_the_same_twice_is_taken_and_told(
    sample: SampleDirectory, lie: str, by: int
) -> None:
    """The pages end properly (a short page) and give the same records twice; the page after the end is
    empty: only the count is wrong. A count that overstates is believed only when less than a page off."""
    total = 18 - by if lie == "total_low" else 18 + by
    with (
        LyingUpstream(sample, (Lie(lie, "110105", by=by),), page_cap=PAGE_CAP) as lying,
        client(lying.url) as upstream,
    ):
        assert upstream.hospitals(CHAOYANG) == sample.hospitals(CHAOYANG)
        assert upstream.take_total_mismatch(CHAOYANG) == TotalMismatch(total=total, listed=18)
        assert upstream.take_total_mismatch(CHAOYANG) is None  # told once
        assert lying.state.listings["110105"] == 2
        # Two listings of 4 pages (one of them perhaps asked ahead of the end), and the page after the second.
        assert 9 <= lying.state.requests["110105"] <= 11
        # A leaf whose count is right costs one listing and tells nothing.
        assert upstream.hospitals(HAIDIAN) == sample.hospitals(HAIDIAN)
        assert upstream.take_total_mismatch(HAIDIAN) is None and lying.state.listings["110108"] == 1


def test_a_count_one_over_a_listing_that_ends_on_an_empty_page_is_refused(sample: SampleDirectory) -> None:
    """15 hospitals in pages of 5 end on an empty page 4: a total of 16 may be stale, or the listing cut
    at a page boundary (a depth limit), and the two look the same. Refused: the province is not published."""
    with (
        LyingUpstream(sample, (Lie("total_high", "110101"),), page_cap=PAGE_CAP) as lying,
        client(lying.url) as upstream,
    ):
        with pytest.raises(RegionFailedError, match="total says 16, the pages served 15"):
            upstream.hospitals(DONGCHENG)
        assert lying.state.listings["110101"] == ATTEMPTS  # never listed twice in an attempt


def test_a_hidden_page_cap_behind_a_low_total_is_not_a_stale_count(sample: SampleDirectory) -> None:
    """The server serves 5 where 500 were asked and says it served 500, and its total (4) is below even that:
    the listing ends at page 1, the same twice, more ids than total -- but page 2 is not empty."""
    lies = (Lie("hide_cap", "110105"), Lie("total_low", "110105", by=14))
    with LyingUpstream(sample, lies, page_cap=PAGE_CAP) as lying, client(lying.url) as upstream:
        with pytest.raises(RegionFailedError, match="page 2 lists 5 item"):
            upstream.hospitals(CHAOYANG)
        assert upstream.take_total_mismatch(CHAOYANG) is None


def test_a_server_refusing_the_page_past_the_end_has_nothing_there(sample: SampleDirectory) -> None:
    """The second listing asks the page past its end; a server that answers an out-of-range page with 404 says
    there is nothing there, as an empty page would: the stale count is taken."""
    lies = (Lie("range_404", "110105"), Lie("total_low", "110105", by=2))
    with LyingUpstream(sample, lies, page_cap=PAGE_CAP) as lying, client(lying.url) as upstream:
        assert upstream.hospitals(CHAOYANG) == sample.hospitals(CHAOYANG)
        assert upstream.take_total_mismatch(CHAOYANG) == TotalMismatch(total=16, listed=18)
        assert lying.state.told["range_404"] >= 1


def test_a_stale_count_that_catches_up_on_the_second_listing_is_no_mismatch(sample: SampleDirectory) -> None:
    with (
        LyingUpstream(sample, (Lie("total_low", "110105", times=1, by=3),), page_cap=PAGE_CAP) as lying,
        client(lying.url) as upstream,
    ):
        assert upstream.hospitals(CHAOYANG) == sample.hospitals(CHAOYANG)
        assert upstream.take_total_mismatch(CHAOYANG) is None
        assert lying.state.listings["110105"] == 2


@pytest.mark.parametrize("lie", ["total_low", "total_high", "total_drift", "repeat", "hide_cap", "dup", "drop_field",
                                 "depth_limit", "growing", "edited"])
def test_a_lie_told_twice_then_the_truth_gives_the_exact_leaf(sample: SampleDirectory, lie: str) -> None:
    with (
        LyingUpstream(sample, (Lie(lie, "110105", times=2),), page_cap=PAGE_CAP) as lying,
        client(lying.url) as upstream,
    ):
        assert upstream.hospitals(CHAOYANG) == sample.hospitals(CHAOYANG)
        assert lying.state.told[lie] >= 2


def test_repeating_pages_cost_a_few_requests_not_thousands(sample: SampleDirectory) -> None:
    """The same page forever, with a total of a million: each listing stops at page 2."""
    with (
        LyingUpstream(sample, (Lie("repeat", "110105"),), page_cap=PAGE_CAP) as lying,
        client(lying.url, attempts=5) as upstream,
    ):
        started = time.monotonic()
        with pytest.raises(RegionFailedError, match="repeated page"):
            upstream.hospitals(CHAOYANG)
        assert lying.state.requests["110105"] == 10 and upstream.requests_made == 10
        assert time.monotonic() - started < 5
    assert REPEATED_TOTAL // PAGE_CAP > 1000


def test_an_id_also_listed_under_another_leaf_is_the_refresh_s_business(sample: SampleDirectory) -> None:
    """Each listing is consistent on its own; the id appears under both leaves (the refresh keeps it once)."""
    with (
        LyingUpstream(sample, (Lie("foreign", "110105", other="110108"),), page_cap=PAGE_CAP) as lying,
        client(lying.url) as upstream,
    ):
        chaoyang = upstream.hospitals(CHAOYANG)
        haidian = upstream.hospitals(HAIDIAN)
    by_id = sorted(chaoyang, key=lambda h: str(h["id"]))
    assert by_id == sorted(sample.hospitals(CHAOYANG) + haidian[:1], key=lambda h: str(h["id"]))


@pytest.mark.parametrize("lie", ["cut", "invalid_json", "wrong_shape", "503", "slow"])
def test_a_broken_response_is_retried_and_the_leaf_is_exact(sample: SampleDirectory, lie: str) -> None:
    lies = (Lie(lie, "110105", times=2, page=1, seconds=2.0), Lie(lie, "110100", times=1))
    with LyingUpstream(sample, lies, page_cap=PAGE_CAP) as lying, client(lying.url, timeout=0.5) as upstream:
        assert upstream.hospitals(CHAOYANG) == sample.hospitals(CHAOYANG)
        assert upstream.children(BEIJING_CITY) == sample.children(BEIJING_CITY)
        assert lying.state.told[lie] == 3


@pytest.mark.parametrize("lie", ["cut", "invalid_json", "wrong_shape", "503"])
def test_a_response_broken_every_time_stays_a_transient_failure(sample: SampleDirectory, lie: str) -> None:
    """A faulty proxy, not a lying upstream: the job fails transiently, to be retried later as a whole."""
    with LyingUpstream(sample, (Lie(lie, "110105"),), page_cap=PAGE_CAP) as lying, client(lying.url) as upstream:
        with pytest.raises(TransientUpstreamError, match="110105") as failed:
            upstream.hospitals(CHAOYANG)
        assert lying.state.requests["110105"] == ATTEMPTS
    assert not isinstance(failed.value, PermanentUpstreamError)


@pytest.mark.parametrize(("lie", "why"), [("drop_field", "'name' is missing"), ("dup", "listed twice")])
def test_a_children_list_with_a_bad_item_fails_that_region(sample: SampleDirectory, lie: str, why: str) -> None:
    with (
        LyingUpstream(sample, (Lie(lie, "110100"),), page_cap=PAGE_CAP) as lying,
        client(lying.url) as upstream,
    ):
        with pytest.raises(RegionFailedError, match=why):
            upstream.children(BEIJING_CITY)
        assert lying.state.requests["110100"] == ATTEMPTS


def test_a_province_gone_from_the_top_level(sample: SampleDirectory, lying: LyingUpstream) -> None:
    with client(lying.url) as upstream:
        assert "110000" in [p["code"] for p in upstream.provinces()]
        lying.state.gone.add("110000")
        assert "110000" not in [p["code"] for p in upstream.provinces()]
        with pytest.raises(PermanentUpstreamError, match="404"):
            upstream.children(Region(code="110000", name="北京市", level="province"))
        lying.state.gone.update(p["code"] for p in sample.provinces())
        # An empty top level is never believed (a full refresh would unpublish everything).
        with pytest.raises(RegionFailedError, match="no provinces"):
            upstream.provinces()


def test_a_server_that_goes_away_and_comes_back(sample: SampleDirectory, lying: LyingUpstream) -> None:
    patient = HttpDirectoryClient(lying.url, timeout=2.0, max_attempts=30, backoff=Backoff(base=0.05, cap=0.2))
    with patient:
        assert patient.hospitals(CHAOYANG) == sample.hospitals(CHAOYANG)  # a kept-alive connection now
        lying.outage(1.5)
        assert not lying.is_up
        got: list[object] = []
        reader = threading.Thread(target=lambda: got.append(patient.hospitals(HAIDIAN)))
        reader.start()
        reader.join(timeout=30)
        assert lying.is_up
        assert got == [sample.hospitals(HAIDIAN)]
        assert patient.requests_made > 5  # refused (and dropped) while it was away, then answered
