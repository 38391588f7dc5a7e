"""HttpDirectoryClient against the sample served by jobs.upstream.serve, on real loopback HTTP."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from jobs.errors import PermanentUpstreamError, TransientUpstreamError
from jobs.upstream import http, shapes
from jobs.upstream.base import Region
from jobs.upstream.http import HttpDirectoryClient, RequestGate, retry_after_seconds
from jobs.upstream.retry import Backoff, call_with_retries
from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import start_background
from tests.support.helpers import free_port
from tests.support.upstream_servers import walk

FAST = Backoff(base=0.001, cap=0.005)
TOKEN = "tok-3f9a-very-secret"
# Provinces that cover every shape of the tree: a municipality, a province with city-level leaves,
# and province-level leaves. Fault tests walk only these, to stay quick.
SOME = ("110000", "440000", "810000", "820000")


class RecordedSleep:
    """Records what the client asked to sleep, without sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self._lock:
            self.delays.append(seconds)


@pytest.fixture(scope="module")
def sample() -> SampleDirectory:
    return SampleDirectory(20_000)


def client(
    url: str,
    *,
    token: str | None = None,
    timeout: float = 5.0,
    max_attempts: int = 8,
    sleep: Callable[[float], None] | None = None,
    request_gate: RequestGate | None = None,
) -> HttpDirectoryClient:
    return HttpDirectoryClient(
        url,
        token=token,
        timeout=timeout,
        max_attempts=max_attempts,
        request_gate=request_gate,
        backoff=FAST,
        sleep=sleep or RecordedSleep(),
    )


def needed_requests(sample: SampleDirectory, regions: list[Region]) -> int:
    """Requests of a fault-free walk at this scale: provinces, each region's children, each leaf's page."""
    return 1 + len(regions) + sum(1 for r in regions if sample.is_leaf(r["code"]))


@pytest.fixture
def caught_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


@pytest.mark.slow
def test_full_walk_equals_the_sample(sample: SampleDirectory) -> None:
    with start_background(directory=sample) as server, client(server.url) as upstream:
        regions, hospitals = walk(upstream)
        assert regions == walk(sample)[0]
        assert hospitals == list(sample.all_hospitals())
        # One request per region's children, one per leaf's hospitals (20,000 fit a page each).
        assert upstream.requests_made == server.counters.total == 1 + len(regions) + len(sample.leaves())
        assert server.counters.max_in_flight <= 8


def test_pagination_reads_every_page_and_no_more() -> None:
    sample = SampleDirectory(300_000)
    hong_kong = Region(code="810000", name="香港特别行政区", level="province")
    total = sample.hospital_count("810000")
    assert total > 1000 and total % 500 != 0
    with start_background(directory=sample) as server, client(server.url) as upstream:
        assert upstream.hospitals(hong_kong) == sample.hospitals(hong_kong)
        assert server.counters.by_kind == {"hospitals": 3}  # 500, 500, then the short page ends it


def test_a_leaf_of_many_pages_asks_for_them_at_once_after_page_two() -> None:
    """Pages 1 and 2 alone, then the rest `total` promises in flight together: about three round trips
    for the leaf, every page asked once, every hospital once and in order."""
    sample = SampleDirectory(1_000_000)
    hong_kong = Region(code="810000", name="香港特别行政区", level="province")
    pages = -(-sample.hospital_count("810000") // 500)
    assert pages >= 6
    # The latency holds each request long enough for the ones asked together to overlap.
    with start_background(directory=sample, latency_ms=150) as server, client(server.url) as upstream:
        assert upstream.hospitals(hong_kong) == sample.hospitals(hong_kong)
        assert server.counters.by_kind == {"hospitals": pages}
        assert server.counters.max_in_flight == min(pages - 2, http.AHEAD_PAGES)


def test_empty_leaf_costs_one_request() -> None:
    sample = SampleDirectory(100)
    empty = next(leaf for leaf in sample.leaves() if sample.hospital_count(leaf["code"]) == 0)
    with start_background(directory=sample) as server, client(server.url) as upstream:
        assert upstream.hospitals(empty) == []
        assert upstream.requests_made == 1


def test_unknown_region_is_permanent_at_once(sample: SampleDirectory) -> None:
    bogus = Region(code="999999", name="?", level="city")
    with start_background(directory=sample) as server, client(server.url) as upstream:
        with pytest.raises(PermanentUpstreamError, match="404"):
            upstream.children(bogus)
        with pytest.raises(PermanentUpstreamError):
            upstream.hospitals(bogus)
        assert upstream.requests_made == 2


def test_injected_faults_are_retried_and_the_result_is_exact(sample: SampleDirectory) -> None:
    sleep = RecordedSleep()
    # 12 attempts: with a fault rate of 0.2 a request failing every time (0.2**12) never happens.
    with (
        start_background(directory=sample, fail_rate=0.1, rate_429=0.03, invalid_json_rate=0.07, seed=7) as server,
        client(server.url, sleep=sleep, max_attempts=12) as upstream,
    ):
        regions, hospitals = walk(upstream, SOME)
    assert (regions, hospitals) == walk(sample, SOME)
    retries = upstream.requests_made - needed_requests(sample, regions)
    assert len(sleep.delays) == retries > 10


def test_retry_after_is_honoured(sample: SampleDirectory) -> None:
    sleep = RecordedSleep()
    with start_background(directory=sample, rate_429=0.2, seed=3) as server:
        with client(server.url, sleep=sleep, max_attempts=12) as upstream:
            regions, hospitals = walk(upstream, ["440000"])
        rate_limited = server.counters.total - needed_requests(sample, regions)
    assert (regions, hospitals) == walk(sample, ["440000"])
    assert rate_limited > 0
    # Backoff alone never reaches 5 ms here: every wait of a second or more is a Retry-After: 1.
    assert sum(1 for d in sleep.delays if d >= 1.0) == rate_limited == len(sleep.delays)


def test_a_hanging_request_times_out_and_is_retried(sample: SampleDirectory) -> None:
    guangzhou = Region(code="440100", name="广州市", level="city")
    with (
        start_background(directory=sample, hang_rate=0.2, hang_seconds=10, seed=1) as server,
        client(server.url, timeout=0.3, max_attempts=10) as upstream,
    ):
        districts = upstream.children(guangzhou)
        hospitals = [h for d in districts for h in upstream.hospitals(d)]
    assert districts == sample.children(guangzhou)
    assert hospitals == [h for d in districts for h in sample.hospitals(d)]
    assert upstream.requests_made > 1 + len(districts)  # some requests hung and were sent again


def test_exhausted_retries_raise_a_transient_error(sample: SampleDirectory) -> None:
    with start_background(directory=sample, fail_rate=1.0) as server, client(server.url, max_attempts=3) as upstream:
        with pytest.raises(TransientUpstreamError, match="after 3 attempts"):
            upstream.provinces()
        assert server.counters.total == upstream.requests_made == 3


def test_token_is_sent_and_never_leaks(sample: SampleDirectory, caught_logs: pytest.LogCaptureFixture) -> None:
    with start_background(directory=sample, token=TOKEN, fail_rate=0.2, seed=2) as server:
        with client(server.url, token=TOKEN) as upstream:
            assert walk(upstream, ["820000", "110000"]) == walk(sample, ["820000", "110000"])
            assert TOKEN not in repr(upstream)
        with client(server.url, token="wrong-" + TOKEN) as wrong, pytest.raises(PermanentUpstreamError) as denied:
            wrong.provinces()
        assert "401" in str(denied.value) and TOKEN not in str(denied.value)
    refused = client(f"http://127.0.0.1:{free_port()}/v1", token=TOKEN, max_attempts=2)
    with refused, pytest.raises(TransientUpstreamError) as failed:
        refused.provinces()
    assert TOKEN not in str(failed.value) and TOKEN not in repr(failed.value)
    assert caught_logs.records and not any(TOKEN in r.getMessage() for r in caught_logs.records)


def test_request_gate_wraps_every_request(sample: SampleDirectory) -> None:
    entered: list[int] = []
    lock = threading.Lock()

    class Gate:
        def __enter__(self) -> None:
            with lock:
                entered.append(1)

        def __exit__(self, *exc: object) -> None:
            return None

    with (
        start_background(directory=sample, fail_rate=0.2, seed=5) as server,
        client(server.url, request_gate=Gate) as upstream,
    ):
        walk(upstream, ["820000", "440000"])
        assert len(entered) == upstream.requests_made == server.counters.total > needed_requests(sample, [])


def test_server_api_edges(sample: SampleDirectory) -> None:
    with start_background(directory=sample) as server, httpx.Client(base_url=server.url) as http:
        past_end = http.get("/regions/810000/hospitals", params={"page": 999, "page_size": 10}).json()
        assert past_end["items"] == [] and past_end["total"] == sample.hospital_count("810000")
        capped = http.get("/regions/810000/hospitals", params={"page_size": 10_000}).json()
        assert capped["page_size"] == 500
        missing = http.get("/regions/999999/children")
        assert missing.status_code == 404 and "error" in missing.json()
        assert http.get("/regions/810000/hospitals", params={"page": "x"}).status_code == 400
        stats = http.get(server.url.removesuffix("/v1") + "/_stats").json()
        assert stats["total"] == 4 and stats["by_kind"] == {"hospitals": 3, "children": 1}


def test_shape_checks_reject_what_the_contract_does_not_allow() -> None:
    with pytest.raises(shapes.ShapeError):
        shapes.region({"code": "1", "name": "x", "level": "town"})
    with pytest.raises(shapes.ShapeError):
        shapes.region({"code": 110000, "name": "x", "level": "city"})
    good = {field: "x" for field in shapes.HOSPITAL_FIELDS} | {"extra": 1}
    assert shapes.hospital(good) == good
    with pytest.raises(shapes.ItemShapeError, match="'phone' is missing"):
        shapes.hospital({k: v for k, v in good.items() if k != "phone"})
    with pytest.raises(shapes.ItemShapeError, match="'phone' is int"):
        shapes.hospital(good | {"phone": 12345})
    with pytest.raises(shapes.ItemShapeError, match="listed twice"):
        shapes.regions({"items": [{"code": "1", "name": "x", "level": "city"}] * 2})
    with pytest.raises(shapes.ShapeError):
        shapes.items({"items": None})
    with pytest.raises(shapes.ShapeError):
        shapes.total({"total": -1})


def test_retry_after_parsing_and_cap() -> None:
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: no wait
    assert retry_after_seconds("soon") is None
    slept: list[float] = []
    calls = iter([TransientUpstreamError("busy", retry_after=3600), None])

    def attempt() -> str:
        error = next(calls)
        if error:
            raise error
        return "done"

    assert call_with_retries(attempt, what="x", max_attempts=2, backoff=Backoff(), sleep=slept.append) == "done"
    assert slept == [60.0]  # an hour-long Retry-After is capped



def test_the_sample_served_with_opaque_ids(sample: SampleDirectory) -> None:
    with start_background(sample.scale, id_format="opaque") as server, HttpDirectoryClient(server.url) as upstream:
        regions, hospitals = walk(upstream, ["440000"])
    assert (regions, hospitals) == walk(SampleDirectory(sample.scale, id_format="opaque"), ["440000"])
    assert hospitals and all(len(h["id"]) == 32 and not h["id"].startswith("H") for h in hospitals)
