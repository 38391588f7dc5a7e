"""The one interface every upstream implements; the refresh code talks only to this."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

LEVELS = ("province", "city", "district")


class Region(TypedDict):
    """A node of the directory tree, exactly as the upstream contract shapes it."""

    code: str
    name: str
    level: str


class Answered(Protocol):
    """A request let through a paced gate (jobs.pacing.Admission): told how the upstream answered it."""

    def answered(self, status: int, retry_after: float | None, elapsed: float | None = None) -> None: ...


# Entered around every upstream request: where global limits plug in (see jobs.limits); what it gives is
# told the request's answer (None: a gate that does not pace).
RequestGate = Callable[[], contextlib.AbstractContextManager[Answered | None]]

# Told the outcome of every request attempt ("ok", "timeout", "transport", "http_429", "http_5xx",
# "http_4xx", "invalid"): where the upstream counters plug in (see jobs.observe.counters.UpstreamTally).
RequestCounter = Callable[[str], None]


def no_count(_outcome: str) -> None:
    """The RequestCounter of a client nobody counts for."""


# A hospital is kept as the upstream sent it (every field), so it stays a plain dict.
Hospital = dict[str, Any]


@dataclass(frozen=True)
class TotalMismatch:
    """A leaf whose listing ended properly, the same twice, with another number of ids than the `total` its
    pages stated: a stale count, taken and reported (jobs.upstream.listing)."""

    total: int  # what the pages said
    listed: int  # the distinct ids they served


def total_mismatch(upstream: object, region: Region) -> TotalMismatch | None:
    """The stale `total` the last listing of `region` was taken with, told once, by an upstream whose listings
    carry one (the HTTP API's `take_total_mismatch`); None for one that has none (the sample, an LLM). Looked
    up by name, once a leaf: isinstance against a runtime-checkable protocol showed in the workers' profile."""
    take: Callable[[Region], TotalMismatch | None] | None = getattr(upstream, "take_total_mismatch", None)
    return take(region) if take is not None else None


class Upstream(Protocol):
    """A source of the directory: provinces, children of a region, hospitals of a leaf.

    Implementations are thread-safe: one instance is shared by the threads of a refresh job.
    Transient failures are retried inside the client; what escapes is
    `TransientUpstreamError` (retries exhausted) or `PermanentUpstreamError` (404, invalid for good;
    `RegionFailedError` when the upstream kept contradicting itself about that region).
    A client returns only what it verified: never a partial list presented as a whole one.
    """

    def provinces(self) -> list[Region]:
        """The top level of the tree."""
        ...

    def children(self, region: Region) -> list[Region]:
        """Cities of a province, districts of a city; an empty list means `region` is a leaf."""
        ...

    def hospitals(self, region: Region) -> list[Hospital]:
        """Every hospital of a leaf region, each id once: the whole list, checked, or an error."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
