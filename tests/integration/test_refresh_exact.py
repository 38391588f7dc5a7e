"""A refresh is exact or it is not SUCCEEDED, whatever the upstream does.

Refreshes over a loopback upstream that breaks one rule of the contract at a time (tests/support/lying_upstream.py),
run by forking workers (tests.support.helpers.settle: drain plus the retry sweeper). Each one ends with the
export equal to the upstream's truth, or FAILED with the region named: never SUCCEEDED and short. A count
that lies while the listing is complete and the same twice (a stale `total`) is no reason to fail: those
leaves are published and reported.
"""

from __future__ import annotations

import pytest
import redis

from commands.display import render
from jobs import keys, queues
from jobs.config import Settings
from jobs.refresh import published as store
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream.sample import SampleDirectory
from tests.support.helpers import checksum, exported, province_hospitals, run_cli, settle
from tests.support.lying_upstream import LISTING_LIES, STALE_COUNT_LIES, Lie, LyingUpstream

SCALE, PAGE_CAP = 40_000, 5  # 北京: 16 districts of 7 to 19 hospitals, 2 to 4 pages each
FULL_SCALE = 3000  # full refreshes: one page per leaf, so 34 provinces stay quick
LEAF, LEAF_NAME = "110105", "朝阳区"  # 18 hospitals, 4 pages
FAST = {
    "REFRESHQ_UPSTREAM_ATTEMPTS": "3",
    "REFRESHQ_UPSTREAM_TIMEOUT": "0.5",
    "REFRESHQ_RETRY_BASE": "0.1",
    "REFRESHQ_RETRY_MAX": "1",
}
LIES_FOR_A_LEAF = [kind for kind in LISTING_LIES if kind not in ("foreign", *STALE_COUNT_LIES)] + [
    "cut", "slow", "invalid_json", "wrong_shape", "503"]


@pytest.fixture
def fast(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings (here and in the work-horses) that give up quickly, so a lie is exposed in seconds."""
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()


def over(settings: Settings, conn: redis.Redis, lying: LyingUpstream) -> SyncTaskManager:
    return SyncTaskManager(settings, conn, upstream={"kind": "http", "url": lying.url})


def beijing(lies: tuple[Lie, ...] = ()) -> LyingUpstream:
    return LyingUpstream(SampleDirectory(SCALE), lies, page_cap=PAGE_CAP)


@pytest.mark.parametrize("kind", LIES_FOR_A_LEAF)
@pytest.mark.slow
def test_a_leaf_the_upstream_lies_about_fails_the_task_naming_it(kind: str, fast: Settings, conn: redis.Redis) -> None:
    with beijing((Lie(kind, LEAF, seconds=1.0),)) as lying:
        manager = over(fast, conn, lying)
        status = settle(conn, manager, manager.create_province_refresh_task("北京"))
        told = lying.state.told[kind]
    assert status["status"] == "FAILED", status
    assert LEAF in status["error_message"], status["error_message"]
    assert told >= 3
    if kind in LISTING_LIES:  # the upstream contradicted itself: that region failed for good
        assert [(r["code"], r["name"]) for r in status["failed_regions"]] == [(LEAF, LEAF_NAME)]
        assert LEAF_NAME in status["error_message"]
    else:  # a faulty response every time: the province job ran out of retries, no region is blamed
        assert status["failed_regions"] == [], status["failed_regions"]
    assert conn.hget(keys.PUBLISHED, "110000") is None
    assert exported(conn) == []


@pytest.mark.parametrize("kind", LIES_FOR_A_LEAF)
@pytest.mark.slow
def test_a_lie_told_twice_then_the_truth_ends_exact(kind: str, fast: Settings, conn: redis.Redis) -> None:
    with beijing((Lie(kind, LEAF, times=2, seconds=1.0),)) as lying:
        manager = over(fast, conn, lying)
        status = settle(conn, manager, manager.create_province_refresh_task("北京"))
        told, truth = lying.state.told[kind], lying.truth()
    assert told >= 2
    assert status["status"] == "SUCCEEDED", status
    expected = province_hospitals(SampleDirectory(SCALE), "11")
    assert checksum(exported(conn)) == checksum(expected) == checksum(h for h in truth if h["region_code"][:2] == "11")
    assert status["statistics"]["hospitals_found"] == len(expected) == 222
    assert status["conflicts"] == {"count": 0, "examples": []}


@pytest.mark.slow
def test_an_upstream_that_goes_away_mid_refresh_and_comes_back_ends_exact(
    fast: Settings, conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections refused (and kept-alive ones dropped) for 2 s from the first request about 海淀区: the
    requests in flight then are retried, a job out of attempts is retried by the sweeper, and the
    province is published whole once the server is back."""
    monkeypatch.setenv("REFRESHQ_RETRY_MAX", "10")
    with beijing() as lying:
        lying.outage_when_asked("110108", 2.0)
        manager = over(Settings.from_env(), conn, lying)
        status = settle(conn, manager, manager.create_province_refresh_task("北京"))
        assert lying.is_up and not lying.state.outage_on  # it went away, and came back
    assert status["status"] == "SUCCEEDED", status
    assert checksum(exported(conn)) == checksum(province_hospitals(SampleDirectory(SCALE), "11"))
    assert status["statistics"]["hospitals_found"] == 222


def test_an_id_under_two_leaves_of_a_province_is_one_record_and_a_reported_conflict(
    fast: Settings, conn: redis.Redis
) -> None:
    sample = SampleDirectory(SCALE)
    shared = sample.hospitals({"code": "110108", "name": "海淀区", "level": "district"})[0]
    with beijing((Lie("foreign", LEAF, other="110108"),)) as lying:
        manager = over(fast, conn, lying)
        task_id = manager.create_province_refresh_task("北京")
        status = settle(conn, manager, task_id)
    assert status["status"] == "SUCCEEDED", status
    published = exported(conn)
    expected = province_hospitals(sample, "11")
    assert checksum(published) == checksum(expected)  # the copy under 朝阳区 is the same record, kept once
    assert [h["id"] for h in published].count(shared["id"]) == 1
    assert status["conflicts"]["count"] == 1
    [example] = status["conflicts"]["examples"]
    assert example["id"] == shared["id"] and sorted(example["leaves"]) == [LEAF, "110108"]
    # Only kept records are counted, everywhere.
    assert status["statistics"]["hospitals_found"] == status["result"]["hospitals"] == len(expected)
    assert status["result"]["conflicts"] == 1
    assert store.published_provinces(conn)["110000"]["records"] == len(expected)
    assert manager.province_progress(task_id)[0]["hospitals"] == len(expected)
    assert not conn.exists(keys.task_ids(task_id), keys.task_home_ids(task_id), keys.task_seen_ids(task_id))  # gone
    shown = [line for line in render(status, manager.province_progress(task_id)) if "conflicts:" in line]
    assert len(shown) == 1 and "1 id(s)" in shown[0] and shared["id"] in shown[0]


def test_a_conflict_across_a_retry_is_counted_once_and_the_index_survives_the_failure(
    fast: Settings, conn: redis.Redis
) -> None:
    """朝阳区 also lists 海淀区's first hospital; 海淀区 fails the first run of the province job (503 for
    every attempt), so its own copy comes in on the retry, after 朝阳区's: the index, kept across the
    failure, drops it, and nothing is written or counted twice."""
    sample = SampleDirectory(SCALE)
    lies = (Lie("foreign", LEAF, other="110108"), Lie("503", "110108", times=3))
    with beijing(lies) as lying:
        manager = over(fast, conn, lying)
        task_id = manager.create_province_refresh_task("北京")
        status = settle(conn, manager, task_id)
        asked_haidian = lying.state.requests["110108"]
    assert status["status"] == "SUCCEEDED", status
    assert status["attempt"] == 1 and asked_haidian > 3  # the province job ran twice
    expected = province_hospitals(sample, "11")
    assert checksum(exported(conn)) == checksum(expected)
    assert status["statistics"]["hospitals_found"] == len(expected)
    assert status["conflicts"]["count"] == 1
    assert status["conflicts"]["examples"][0]["leaves"] == [LEAF, "110108"]


@pytest.mark.slow
def test_an_id_under_two_provinces_is_one_record_in_a_full_refresh(fast: Settings, conn: redis.Redis) -> None:
    sample = SampleDirectory(FULL_SCALE)
    shared = sample.hospitals({"code": "120101", "name": "和平区", "level": "district"})[0]
    with LyingUpstream(sample, (Lie("foreign", "110101", other="120101"),)) as lying:
        manager = over(fast, conn, lying)
        status = settle(conn, manager, manager.create_full_refresh_task(), timeout=120)
    assert status["status"] == "SUCCEEDED", status
    published = exported(conn)
    assert checksum(published) == checksum(sample.all_hospitals())
    assert [h["id"] for h in published].count(shared["id"]) == 1
    assert status["conflicts"]["count"] == 1
    assert sorted(status["conflicts"]["examples"][0]["leaves"]) == ["110101", "120101"]
    assert status["statistics"]["hospitals_found"] == FULL_SCALE
    assert sum(p["records"] for p in store.published_provinces(conn).values()) == FULL_SCALE


@pytest.mark.slow
def test_a_full_refresh_unpublishes_a_province_the_upstream_no_longer_lists_only_when_it_succeeds(
    fast: Settings, conn: redis.Redis
) -> None:
    sample = SampleDirectory(FULL_SCALE)
    first = SyncTaskManager(fast, conn, upstream={"kind": "sample", "scale": FULL_SCALE})
    assert settle(conn, first, first.create_full_refresh_task(), timeout=120)["status"] == "SUCCEEDED"
    macau = conn.hget(keys.PUBLISHED, "820000")
    assert macau is not None and len(store.published_provinces(conn)) == 34

    # 澳门 is gone; and the upstream lies about one leaf of 北京, so this refresh fails.
    with LyingUpstream(sample, (Lie("edited", "110105"),)) as lying:
        lying.state.gone.add("820000")
        manager = over(fast, conn, lying)
        task_id = manager.create_full_refresh_task()
        failed = settle(conn, manager, task_id, timeout=120)
        assert failed["status"] == "FAILED", failed
        assert "110105" in failed["error_message"]
        # A failed refresh unpublishes nothing: 澳门 is still there, as published before.
        assert conn.hget(keys.PUBLISHED, "820000") == macau
        assert "820000" in store.published_provinces(conn)
        assert conn.exists(keys.task_home_ids(task_id))  # kept for the resume: what is staged keeps its ids

        lying.state.lies = ()  # the upstream tells the truth again: resuming finishes the task
        manager.resume_task(task_id)
        status = settle(conn, manager, task_id, timeout=120)
        truth = lying.truth()
    assert status["status"] == "SUCCEEDED", status
    assert status["result"]["unpublished"] == ["820000"]
    assert conn.hget(keys.PUBLISHED, "820000") is None
    assert "820000" not in store.published_provinces(conn) and len(store.published_provinces(conn)) == 33
    assert checksum(exported(conn)) == checksum(truth)
    assert len(truth) == FULL_SCALE - sample.hospital_count("820000")
    # Its data stays readable for the grace period (an export may be streaming it), then expires.
    old = macau.decode()
    for key in (keys.data_leaves("820000", old), keys.data_leaf("820000", old, "820000")):
        assert 0 < conn.ttl(key) <= store.OLD_VERSION_GRACE_SECONDS


def test_a_province_refresh_of_a_province_gone_meanwhile_fails_naming_it(fast: Settings, conn: redis.Redis) -> None:
    with LyingUpstream(SampleDirectory(FULL_SCALE)) as lying:
        manager = over(fast, conn, lying)
        published = settle(conn, manager, manager.create_province_refresh_task("澳门"))
        assert published["status"] == "SUCCEEDED", published
        before = exported(conn)
        task_id = manager.create_province_refresh_task("澳门")  # still listed when the task is created
        lying.state.gone.add("820000")  # gone before a worker runs it
        status = settle(conn, manager, task_id)
    assert status["status"] == "FAILED", status
    assert "澳门特别行政区 (820000) is no longer listed by the upstream" in status["error_message"]
    assert [r["code"] for r in status["failed_regions"]] == ["820000"]
    # A province refresh unpublishes nothing: what was published stays, untouched.
    assert conn.hget(keys.PUBLISHED, "820000") == published["task_id"].encode()
    assert exported(conn) == before


def test_a_province_refresh_of_a_gone_province_is_refused_at_creation(
    env: dict[str, str], conn: redis.Redis
) -> None:
    with LyingUpstream(SampleDirectory(FULL_SCALE)) as lying:
        lying.state.gone.add("820000")
        result = run_cli("refresh", "province", "澳门", env={**env, "REFRESHQ_UPSTREAM_URL": lying.url})
        asked = lying.state.requests[""]
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "unknown province" in result.stderr and "澳门" in result.stderr
    assert result.stdout == "" and asked == 1
    # Nothing stored, nothing enqueued.
    assert conn.zcard(keys.TASKS_BY_CREATED) == 0
    assert queues.queue(conn, queues.REFRESH).count == 0
    assert not [k for k in conn.scan_iter("rq:job:*")]


def test_cleanup_deletes_a_failed_task_s_id_index_and_conflicts(fast: Settings, conn: redis.Redis) -> None:
    lies = (Lie("foreign", LEAF, other="110108"), Lie("total_high", "110101"))
    with beijing(lies) as lying:
        manager = over(fast, conn, lying)
        task_id = manager.create_province_refresh_task("北京")
        status = settle(conn, manager, task_id)
    assert status["status"] == "FAILED" and status["conflicts"]["count"] == 1, status
    # Every kept id of the staged leaves (not 东城区's) is in its leaf's string; those not at home are seen too.
    kept = [i for ids in conn.hvals(keys.task_home_ids(task_id)) for i in ids.split(b"\n") if i]
    assert len(kept) == 222 - 15 and conn.scard(keys.task_seen_ids(task_id)) > 0
    assert manager.cleanup_old_tasks(0) == 1
    assert [k for k in conn.scan_iter(f"{keys.PREFIX}*{task_id}*")] == []  # (RQ expires its own keys)
