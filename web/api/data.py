"""/api/v1/data: the published hospitals (stats, one province's records a page at a time, a streamed export)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import redis
from flask import Response, request, stream_with_context
from werkzeug.wrappers import Response as BaseResponse

from jobs.errors import TaskNotFoundError, ValidationError
from jobs.refresh import published
from jobs.refresh.provinces import match_province
from web.api.blueprint import api
from web.api.bounds import takes
from web.api.context import as_json, conn
from web.api.pagination import choice, envelope, page_args, slice_of
from web.auth import requires

EXPORT_FLUSH = 500  # records per chunk written to the client


def _province_code(db: redis.Redis, text: str) -> str:
    provinces = published.published_provinces(db)
    regions = [{"code": code, "name": meta["name"], "level": "province"} for code, meta in provinces.items()]
    try:
        return str(match_province(regions, text)["code"])  # type: ignore[arg-type]
    except ValidationError as exc:
        raise TaskNotFoundError(f"{exc} (among published provinces)") from None


@api.get("/data/stats")
@requires("read")
@takes("page", "page_size")
def stats() -> BaseResponse:
    page, page_size = page_args(default_size=100)
    rows = [{"code": code, **meta} for code, meta in published.verified_provinces(conn()).items()]
    result = slice_of(rows, page, page_size)
    result["records"] = sum(r["records"] for r in rows)
    return as_json(result)


def _leaves(db: redis.Redis, code: str, city: str | None, district: str | None) -> tuple[str, list[published.Leaf]]:
    version, leaves = published.leaves_of(db, code)
    chosen = [
        leaf for leaf in leaves
        if (city is None or leaf.city == city or (leaf.level == "city" and leaf.name == city))
        and (district is None or (leaf.level == "district" and leaf.name == district))
    ]
    if version is None or not chosen:
        where = " ".join(x for x in (city, district) if x)
        raise TaskNotFoundError(f"no region {where!r} in the published data of {code}")
    return version, chosen


@api.get("/data/provinces/<province>")
@requires("read")
@takes("city", "district", "page", "page_size")
def hospitals(province: str) -> BaseResponse:
    """One page of a province's (or one city's, one district's) hospitals, in leaf and id order."""
    page, page_size = page_args()
    db = conn()
    code = _province_code(db, province)
    version, leaves = _leaves(db, code, request.args.get("city") or None, request.args.get("district") or None)
    sizes = published.leaf_sizes(db, code, version, [leaf.code for leaf in leaves])
    start, items = (page - 1) * page_size, list[dict[str, Any]]()
    skipped = 0
    for leaf, size in zip(leaves, sizes, strict=True):
        if skipped + size <= start or len(items) >= page_size:
            skipped += size
            continue
        records = published.leaf_records(db, code, version, leaf.code)
        first = max(0, start - skipped)
        for record in records[first : first + page_size - len(items)]:
            items.append({**json.loads(record), "city": leaf.city, "region": leaf.name})
        skipped += size
    return as_json(envelope(items, sum(sizes), page, page_size))


@api.get("/data/export")
@requires("read")
@takes("format", "province")
def export() -> BaseResponse:
    fmt = choice("format", ("jsonl", "csv"))
    if fmt is None:
        raise ValidationError("format is required: jsonl or csv")
    db = conn()
    province = request.args.get("province")
    codes = [_province_code(db, province)] if province else list(published.published_provinces(db))
    mimetype = "application/x-ndjson" if fmt == "jsonl" else "text/csv"
    headers = {"Content-Disposition": f'attachment; filename="hospitals.{fmt}"'}
    return Response(stream_with_context(_chunks(db, codes, fmt)), mimetype=mimetype, headers=headers)


def _chunks(db: redis.Redis, codes: list[str], fmt: str) -> Iterator[str]:
    """The export a chunk at a time: one leaf's records in memory at most, whatever the total."""
    buffer = io.StringIO()
    write: Any = published.csv_writer(buffer) if fmt == "csv" else None
    count = 0
    for code in codes:
        for _leaf, record in published.iter_hospitals(db, code):
            if write is None:
                buffer.write(record + "\n")
            else:
                write(json.loads(record))
            count += 1
            if count % EXPORT_FLUSH == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()
