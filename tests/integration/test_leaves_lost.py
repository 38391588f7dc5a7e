"""A province job does not publish without leaves the server lost after acknowledging them.

With appendfsync everysec a killed server may come back without writes it had acknowledged, and a
work-horse that rides the restart out would otherwise go on believing those leaves staged. Here the
server's loss is made exactly: everything one staged leaf wrote (its checkpoint entry, records, id
index entries, descriptor and counters) is taken back while another leaf is being fetched.
"""

from __future__ import annotations

import json

import redis

from jobs import keys
from jobs.refresh import published
from jobs.refresh.leaves import LeafRunner
from jobs.refresh.published import Leaf
from jobs.upstream.base import Hospital, Region
from jobs.upstream.sample import SampleDirectory

TASK, PROVINCE = "task_20261201_000000_0a0b0c", "440000"


class LosingUpstream(SampleDirectory):
    """Takes back what staging `victim` wrote, the first time `trigger` is fetched."""

    def __init__(self, conn: redis.Redis, victim: str, trigger: str) -> None:
        super().__init__(40_000)
        self.conn, self.victim, self.trigger, self.lost = conn, victim, trigger, False
        self.fetched: list[str] = []

    def hospitals(self, region: Region) -> list[Hospital]:
        self.fetched.append(region["code"])
        if region["code"] == self.trigger and not self.lost and self.conn.sismember(
            keys.checkpoint_leaves(TASK, PROVINCE), self.victim
        ):
            self.lost = True
            self._take_back(len(super().hospitals({"code": self.victim, "name": "", "level": "district"})))
        return super().hospitals(region)

    def _take_back(self, records: int) -> None:
        data = keys.data_leaf(PROVINCE, TASK, self.victim)
        ids = [json.loads(r)["id"] for r in published.leaf_records(self.conn, PROVINCE, TASK, self.victim)]
        with self.conn.pipeline() as pipe:
            pipe.srem(keys.checkpoint_leaves(TASK, PROVINCE), self.victim)
            pipe.delete(data)
            if ids:
                pipe.hdel(keys.task_ids(TASK), *ids)
                pipe.srem(keys.task_seen_ids(TASK), *ids)
            pipe.hdel(keys.task_home_ids(TASK), self.victim)
            pipe.hdel(keys.data_leaves(PROVINCE, TASK), self.victim)
            pipe.hdel(keys.data_sizes(PROVINCE, TASK), self.victim)
            leaf_fields = (keys.province_stat(PROVINCE, keys.PROVINCE_LEAVES_DONE), "districts_processed")
            done_fields = ("leaves_done", *leaf_fields)
            for field in done_fields:
                pipe.hincrby(keys.task_stats(TASK), field, -1)
            for field in ("hospitals_found", keys.province_stat(PROVINCE, keys.PROVINCE_HOSPITALS)):
                pipe.hincrby(keys.task_stats(TASK), field, -records)
            pipe.execute()


def test_leaves_the_server_lost_are_fetched_again_before_the_job_ends(conn: redis.Redis) -> None:
    sample = SampleDirectory(40_000)
    province = next(p for p in sample.provinces() if p["code"] == PROVINCE)
    leaves = [Leaf(d["code"], d["name"], "district", c["name"], province["name"])
              for c in sample.children(province) for d in sample.children(c)][:40]
    codes = [leaf.code for leaf in leaves]
    upstream = LosingUpstream(conn, victim=codes[0], trigger=codes[-1])
    runner = LeafRunner(conn, TASK, "province", province, upstream, None)

    assert runner.run(leaves, concurrency=1) == "done"  # one thread: the victim is staged before the trigger

    assert upstream.lost
    assert upstream.fetched.count(codes[0]) == 2 and upstream.fetched.count(codes[1]) == 1
    assert conn.smembers(keys.checkpoint_leaves(TASK, PROVINCE)) == {c.encode() for c in codes}
    expected = sum(len(sample.hospitals({"code": c, "name": "", "level": "district"})) for c in codes)
    stats = {k.decode(): int(v) for k, v in conn.hgetall(keys.task_stats(TASK)).items()}
    assert stats["leaves_done"] == len(codes) and stats["hospitals_found"] == expected
    assert sum(len(published.leaf_records(conn, PROVINCE, TASK, c)) for c in codes) == expected
    assert sum(published.leaf_sizes(conn, PROVINCE, TASK, codes)) == expected
