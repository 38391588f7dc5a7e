"""HttpDirectoryClient against an upstream that breaks each rule of the contract (tests/lying_upstream.py).

Every leaf comes back whole and exact, or the client says which region it could not get: never a
short list presented as a complete one, and never thousands of requests for a server going round.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from jobs.errors import PermanentUpstreamError, RegionFailedError, TransientUpstreamError
from jobs.upstream.base import Region
from jobs.upstream.http import HttpDirectoryClient
from jobs.upstream.retry import Backoff
from jobs.upstream.sample import SampleDirectory
from tests.lying_upstream import REPEATED_TOTAL, Lie, LyingUpstream
from tests.upstream_servers import walk

ATTEMPTS = 3
PAGE_CAP = 5  # the server's own page size: the leaves of 北京 below span 2 to 4 pages
FAST = Backoff(base=0.001, cap=0.005)
CHAOYANG = Region(code="110105", name="朝阳区", level="district")  # 18 hospitals at this scale: 4 pages
HAIDIAN = Region(code="110108", name="海淀区", level="district")
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
    ("lie", "why"),
    [
        ("total_low", "18 items served by page 4, more than total 17"),
        ("total_high", "total says 19, the pages served 18"),
        ("total_drift", "total changed from 18 to 19 at page 2"),
        ("repeat", "page 2 brings no new id"),
        ("hide_cap", "total says 18, the pages served 5"),
        ("drop_field", "'phone' is missing"),
        ("wrong_type", "'phone' is int"),
        ("dup", "page 1 lists 1 id"),
    ],
)
def test_a_leaf_the_upstream_keeps_lying_about_fails_that_region(
    sample: SampleDirectory, lie: str, why: str
) -> None:
    with LyingUpstream(sample, (Lie(lie, "110105"),), page_cap=PAGE_CAP) as lying, client(lying.url) as upstream:
        with pytest.raises(RegionFailedError, match=why) as failed:
            upstream.hospitals(CHAOYANG)
        assert "110105" in str(failed.value) and f"after {ATTEMPTS} attempts" in str(failed.value)
        # The other leaves are unaffected.
        assert upstream.hospitals(HAIDIAN) == sample.hospitals(HAIDIAN)
        asked = lying.state.requests["110105"]
    # Each of the 3 listings stops at the page that shows the lie (a bad item is asked for 3 times).
    assert asked <= {"total_low": 12, "total_high": 12, "total_drift": 6, "repeat": 6, "hide_cap": 3}.get(lie, 3)


@pytest.mark.parametrize("lie", ["total_low", "total_high", "total_drift", "repeat", "hide_cap", "dup", "drop_field"])
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
