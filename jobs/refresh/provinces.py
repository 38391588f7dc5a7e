"""Resolving what a user typed (广东省, 广东, 440000) to a province of the configured upstream."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import socket
from typing import Any

import redis

from jobs import keys, limits
from jobs.config import Settings
from jobs.errors import UpstreamError, UpstreamUnavailableError, ValidationError
from jobs.upstream import open_upstream
from jobs.upstream.base import Region
from jobs.upstream.identity import label

# Province lists change rarely; a short cache keeps `refresh province` from asking every time.
CACHE_SECONDS = 300
_SUFFIXES = ("省", "市", "自治区", "特别行政区", "壮族自治区", "回族自治区", "维吾尔自治区")


def upstream_provinces(conn: redis.Redis, settings: Settings, spec: dict[str, Any]) -> list[Region]:
    """The provinces the upstream of `spec` lists (cached CACHE_SECONDS); UpstreamUnavailableError when it
    cannot be asked (unreachable, refusing the credentials, answering garbage)."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    cached = conn.get(keys.upstream_provinces(digest))
    if cached is not None:
        regions: list[Region] = json.loads(cached)
        return regions
    # Behind the gate like every job's requests: the global limits count every request refreshq makes.
    holder = limits.holder_id("province-list", socket.gethostname(), os.getpid())
    try:
        with open_upstream(conn, spec, settings, holder) as upstream:
            regions = upstream.provinces()
    except UpstreamError as exc:
        raise UpstreamUnavailableError(f"the upstream {label(spec)} did not list its provinces: {exc}") from exc
    conn.set(keys.upstream_provinces(digest), json.dumps(regions, ensure_ascii=False), ex=CACHE_SECONDS)
    return regions


def resolve_province(conn: redis.Redis, settings: Settings, spec: dict[str, Any], text: str) -> Region:
    """The province named or coded by `text`; ValidationError with the closest names otherwise."""
    query = text.strip()
    if not query:
        raise ValidationError("a province name or code is required")
    provinces = upstream_provinces(conn, settings, spec)
    return match_province(provinces, query)


def match_province(provinces: list[Region], query: str) -> Region:
    for region in provinces:
        if query in (region["code"], region["name"]):
            return region
    short = [r for r in provinces if _short(r["name"]) == _short(query)]
    if len(short) == 1:
        return short[0]
    names = [r["name"] for r in provinces]
    close = difflib.get_close_matches(query, names, n=3, cutoff=0.3)
    close += [n for n in names if query and query[0] == n[0] and n not in close][: 3 - len(close)]
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise ValidationError(f"unknown province {query!r}{hint}")


def _short(name: str) -> str:
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name
