"""Staging a leaf: one atomic script with its checkpoint entry, counters and the task's id index.

Against the real server: a re-run writes and counts nothing, an id staged by another leaf (of this
province or another) is kept once and reported, records are stored byte for byte as encoded, and a
leaf costs 13 Redis commands whatever its size (about 8 a leaf when several share a call), one more when
its ids are not at home in it.
"""

from __future__ import annotations

import io
import json
import queue
import threading
from typing import Any

import pytest
import redis

from jobs import keys
from jobs.redis_values import as_text_map
from jobs.refresh import leaves
from jobs.refresh import published as store
from jobs.refresh.published import Leaf
from jobs.refresh.records import status_dict
from jobs.scripts import STAGE_LEAF, Scripts
from tests.support.helpers import wait_until

TASK = "task_20261122_000000_abcdef"


def hospital(number: int, leaf: str, **extra: Any) -> dict[str, Any]:
    return {"id": f"H{number:06d}", "name": f"第{number}人民医院", "region_code": leaf, "grade": "三级甲等",
            "type": "综合医院", "address": "广州市越秀区“解放路”1号", "phone": "020-1",
            "updated_at": "2026-11-01T08:00:00Z", **extra}


def leaf(code: str, level: str = "district") -> Leaf:
    return Leaf(code, f"区{code}", level, "广州市", "广东省")


def stage(conn: redis.Redis, province: str, where: Leaf, hospitals: list[dict[str, Any]]) -> store.Staged | None:
    return store.stage_leaf(Scripts(conn), province, TASK, where, hospitals)


def stored(conn: redis.Redis, province: str, code: str) -> dict[bytes, bytes]:
    """A staged leaf's records by id, as its readers get them (in id order)."""
    records = store.leaf_records(conn, province, TASK, code)
    ids = [str(json.loads(record)["id"]).encode() for record in records]
    assert ids == sorted(ids)
    return dict(zip(ids, records, strict=True))


def stats(conn: redis.Redis) -> dict[str, int]:
    """The task's counters (not the staging script's own flags, ids_at_home and ids_careful)."""
    return {k: int(v) for k, v in as_text_map(conn.hgetall(keys.task_stats(TASK))).items() if not k.startswith("ids_")}


def seen(conn: redis.Redis) -> set[str]:
    return {member.decode() for member in conn.smembers(keys.task_seen_ids(TASK))}


def test_a_leaf_is_staged_once_byte_for_byte(conn: redis.Redis) -> None:
    records = [hospital(1, "440104", extra_field={"b": 1, "a": [2]}), hospital(2, "440104")]
    assert stage(conn, "440000", leaf("440104"), records) == store.Staged(kept=2, conflicts=0)
    kept = stored(conn, "440000", "440104")
    # Compact JSON, every upstream field in its order, unicode unescaped: what an export streams out.
    assert kept == {b"H000001": json.dumps(records[0], ensure_ascii=False, separators=(",", ":")).encode(),
                    b"H000002": json.dumps(records[1], ensure_ascii=False, separators=(",", ":")).encode()}
    assert conn.get(keys.data_leaf("440000", TASK, "440104")) == kept[b"H000001"] + b"\n" + kept[b"H000002"]
    assert "“解放路”" in kept[b"H000001"].decode()
    counted = stats(conn)
    assert counted == {"leaves_done": 1, "p:440000:leaves_done": 1, "districts_processed": 1,
                       "hospitals_found": 2, "p:440000:hospitals": 2}
    assert conn.smembers(keys.checkpoint_leaves(TASK, "440000")) == {b"440104"}
    assert json.loads(conn.hget(keys.data_leaves("440000", TASK), "440104") or b"") == leaf("440104").__dict__

    # A re-run (a crash after staging, a retry, a resume): nothing written, nothing counted.
    changed = [hospital(1, "440104", name="改过的名字"), hospital(3, "440104")]
    assert stage(conn, "440000", leaf("440104"), changed) is None
    assert stored(conn, "440000", "440104") == kept
    assert stats(conn) == counted


def test_an_id_staged_by_another_leaf_is_kept_once_and_reported(conn: redis.Redis) -> None:
    assert stage(conn, "440000", leaf("440104"), [hospital(n, "440104") for n in (1, 2, 3)]) == store.Staged(3, 0)
    assert stats(conn)["hospitals_found"] == 3 and "ids_careful" not in as_text_map(conn.hgetall(keys.task_stats(TASK)))
    # Same province, and another province: ids 3 and 2 were listed under 440104 already.
    assert stage(conn, "440000", leaf("440105"), [hospital(n, "440105") for n in (3, 4)]) == store.Staged(1, 1)
    assert stage(conn, "110000", leaf("110101"), [hospital(n, "110101") for n in (2, 5)]) == store.Staged(1, 1)
    assert set(stored(conn, "440000", "440105")) == {b"H000004"}
    assert set(stored(conn, "110000", "110101")) == {b"H000005"}
    assert json.loads(stored(conn, "440000", "440104")[b"H000003"])["region_code"] == "440104"
    counted = stats(conn)
    assert counted["hospitals_found"] == 5 and counted["conflicts"] == 2
    assert counted["p:440000:hospitals"] == 4 and counted["p:110000:hospitals"] == 1
    assert as_text_map(conn.hgetall(keys.task_conflicts(TASK))) == {"H000003": "440104,440105",
                                                                    "H000002": "440104,110101"}
    # Ids not at home in their leaf: in the task's seen set, and each leaf's kept ids in its string.
    assert seen(conn) == {"H000001", "H000002", "H000003", "H000004", "H000005"}
    assert home_ids(conn) == {"440104": ["H000001", "H000002", "H000003"], "440105": ["H000004"],
                              "110101": ["H000005"]}
    assert conn.exists(keys.task_ids(TASK)) == 0  # the id -> leaf index of earlier versions is not written


def test_the_status_dict_reports_conflicts_with_a_bounded_sample(conn: redis.Redis) -> None:
    conn.hset(keys.task(TASK), mapping={"task_id": TASK, "status": "RUNNING"})
    assert status_dict(conn, TASK)["conflicts"] == {"count": 0, "examples": []}
    many = store.CONFLICT_EXAMPLES + 10
    stage(conn, "440000", leaf("440104"), [hospital(n, "440104") for n in range(many)])
    assert stage(conn, "440000", leaf("440105"), [hospital(n, "440105") for n in range(many)]) == store.Staged(0, many)
    conflicts = status_dict(conn, TASK)["conflicts"]
    assert conflicts["count"] == many
    assert len(conflicts["examples"]) == store.CONFLICT_EXAMPLES
    assert all(e["leaves"] == ["440104", "440105"] for e in conflicts["examples"])
    assert stats(conn)["hospitals_found"] == many
    assert conn.exists(keys.data_leaf("440000", TASK, "440105")) == 0  # nothing of it was kept


def test_a_big_leaf_is_staged_whole_in_thirteen_commands(conn: redis.Redis) -> None:
    """Bulk reads and writes in chunks inside the script: commands per leaf do not grow with its size
    (INFO commandstats counts the commands a script runs)."""
    small = [hospital(n, "440104") for n in range(300)]
    big = [hospital(n, "440105") for n in range(10_000, 14_500)]  # more than one chunk of the script
    conn.script_load(STAGE_LEAF)  # as in a worker that staged before: no NOSCRIPT round trip counted
    calls = []
    for where, records in ((leaf("440104"), small), (leaf("440105", "city"), big)):
        conn.config_resetstat()
        stage(conn, "440000", where, records)
        commandstats = conn.info("commandstats")
        others = ("cmdstat_config", "cmdstat_info")
        calls.append(sum(v["calls"] for k, v in commandstats.items() if k.split("|")[0] not in others))
    # A leaf's records are one SET, not 300 fields. Ids not at home in their leaf (these are not: H000001) are
    # added to the seen set, one SADD a chunk: the first such leaf of a task also settles a flag (two more).
    assert calls[0] <= 17, calls
    assert calls[1] <= 14 + 3, calls  # one SADD per chunk of 2,000 records
    conn.delete(keys.task_seen_ids(TASK))
    conn.config_resetstat()
    stage(conn, "440000", leaf("440106"), [at_home(n, "440106") for n in range(4500)])
    at_home_calls = sum(v["calls"] for k, v in conn.info("commandstats").items() if k.split("|")[0] not in others)
    # All at home, and no id of the task seen: nothing to look up, the ids stored as they came.
    assert at_home_calls <= 13, at_home_calls
    assert len(home_ids(conn)["440106"]) == 4500
    assert len(stored(conn, "440000", "440105")) == len(big)
    assert store.leaf_sizes(conn, "440000", TASK, ["440104", "440105"]) == [len(small), len(big)]
    assert stats(conn)["hospitals_found"] == len(small) + len(big) + 4500


def test_several_leaves_share_a_call_each_in_once(conn: redis.Redis) -> None:
    """A batch: a leaf staged before is skipped whole, an id listed by an earlier leaf of the same call is
    kept once, and the counters and commands are paid once per call, not per leaf."""
    assert stage(conn, "440000", leaf("440103"), [hospital(1, "440103")]) == store.Staged(1, 0)
    conn.script_load(STAGE_LEAF)
    conn.config_resetstat()
    batch = [
        (leaf("440103"), [hospital(1, "440103", name="改过的名字"), hospital(9, "440103")]),  # staged already
        (leaf("440104"), [hospital(n, "440104") for n in (2, 3)]),
        (leaf("440105", "city"), [hospital(n, "440105") for n in (3, 4, 1)]),  # 3 from 440104, 1 from 440103
        (leaf("440106"), []),
    ]
    assert store.stage_leaves(Scripts(conn), "440000", TASK, batch) == [
        None, store.Staged(2, 0), store.Staged(1, 2), store.Staged(0, 0),
    ]
    calls = sum(v["calls"] for k, v in conn.info("commandstats").items() if k.split("|")[0] != "cmdstat_info")
    # Per leaf SADD, HMGET index, HMGET home ids (these ids are not at home), HSET index, SET data: no
    # counters per leaf.
    assert calls <= 12 + 4 * 4, calls
    assert stored(conn, "440000", "440103") == {
        b"H000001": json.dumps(hospital(1, "440103"), ensure_ascii=False, separators=(",", ":")).encode()}
    assert set(stored(conn, "440000", "440105")) == {b"H000004"}
    assert store.leaf_sizes(conn, "440000", TASK, ["440103", "440104", "440105", "440106"]) == [1, 2, 1, 0]
    assert conn.exists(keys.data_leaf("440000", TASK, "440106")) == 0
    assert conn.smembers(keys.checkpoint_leaves(TASK, "440000")) == {b"440103", b"440104", b"440105", b"440106"}
    assert stats(conn) == {"leaves_done": 4, "p:440000:leaves_done": 4, "districts_processed": 3,
                           "hospitals_found": 4, "p:440000:hospitals": 4, "conflicts": 2}
    assert set(conn.hkeys(keys.data_leaves("440000", TASK))) == {b"440103", b"440104", b"440105", b"440106"}


def test_records_dropped_for_a_conflict_leave_the_others_byte_for_byte(conn: redis.Redis) -> None:
    """A leaf is one string of JSON lines: dropping a record taken by another leaf keeps every other
    record whole, newlines and line separators inside values included (JSON escapes the former)."""
    odd = ["第一\n行", "段\u2028落\u2029", 'back\\slash "q"', "\x00\x1f", "😀"]
    assert stage(conn, "440000", leaf("440104"), [hospital(2, "440104")]) == store.Staged(1, 0)
    listed = [hospital(n, "440105", name=odd[n % len(odd)]) for n in (3, 2, 1, 4, 5)]  # not in id order
    assert stage(conn, "440000", leaf("440105"), listed) == store.Staged(4, 1)
    expected = {h["id"].encode(): json.dumps(h, ensure_ascii=False, separators=(",", ":")).encode()
                for h in sorted(listed, key=lambda h: h["id"]) if h["id"] != "H000002"}
    assert stored(conn, "440000", "440105") == expected
    assert store.leaf_sizes(conn, "440000", TASK, ["440105"]) == [4]


def test_an_id_listed_twice_in_one_leaf_is_kept_once_last_one_wins(conn: redis.Redis) -> None:
    listed = [hospital(2, "440104", name="旧"), hospital(1, "440104"), hospital(2, "440104", name="新")]
    assert stage(conn, "440000", leaf("440104"), listed) == store.Staged(2, 0)
    assert [json.loads(r)["name"] for r in store.leaf_records(conn, "440000", TASK, "440104")] == ["第1人民医院", "新"]


def test_a_leaf_stored_as_a_hash_by_an_earlier_version_is_read_counted_and_exported(conn: redis.Redis) -> None:
    """Data published before leaves were strings stays readable after an upgrade, in the same order."""
    records = {h["id"]: json.dumps(h, ensure_ascii=False, separators=(",", ":")) for h in
               (hospital(n, "110101") for n in (3, 1, 2))}
    conn.hset(keys.data_leaf("110000", TASK, "110101"), mapping=records)  # as the old STAGE_LEAF wrote it
    conn.hset(keys.data_leaves("110000", TASK), "110101", leaf("110101").to_json())
    stage(conn, "110000", leaf("110102"), [hospital(7, "110102")])  # a leaf staged by this version beside it
    conn.hset(keys.task(TASK), mapping={"status": "RUNNING", "created_ts": "1"})  # only a running task publishes
    assert store.publish(conn, "110000", TASK, "北京市") == store.Publication("published", 4)
    assert store.leaf_sizes(conn, "110000", TASK, ["110101", "110102"]) == [3, 1]
    out = io.StringIO()
    assert store.export(conn, out, "jsonl", ["110000"]) == 4
    assert out.getvalue().splitlines() == [records["H000001"], records["H000002"], records["H000003"],
                                           json.dumps(hospital(7, "110102"), ensure_ascii=False, separators=(",", ":"))]


def test_ids_holding_a_newline_are_staged_and_checked_like_any_other(conn: redis.Redis) -> None:
    """Ids go to the script in one value joined by newlines, unless one holds a newline itself."""
    odd = [hospital(1, "440104", id="H\n1"), hospital(2, "440104", id="H2"), hospital(3, "440104", id=" ")]
    assert stage(conn, "440000", leaf("440104"), odd) == store.Staged(3, 0)
    again = [hospital(4, "440105", id="H\n1"), hospital(5, "440105", id="H5")]
    assert stage(conn, "440000", leaf("440105"), again) == store.Staged(1, 1)
    assert set(stored(conn, "440000", "440104")) == {b"H\n1", b"H2", b" "}
    assert set(stored(conn, "440000", "440105")) == {b"H5"}
    assert as_text_map(conn.hgetall(keys.task_conflicts(TASK))) == {"H\n1": "440104,440105"}


def at_home(number: int, leaf_code: str, listed_under: str | None = None, **extra: Any) -> dict[str, Any]:
    """A record whose id is at home in `leaf_code` (H + code + number, as real ids), listed under
    `listed_under` (its home unless given)."""
    return hospital(number, listed_under or leaf_code, id=f"H{leaf_code}{number:06d}", **extra)


def home_ids(conn: redis.Redis) -> dict[str, list[str]]:
    return {code: held.split("\n")[1:-1] for code, held in as_text_map(conn.hgetall(keys.task_home_ids(TASK))).items()}


def test_ids_at_home_stay_out_of_the_index_and_a_copy_elsewhere_is_still_found(conn: redis.Redis) -> None:
    """Either order, the same province or another, the same call or another: the first leaf to stage an id
    keeps it, the other keeps nothing of it and reports it."""
    assert stage(conn, "440000", leaf("440104"), [at_home(n, "440104") for n in (1, 2, 3)]) == store.Staged(3, 0)
    assert home_ids(conn) == {"440104": ["H440104000001", "H440104000002", "H440104000003"]}
    assert conn.hlen(keys.task_ids(TASK)) == 0  # an honest upstream's ids: no index at all
    # At home first, then listed elsewhere (another province): found in its home leaf's ids.
    assert stage(conn, "110000", leaf("110101"), [at_home(2, "440104", "110101"), at_home(7, "110101")]) == \
        store.Staged(1, 1)
    # Elsewhere first, then at home: found in the index.
    assert stage(conn, "440000", leaf("440105"), [at_home(5, "440106", "440105")]) == store.Staged(1, 0)
    assert seen(conn) == {"H110101000007", "H440106000005"}
    batch = [
        (leaf("440106"), [at_home(n, "440106") for n in (4, 5, 6)]),  # 5 is 440105's
        (leaf("440107"), [at_home(4, "440106", "440107"), at_home(8, "440107")]),  # 4 is 440106's, same call
    ]
    assert store.stage_leaves(Scripts(conn), "440000", TASK, batch) == [store.Staged(2, 1), store.Staged(1, 1)]
    assert set(stored(conn, "110000", "110101")) == {b"H110101000007"}
    assert set(stored(conn, "440000", "440106")) == {b"H440106000004", b"H440106000006"}
    assert set(stored(conn, "440000", "440107")) == {b"H440107000008"}
    assert as_text_map(conn.hgetall(keys.task_conflicts(TASK))) == {
        "H440104000002": "440104,110101", "H440106000005": "440105,440106", "H440106000004": "440106,440107"}
    assert stats(conn)["hospitals_found"] == 3 + 1 + 1 + 2 + 1 and stats(conn)["conflicts"] == 3
    # At home in their leaves, 440104's ids only ever were in its string; the others are seen too.
    assert seen(conn) == {"H110101000007", "H440106000005", "H440106000004", "H440106000006", "H440107000008"}
    # A re-run of a leaf (crash, retry, resume) finds none of its own ids elsewhere and writes nothing.
    assert stage(conn, "440000", leaf("440104"), [at_home(n, "440104") for n in (1, 2, 3)]) is None
    assert stats(conn)["conflicts"] == 3


def test_an_id_is_at_home_only_in_the_leaf_of_its_six_characters(conn: redis.Redis) -> None:
    """Codes of other lengths, ids too short, or a leaf holding an id with a newline: those ids go to the
    index, so no two leaves can both take an id as their own."""
    assert stage(conn, "440000", leaf("4401"), [hospital(1, "4401", id="H4401000001")]) == store.Staged(1, 0)
    assert stage(conn, "440000", leaf("440100"), [hospital(2, "440100", id="H4401000001")]) == store.Staged(0, 1)
    assert stage(conn, "440000", leaf("H44"), [hospital(3, "H44", id="H44")]) == store.Staged(1, 0)
    odd = [at_home(1, "440104"), hospital(2, "440104", id="H\n2")]
    assert stage(conn, "440000", leaf("440104"), odd) == store.Staged(2, 0)  # ids one value each: none at home
    assert stage(conn, "440000", leaf("440105"), [at_home(1, "440104", "440105")]) == store.Staged(0, 1)
    assert home_ids(conn) == {"4401": ["H4401000001"], "H44": ["H44"]} and seen(conn) == {"H4401000001", "H44"}
    # A leaf with an id holding a newline keeps its ids in the id index (no string of ids can hold them).
    assert as_text_map(conn.hgetall(keys.task_ids(TASK))) == {"H440104000001": "440104", "H\n2": "440104"}


def test_a_code_that_reads_as_a_pattern_takes_no_other_id_for_its_own(conn: redis.Redis) -> None:
    """The script checks a leaf's ids with a Lua pattern built from its code: "4.0104" must not match 4x0104."""
    assert stage(conn, "440000", leaf("4.0104"), [hospital(1, "4.0104", id="H4x0104000001")]) == store.Staged(1, 0)
    assert seen(conn) == {"H4x0104000001"}  # not at home: seen
    conn.delete(keys.task_seen_ids(TASK))  # as if no id were seen: a leaf all at home is staged whole
    assert stage(conn, "440000", leaf("4%0104"), [hospital(1, "4%0104", id="H4%0104000001")]) == store.Staged(1, 0)
    assert home_ids(conn) == {"4.0104": ["H4x0104000001"], "4%0104": ["H4%0104000001"]}
    assert seen(conn) == set()


def test_a_staging_call_gathers_what_arrives_soon_after_its_first_leaf(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stager takes the first fetched leaf and waits GATHER_SECONDS for more (a call's counters cost the
    same for one leaf as for sixteen), within a call's bounds."""
    monkeypatch.setattr(leaves, "GATHER_SECONDS", 5.0)  # wide: the test waits on the queue, not on a clock
    fetched: queue.Queue[leaves.Fetched] = queue.Queue()
    arrivals = [leaves.Fetched(leaf(f"4401{n:02d}"), [hospital(n, f"4401{n:02d}")]) for n in range(3)]
    fetched.put(arrivals[0])

    def later() -> None:
        wait_until(fetched.empty, 5, 0.001)  # the stager has taken the first one and waits for more
        fetched.put(arrivals[1])

    helper = threading.Thread(target=later)
    helper.start()
    monkeypatch.setattr(leaves, "BATCH_LEAVES", 2)
    assert leaves._take_batch(fetched) == arrivals[:2]  # the second one joined the first's call
    helper.join()
    monkeypatch.setattr(leaves, "GATHER_SECONDS", 0.0)
    fetched.put(arrivals[2])
    assert leaves._take_batch(fetched) == arrivals[2:]


def opaque(number: int, listed_under: str, **extra: Any) -> dict[str, Any]:
    """A record whose id says nothing of its leaf (a uuid's hex digits, as jobs.upstream.synth makes them)."""
    return hospital(number, listed_under, id=f"{number * 0x9E3779B97F4A7C15 % 2**128:032x}", **extra)


def oid(number: int) -> str:
    return str(opaque(number, "")["id"])


def test_opaque_ids_listed_under_two_leaves_are_kept_once_and_reported(conn: redis.Redis) -> None:
    """Opaque ids are added to the seen set without a look first while none was there; the first one found
    there sends the task to looking first (ids_careful); either way the first leaf to stage an id keeps it,
    in this call or an earlier one, in this province or another, and the examples name both leaves."""
    assert stage(conn, "440000", leaf("440104"), [opaque(n, "440104") for n in (1, 2, 3)]) == store.Staged(3, 0)
    assert stage(conn, "440000", leaf("440105"), [opaque(n, "440105") for n in (4, 5)]) == store.Staged(2, 0)
    assert as_text_map(conn.hgetall(keys.task_stats(TASK)))["ids_at_home"] == "0"
    assert "ids_careful" not in as_text_map(conn.hgetall(keys.task_stats(TASK)))
    assert stage(conn, "110000", leaf("110101"), [opaque(n, "110101") for n in (3, 6)]) == store.Staged(1, 1)
    assert as_text_map(conn.hgetall(keys.task_stats(TASK)))["ids_careful"] == "1"
    batch = [
        (leaf("110102"), [opaque(n, "110102") for n in (7, 8, 5)]),  # 5 is 440105's
        (leaf("110105"), [opaque(n, "110105") for n in (8, 9)]),  # 8 is 110102's, in the same call
    ]
    assert store.stage_leaves(Scripts(conn), "110000", TASK, batch) == [store.Staged(2, 1), store.Staged(1, 1)]
    assert as_text_map(conn.hgetall(keys.task_conflicts(TASK))) == {
        oid(3): "440104,110101", oid(5): "440105,110102", oid(8): "110102,110105"}
    assert seen(conn) == {oid(n) for n in range(1, 10)}
    assert home_ids(conn) == {"440104": [oid(1), oid(2), oid(3)], "440105": [oid(4), oid(5)],
                              "110101": [oid(6)], "110102": [oid(7), oid(8)], "110105": [oid(9)]}
    assert {json.loads(r)["id"] for r in store.leaf_records(conn, "110000", TASK, "110102")} == {oid(7), oid(8)}
    assert stats(conn)["hospitals_found"] == 9 and stats(conn)["conflicts"] == 3
    assert stage(conn, "110000", leaf("110101"), [opaque(n, "110101") for n in (3, 6)]) is None  # a re-run
    assert stats(conn)["conflicts"] == 3


def test_opaque_ids_across_chunks_and_a_bounded_sample_of_examples(conn: redis.Redis) -> None:
    """A leaf of more than one chunk of the script, whose ids another leaf staged in part: every copy is
    dropped and counted; owners are looked for only while examples are wanted."""
    first = [opaque(n, "440104") for n in range(0, 6000, 2)]  # 3,000 ids: two chunks
    assert stage(conn, "440000", leaf("440104"), first) == store.Staged(3000, 0)
    second = [opaque(n, "440105") for n in range(4000, 8500)]  # 4,500 ids, 1,000 of them 440104's
    assert stage(conn, "440000", leaf("440105"), second) == store.Staged(3500, 1000)
    third = [opaque(n, "440106") for n in range(8000, 9000)]  # 500 of them 440105's, looked for first now
    assert stage(conn, "440000", leaf("440106"), third) == store.Staged(500, 500)
    examples = as_text_map(conn.hgetall(keys.task_conflicts(TASK)))
    assert len(examples) == store.CONFLICT_EXAMPLES
    assert all(owners == "440104,440105" for owners in examples.values())
    kept = [json.loads(r)["id"] for r in store.leaf_records(conn, "440000", TASK, "440106")]
    assert kept == sorted(oid(n) for n in range(8500, 9000))
    assert len(seen(conn)) == 3000 + 3500 + 500 and stats(conn)["hospitals_found"] == 7000


def test_a_task_staged_by_an_earlier_version_keeps_its_id_index(conn: redis.Redis) -> None:
    """Resumed after an upgrade: the id -> leaf index an earlier version kept is still looked in (read, not
    written), so an id it holds is another leaf's."""
    conn.hset(keys.task_ids(TASK), mapping={oid(1): "440104", "H440105000002": "440104"})
    conn.hset(keys.task_home_ids(TASK), "440104", "\nH440104000003\n")
    conn.sadd(keys.checkpoint_leaves(TASK, "440000"), "440104")
    listed = [opaque(1, "440106"), at_home(2, "440105", "440106"), at_home(3, "440104", "440106"), opaque(4, "440106")]
    assert stage(conn, "440000", leaf("440106"), listed) == store.Staged(1, 3)
    assert {json.loads(r)["id"] for r in store.leaf_records(conn, "440000", TASK, "440106")} == {oid(4)}
    assert as_text_map(conn.hgetall(keys.task_ids(TASK))) == {oid(1): "440104", "H440105000002": "440104"}
    assert set(as_text_map(conn.hgetall(keys.task_conflicts(TASK))).values()) == {"440104,440106"}
