"""A loopback Directory HTTP API that breaks the upstream contract on purpose, region by region.

It serves a SampleDirectory (the truth) with jobs.upstream.serve's handler, in small pages (so a
leaf of a few dozen hospitals spans several), and tells the lies it is given: a `total` lower or
higher than what it serves (a count cache that lags), one that changes between pages, the same page
forever, pages past a depth served empty (a truncating proxy), a listing that gains a record or
changes one every time it is read, an item with a field dropped or of the wrong type, an id listed
twice in a leaf or under a second leaf, a body cut mid-way, an answer later than the client's
timeout, invalid JSON, a wrong shape. Provinces can be
made to disappear (gone from /regions, their regions 404), and the whole server can go away for a
while (connections refused) and come back on the same port.
"""

from __future__ import annotations

import contextlib
import copy
import json
import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobs.upstream.base import Hospital, Region
from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import DirectoryHandler, DirectoryServer, RunningUpstream

# Lies about a leaf's listing (its hospitals pages) or any one response.
LISTING_LIES = (
    "total_low", "total_high", "total_drift", "repeat", "hide_cap", "drop_field", "wrong_type", "dup", "foreign",
    "depth_limit", "growing", "edited",
)
# Lies that leave each listing complete and the same every time: only the count is wrong (a stale count).
STALE_COUNT_LIES = ("total_low", "total_high")
RESPONSE_LIES = ("cut", "slow", "invalid_json", "wrong_shape", "503")
# Not lies: ways a server may have that the contract allows ("range_404": a page past the last is a 404).
MANNERS = ("range_404",)
LIES = LISTING_LIES + RESPONSE_LIES + MANNERS
REPEATED_TOTAL = 1_000_000  # what a server repeating its first page says it holds


@dataclass(frozen=True)
class Lie:
    """One broken rule, for one region.

    `times`: how many listings of the leaf it spoils (a listing starts with each request of page 1),
    or for children and /regions how many requests; None for every one. `page`: only that page.
    `other`: for "foreign", the leaf whose first hospital is listed here too. `code` "" is /regions.
    `by`: how far "total_low" and "total_high" are off; for "depth_limit", the pages served before the
    empty ones. "growing" serves one invented record more on each listing, "edited" changes a field of
    the first record on each one; both with a total one low. "range_404" answers a page past the last
    with 404, as servers that refuse out-of-range pages do (not a lie: a way of saying "nothing there").
    """

    kind: str
    code: str
    times: int | None = None
    page: int | None = None
    other: str = ""
    seconds: float = 3.0  # for "slow"
    by: int = 1

    def __post_init__(self) -> None:
        if self.kind not in LIES:
            raise ValueError(f"unknown lie {self.kind!r}")


class LyingState:
    """What every incarnation of the server shares: the truth, the lies, counters, the switches."""

    def __init__(self, directory: SampleDirectory, lies: tuple[Lie, ...], page_cap: int) -> None:
        self.directory = directory
        self.lies = lies
        self.page_cap = page_cap
        self.gone: set[str] = set()  # province codes the upstream no longer lists
        self.down = threading.Event()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.listings: Counter[str] = Counter()  # page-1 requests per leaf
        self.requests: Counter[str] = Counter()  # requests per region code ("" for /regions)
        self.told: Counter[str] = Counter()  # lies told, by kind
        self.outage_on: dict[str, Callable[[], None]] = {}  # region code -> what takes the server away

    def active(self, code: str, kind: str, page: int | None = None) -> list[Lie]:
        """The lies that apply to this request (counting it); `page` is None for children and /regions."""
        with self.lock:
            self.requests[code] += 1
            if page == 1:
                self.listings[code] += 1
            number = self.listings[code] if page is not None else self.requests[code]
            found = [lie for lie in self.lies if lie.code == code and _applies(lie, kind, number, page)]
            for lie in found:
                self.told[lie.kind] += 1
            return found

    def is_gone(self, code: str) -> bool:
        return bool(code) and f"{code[:2]}0000" in self.gone


def _applies(lie: Lie, kind: str, number: int, page: int | None) -> bool:
    if lie.times is not None and number > lie.times:
        return False
    if lie.page is not None and lie.page != page:
        return False
    # A list of regions can only be spoiled per response, or by a dropped field or a repeated item.
    return kind == "hospitals" or lie.kind in (*RESPONSE_LIES, "drop_field", "dup")


class LyingServer(DirectoryServer):
    def __init__(self, address: tuple[str, int], state: LyingState) -> None:
        super().__init__(address, state.directory)
        self.RequestHandlerClass = LyingHandler
        self.state = state
        self.stopping = state.stopping

    def server_close(self) -> None:
        # A work-horse forked by the test holds a copy of this socket: shutting it down (not only closing
        # our copy) stops the listening everywhere, so connections are refused and the port can be bound again.
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)
        super().server_close()


class LyingHandler(DirectoryHandler):
    server: LyingServer

    def do_GET(self) -> None:
        state = self.server.state
        with state.lock:
            go_away = next((state.outage_on.pop(c) for c in list(state.outage_on) if f"/{c}/" in self.path), None)
        if go_away is not None:
            go_away()
        if state.down.is_set():
            self._hang_up()  # a keep-alive connection of a server that went away: no answer
            return
        super().do_GET()

    def _hang_up(self) -> None:
        """Close the connection for good (forked copies of it included), not only this process' end."""
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def _answer(self, kind: str, code: str, query: dict[str, list[str]]) -> None:
        state = self.server.state
        if kind == "unknown" or state.is_gone(code) or (code and state.directory.find_region(code) is None):
            self._send(404, {"error": f"unknown region {code}"})
            return
        if kind == "hospitals":
            self._hospitals(code, query)
            return
        lies = state.active(code, kind)
        if kind == "regions":
            items = [p for p in state.directory.provinces() if p["code"] not in state.gone]
        else:
            region = state.directory.find_region(code)
            assert region is not None
            items = state.directory.children(region)
        self._reply({"items": _spoil_regions(items, lies)}, lies)

    def _hospitals(self, code: str, query: dict[str, list[str]]) -> None:
        state = self.server.state
        page = int(query.get("page", ["1"])[0])
        size = min(int(query.get("page_size", ["500"])[0]), state.page_cap)
        lies = state.active(code, "hospitals", page)
        items, total = state.directory.hospital_page(code, page, size)
        if not items and page > 1 and any(lie.kind == "range_404" for lie in lies):
            self._send(404, {"error": f"page {page} is out of range"})
            return
        items = copy.deepcopy(items)
        for lie in lies:
            if lie.kind in ("growing", "edited"):
                items, total = _unsteady_page(state, lie, page, size)
            items, total = _lie_about_page(state.directory, lie, items, total, page, size)
        # "hide_cap": serve the server's own page size, but echo the one asked, as if all were served.
        echoed = int(query.get("page_size", ["500"])[0]) if any(lie.kind == "hide_cap" for lie in lies) else size
        self._reply({"items": items, "page": page, "page_size": echoed, "total": total}, lies)

    def _reply(self, body: dict[str, Any], lies: list[Lie]) -> None:
        kinds = {lie.kind for lie in lies}
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        if "slow" in kinds:
            self.server.state.stopping.wait(max(lie.seconds for lie in lies if lie.kind == "slow"))
        if "503" in kinds:
            self._send(503, {"error": "injected failure"})
        elif "invalid_json" in kinds:
            self._send_raw(200, payload[: len(payload) // 2])
        elif "wrong_shape" in kinds:
            self._send(200, {"data": body.get("items"), "count": body.get("total")})
        elif "cut" in kinds:
            self._cut(payload)
        else:
            self._send_raw(200, payload)

    def _cut(self, payload: bytes) -> None:
        """Promise the whole body, send half of it, hang up."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload[: len(payload) // 2])
        self.wfile.flush()
        self._hang_up()


def _spoil_regions(items: list[Region], lies: list[Lie]) -> list[Any]:
    spoiled: list[Any] = [dict(item) for item in items]
    for lie in lies:
        if lie.kind == "drop_field" and spoiled:
            del spoiled[0]["name"]
        elif lie.kind == "dup" and spoiled:
            spoiled.append(dict(spoiled[0]))
    return spoiled


def _lie_about_page(
    directory: SampleDirectory, lie: Lie, items: list[Hospital], total: int, page: int, size: int
) -> tuple[list[Any], int]:
    kind = lie.kind
    if kind == "total_low":
        return items, max(0, total - lie.by)
    if kind == "total_high":
        return items, total + lie.by
    if kind == "depth_limit":
        return (items if page <= lie.by else []), total
    if kind == "total_drift":
        return items, total + (page - 1)  # a directory growing while it is paged
    if kind == "repeat":
        return directory.hospital_page(lie.code, 1, size)[0], REPEATED_TOTAL
    if kind == "drop_field" and items:
        del items[0]["phone"]
    elif kind == "wrong_type" and items:
        items[0]["phone"] = 12345678
    elif kind == "dup" and len(items) >= 2:
        items[-1] = dict(items[0])  # paging drift: one record shown twice, another never
    elif kind == "foreign":  # the other leaf's first hospital, listed on page 1 and counted on every page
        stranger = directory.hospital_page(lie.other, 1, 1)[0]
        return (items + stranger if page == 1 else items), total + len(stranger)
    return items, total


def _unsteady_page(state: LyingState, lie: Lie, page: int, size: int) -> tuple[list[Any], int]:
    """A page of a leaf that differs on every listing (the n-th since the server started): "growing" serves
    n invented records after the true ones, "edited" renames the first one; the total stays one low."""
    with state.lock:
        listing = state.listings[lie.code]
    truth, total = state.directory.hospital_page(lie.code, 1, max(1, state.directory.hospital_count(lie.code)))
    listed = copy.deepcopy(truth)
    if lie.kind == "growing" and listed:
        listed += [{**listed[0], "id": f"{listed[0]['id']}-{n}"} for n in range(1, listing + 1)]
    elif listed:
        listed[0]["name"] = f"{listed[0]['name']} ({listing})"
    return listed[(page - 1) * size : page * size], max(0, total - 1)


class LyingUpstream:
    """A LyingServer on a background thread, on a port it keeps across outages; a context manager."""

    def __init__(
        self, directory: SampleDirectory, lies: tuple[Lie, ...] = (), page_cap: int = 20, host: str = "127.0.0.1"
    ) -> None:
        self.state = LyingState(directory, lies, page_cap)
        self._host = host
        self._running = RunningUpstream(LyingServer((host, 0), self.state))
        self.port = int(self._running.server.server_address[1])
        self.url = self._running.url
        self._outage: threading.Thread | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._live = True  # whether `_running` is serving (not between an outage and its return)

    def truth(self) -> list[Hospital]:
        """Every hospital the upstream lists, as it stands now (gone provinces left out)."""
        return [h for h in self.state.directory.all_hospitals() if not self.state.is_gone(str(h["region_code"]))]

    def outage(self, seconds: float) -> None:
        """Go away now (new connections refused, open ones dropped) and come back after `seconds`."""
        with self._lock:
            if self._closed or not self._live:
                return
            self.state.down.set()
            self._running.stop()
            self._live = False
            self.state.stopping.clear()  # stop() released hanging handlers; the next incarnation may hang again
            self._outage = threading.Thread(target=self._come_back, args=(seconds,), daemon=True)
            self._outage.start()

    def _come_back(self, seconds: float) -> None:
        self._wake.wait(seconds)
        with self._lock:
            if not self._closed:
                self._running = RunningUpstream(LyingServer((self._host, self.port), self.state))
                self._live = True
                self.state.down.clear()

    def outage_when_asked(self, code: str, seconds: float) -> None:
        """Go away for `seconds` the first time a request names region `code` (that one gets no answer)."""

        def go_away() -> None:
            self.state.down.set()
            threading.Thread(target=self.outage, args=(seconds,), daemon=True).start()

        self.state.outage_on[code] = go_away

    @property
    def is_up(self) -> bool:
        return not self.state.down.is_set()

    def stop(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.set()
            if self._live:
                self._running.stop()
                self._live = False
            self.state.stopping.set()
        if self._outage is not None:
            self._outage.join()

    def __enter__(self) -> LyingUpstream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
