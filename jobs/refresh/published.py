"""Published hospital data: versioned per province, switched atomically, read and exported.

A refresh stages a province under keys named by its own task id (its *version*); publishing
points `keys.PUBLISHED[province]` at that version in one transaction. Readers resolve the
pointer once, so they see the old or the new version of a province, never a mix. The old
version is kept for a grace period (a reader may still be streaming it), then expires.
"""

from __future__ import annotations

import csv
import json
import operator
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO, cast

import redis

from jobs import jsonfast, keys
from jobs.redis_values import as_text, as_text_map, as_texts
from jobs.refresh.fence import Fence, unfenced
from jobs.refresh.records import now_iso
from jobs.scripts import Scripts
from jobs.upstream.base import Hospital, TotalMismatch

# How long a replaced version stays readable for exports that started before the switch.
OLD_VERSION_GRACE_SECONDS = 600
_ID = operator.itemgetter("id")
CSV_FIELDS = ("id", "name", "region_code", "grade", "type", "address", "phone", "updated_at")


@dataclass(frozen=True)
class Leaf:
    """A leaf region of a published province, with the names of its ancestors."""

    code: str
    name: str
    level: str
    city: str
    province: str

    def to_json(self) -> str:
        # Per leaf staged: json.dumps with options builds an encoder per call (jobs.jsonfast).
        return jsonfast.dumps_record(self.__dict__).decode()

    @classmethod
    def from_json(cls, text: bytes | str) -> Leaf:
        return cls(**json.loads(text))


def encode_hospital(hospital: Hospital) -> bytes:
    """Compact JSON (UTF-8) of a record exactly as received, every upstream field kept: byte for byte
    `json.dumps(hospital, ensure_ascii=False, separators=(",", ":"))` (jobs.jsonfast)."""
    return jsonfast.dumps_record(hospital)


def pack_leaf(hospitals: list[Hospital]) -> tuple[list[str], bytes]:
    """A leaf's distinct ids in order and its records as stored: compact JSON lines in the same order.

    One record per id within the leaf (the clients promise it; this keeps the counters honest anyway:
    the last one listed wins). Ordered by id as UTF-8 bytes (Python's str order), the order exports
    have always had; upstreams tend to list in that order already, which costs one pass to see."""
    ids = list(map(str, map(_ID, hospitals)))
    if not all(map(operator.lt, ids, ids[1:])):
        by_id = dict(zip(ids, hospitals, strict=True))
        ids = sorted(by_id)
        ordered = list(map(by_id.__getitem__, ids))
        # The same records in another order: plain if they were (jsonfast.PlainRecords).
        hospitals = jsonfast.PlainRecords(ordered) if type(hospitals) is jsonfast.PlainRecords else ordered
    return ids, jsonfast.dumps_lines(hospitals)


def _ids_args(ids: list[str], records: bytes) -> tuple[str | bytes | int, ...]:
    """How stage_leaf.lua takes a leaf's records and ids: the ids in one value unless one holds a newline."""
    joined = "\n".join(ids)
    if joined.count("\n") == max(0, len(ids) - 1) and "" not in ids:
        return len(ids), records, joined
    return -len(ids), records, *ids


def leaf_records(conn: redis.Redis, province: str, version: str, code: str) -> list[bytes]:
    """The records of one leaf of a version, in id order (a leaf staged before 2026-12 is a hash)."""
    key = keys.data_leaf(province, version, code)
    try:
        stored = cast(bytes | None, conn.get(key))
    except redis.ResponseError as exc:
        if not str(exc).startswith("WRONGTYPE"):
            raise
        legacy = cast(dict[bytes, bytes], conn.hgetall(key))
        return [record for _id, record in sorted(legacy.items())]
    return stored.split(b"\n") if stored else []


def leaf_sizes(conn: redis.Redis, province: str, version: str, codes: list[str]) -> list[int]:
    """How many records each of these leaves of a version holds."""
    if not codes:
        return []
    sizes = conn.hmget(keys.data_sizes(province, version), codes)
    legacy = [code for code, size in zip(codes, sizes, strict=True) if size is None]
    with conn.pipeline(transaction=False) as pipe:
        for code in legacy:
            pipe.hlen(keys.data_leaf(province, version, code))  # a hash leaf keeps no size entry
        counted = dict(zip(legacy, pipe.execute(), strict=True))
    return [int(size) if size is not None else int(counted[code]) for code, size in zip(codes, sizes, strict=True)]


# How many examples a task keeps of ids listed under two leaves, and of leaves taken with a stale `total`
# (the counts are exact); one limit for both, passed to stage_leaf.lua once.
CONFLICT_EXAMPLES = MISMATCH_EXAMPLES = 20


@dataclass(frozen=True)
class Staged:
    """What staging a leaf did: records kept, records dropped because another leaf had their id."""

    kept: int
    conflicts: int


def stage_leaf(
    scripts: Scripts, province: str, version: str, leaf: Leaf, hospitals: list[Hospital], fence: Fence | None = None
) -> Staged | None:
    """`stage_leaves` of one leaf."""
    return stage_leaves(scripts, province, version, [(leaf, hospitals)], fence)[0]


def stage_leaves(
    scripts: Scripts, province: str, version: str, batch: list[tuple[Leaf, list[Hospital]]], fence: Fence | None = None,
    mismatches: dict[str, TotalMismatch] | None = None,
) -> list[Staged | None]:
    """Stage leaves of `province` for the task `version` in one atomic step, each with its records (those
    whose id no other leaf of the task staged), its checkpoint entry and its counters. None for a leaf
    staged already: a re-run after a crash, a retry or a resume writes and counts nothing twice. Only while
    `fence` (the job execution's claim on the province) holds: StaleExecutionError, nothing written, if not.
    `mismatches`: leaf code -> the stale `total` its listing was taken with, counted with the leaf (once)."""
    fence = fence or unfenced(version)
    mismatches = mismatches or {}
    args: list[str | bytes | int] = [
        keys.province_stat(province, keys.PROVINCE_LEAVES_DONE), keys.province_stat(province, keys.PROVINCE_HOSPITALS),
        CONFLICT_EXAMPLES, *fence.args(),
    ]
    data_keys = []
    for leaf, hospitals in batch:
        ids, records = pack_leaf(hospitals)
        said = mismatches.get(leaf.code)
        args += (leaf.code, leaf.to_json(), 1 if leaf.level == "district" else 0,
                 f"{said.total},{said.listed}" if said else "", *_ids_args(ids, records))
        data_keys.append(keys.data_leaf(province, version, leaf.code))
    outcome = scripts.stage_leaf(
        keys=[
            keys.checkpoint_leaves(version, province), keys.task_stats(version), keys.task_ids(version),
            keys.task_conflicts(version), keys.data_leaves(province, version), keys.data_sizes(province, version),
            keys.task_home_ids(version), fence.owners, keys.task_total_mismatches(version), keys.task_seen_ids(version),
            keys.METRIC_COUNTERS, *data_keys,
        ],
        args=args,
    )
    fence.checked(outcome, "stage")
    pairs = [(int(outcome[i]), int(outcome[i + 1])) for i in range(0, len(outcome), 2)]
    return [None if kept < 0 else Staged(kept=kept, conflicts=conflicts) for kept, conflicts in pairs]


def publish(conn: redis.Redis, province: str, version: str, name: str, fence: Fence | None = None) -> Publication:
    """Make `version` the published data of `province` while `fence` holds and its task runs (see
    jobs/scripts/publish.lua): "published" with its record count, "superseded" when a version of a
    task created later is published already (this one's staging is dropped), or "ended" when the task was
    cancelled or ended meanwhile. StaleExecutionError when the execution no longer owns the province."""
    fence = fence or unfenced(version)
    leaf_codes = as_texts(conn.hkeys(keys.data_leaves(province, version)))
    records = sum(leaf_sizes(conn, province, version, leaf_codes))
    meta = json.dumps(
        {"name": name, "records": records, "leaves": len(leaf_codes), "version": version, "published_at": now_iso()},
        ensure_ascii=False,
    )
    order = version_order(conn, version)
    scripts = Scripts(conn)
    while True:
        seen = as_text(conn.hget(keys.PUBLISHED, province) or b"")
        old = seen if seen and seen != version else version  # no other version: its keys are never touched
        old_codes = as_texts(conn.hkeys(keys.data_leaves(province, old))) if old != version else []
        reply = scripts.publish(
            keys=[
                fence.owners, keys.task(version), keys.task_cancel(version), keys.PUBLISHED, keys.PUBLISHED_META,
                keys.PUBLISHED_ORDER, keys.data_leaves(province, version), keys.data_sizes(province, version),
                keys.data_leaves(province, old), keys.data_sizes(province, old), keys.METRIC_COUNTERS,
                *(keys.data_leaf(province, version, code) for code in leaf_codes),
                *(keys.data_leaf(province, old, code) for code in old_codes),
            ],
            args=[*fence.args(), province, version, seen, len(leaf_codes), meta, OLD_VERSION_GRACE_SECONDS, order],
        )
        if fence.checked(reply, "publish") != b"MOVED":
            break
    if reply == b"SUPERSEDED":
        delete_staged(conn, province, version)
        return Publication("superseded", 0)
    return Publication("published", records) if reply == b"OK" else Publication("ended", 0)


@dataclass(frozen=True)
class Publication:
    """What publishing a province did: "published" (with its records), "superseded" or "ended"."""

    outcome: str
    records: int


def version_order(conn: redis.Redis | redis.client.Pipeline, version: str) -> str:
    """A version's place in the order of publication, "<created_ts> <task id>": its task's creation."""
    created = conn.hget(keys.task(version), "created_ts")
    return f"{as_text(created) if created else 0} {version}"


def _before(order: str | None, other: str) -> bool:
    """True when `order` (None: a version published before orders were kept) comes before `other`."""
    if order is None:
        return True
    (ts, _, version), (other_ts, _, other_version) = order.partition(" "), other.partition(" ")
    return (float(ts), version) < (float(other_ts), other_version)


def unlisted_versions(
    pipe: redis.client.Pipeline, listed: set[str], order: str
) -> dict[str, tuple[str, list[str]]]:
    """Published provinces outside `listed` whose version comes before `order` (a later task's version stays):
    code -> (version, leaf codes). Read in WATCH mode, before `unpublish` queues their removal in the same
    transaction."""
    published = {as_text(k): as_text(v) for k, v in pipe.hgetall(keys.PUBLISHED).items()}
    orders = {as_text(k): as_text(v) for k, v in pipe.hgetall(keys.PUBLISHED_ORDER).items()}
    return {
        code: (version, as_texts(pipe.hkeys(keys.data_leaves(code, version))))
        for code, version in sorted(published.items()) if code not in listed and _before(orders.get(code), order)
    }


def unpublish(pipe: redis.client.Pipeline, gone: dict[str, tuple[str, list[str]]]) -> None:
    """Queue the removal of provinces from the published data (inside the caller's MULTI); their data
    stays readable for the grace period, like a replaced version, for exports that already started."""
    if not gone:
        return
    pipe.hdel(keys.PUBLISHED, *gone)
    pipe.hdel(keys.PUBLISHED_META, *gone)
    pipe.hdel(keys.PUBLISHED_ORDER, *gone)
    for code, (version, leaf_codes) in gone.items():
        _expire_version(pipe, code, version, leaf_codes)


def _expire_version(pipe: redis.client.Pipeline, province: str, version: str, leaf_codes: list[str]) -> None:
    for code in leaf_codes:
        pipe.expire(keys.data_leaf(province, version, code), OLD_VERSION_GRACE_SECONDS)
    pipe.expire(keys.data_leaves(province, version), OLD_VERSION_GRACE_SECONDS)
    pipe.expire(keys.data_sizes(province, version), OLD_VERSION_GRACE_SECONDS)


def delete_staged(conn: redis.Redis, province: str, version: str) -> None:
    """Drop a version that was never published (a failed or cleaned-up task's staging)."""
    published = conn.hget(keys.PUBLISHED, province)
    if published is not None and as_text(published) == version:
        return
    if conn.ttl(keys.data_leaves(province, version)) > 0:
        return  # a replaced version in its grace period: readers may still stream it; it expires by itself
    codes = as_texts(conn.hkeys(keys.data_leaves(province, version)))
    with conn.pipeline(transaction=False) as pipe:
        for code in codes:
            pipe.unlink(keys.data_leaf(province, version, code))
        pipe.unlink(keys.data_leaves(province, version))
        pipe.unlink(keys.data_sizes(province, version))
        pipe.execute()


def published_provinces(conn: redis.Redis) -> dict[str, dict[str, Any]]:
    """Province code -> {name, records, leaves, version, published_at}, sorted by code."""
    meta = conn.hgetall(keys.PUBLISHED_META)
    return {as_text(k): json.loads(v) for k, v in sorted(meta.items())}


def verified_provinces(conn: redis.Redis) -> dict[str, dict[str, Any]]:
    """`published_provinces` as the data really is: each province's records and leaves counted from the keys
    of the version its pointer names, leaves whose data is gone (a lost write, an expiry) left out and counted
    under `missing_leaves`. Costs one EXISTS a leaf: for stats, not for every read."""
    pointers = {as_text(k): as_text(v) for k, v in conn.hgetall(keys.PUBLISHED).items()}
    meta = published_provinces(conn)
    with conn.pipeline(transaction=False) as pipe:
        for code, version in pointers.items():
            pipe.hgetall(keys.data_sizes(code, version))
            pipe.hkeys(keys.data_leaves(code, version))
        replies = pipe.execute()
    listed = dict(sorted(
        (code, (as_text_map(replies[2 * i]), as_texts(replies[2 * i + 1]))) for i, code in enumerate(pointers)
    ))
    with conn.pipeline(transaction=False) as pipe:
        for code, (_sizes, leaves) in listed.items():
            for leaf in leaves:
                pipe.exists(keys.data_leaf(code, pointers[code], leaf))
        present = iter(pipe.execute())
    out: dict[str, dict[str, Any]] = {}
    for code, (sizes, leaves) in listed.items():  # in the order the EXISTS were sent
        kept = [leaf for leaf in leaves if next(present)]
        found = dict(zip(kept, leaf_sizes(conn, code, pointers[code], kept), strict=True))
        # A leaf staged with no record has no data key: it is there, with 0 records, when its size says 0.
        empty = [leaf for leaf in leaves if leaf not in found and sizes.get(leaf) == "0"]
        out[code] = {
            **meta.get(code, {"name": code, "published_at": None}), "version": pointers[code],
            "records": sum(found.values()), "leaves": len(found) + len(empty),
            "missing_leaves": len(leaves) - len(found) - len(empty),
        }
    return out


def leaves_of(conn: redis.Redis, province: str) -> tuple[str | None, list[Leaf]]:
    """The published version of a province and its leaves (sorted by code)."""
    version = conn.hget(keys.PUBLISHED, province)
    if version is None:
        return None, []
    raw = conn.hgetall(keys.data_leaves(province, as_text(version)))
    return as_text(version), sorted((Leaf.from_json(v) for v in raw.values()), key=lambda leaf: leaf.code)


def iter_hospitals(conn: redis.Redis, province: str, leaves: list[Leaf] | None = None) -> Iterator[tuple[Leaf, str]]:
    """(leaf, record JSON) of the published version, one leaf in memory at a time."""
    version, all_leaves = leaves_of(conn, province)
    if version is None:
        return
    for leaf in leaves if leaves is not None else all_leaves:
        for record in leaf_records(conn, province, version, leaf.code):
            yield leaf, as_text(record)


def export(conn: redis.Redis, out: TextIO, fmt: str, provinces: list[str] | None = None) -> int:
    """Write published records as JSON lines or CSV; return how many were written."""
    codes = provinces if provinces is not None else list(published_provinces(conn))
    writer = csv_writer(out) if fmt == "csv" else None
    count = 0
    for code in codes:
        for _leaf, record in iter_hospitals(conn, code):
            if writer is None:
                out.write(record + "\n")
            else:
                writer(json.loads(record))
            count += 1
    return count


def csv_writer(out: TextIO) -> Any:
    """CSV rows: the contract's fields as columns, any other upstream field kept in `extra` (JSON)."""
    writer = csv.writer(out)
    writer.writerow([*CSV_FIELDS, "extra"])

    def write(record: dict[str, Any]) -> None:
        extra = {k: v for k, v in record.items() if k not in CSV_FIELDS}
        row = [_cell(record.get(f)) for f in CSV_FIELDS]
        writer.writerow([*row, json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else ""])

    return write


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

