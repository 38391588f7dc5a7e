"""Refreshes of an upstream whose ids are opaque (a uuid's hex digits, `SampleDirectory(id_format="opaque")`),
as most real directories' are: exact, and an id listed under two leaves is still kept once and reported.
The staging script's own cases are in tests/integration/test_staging.py; the cost is the bench's (scenario 1)."""

from __future__ import annotations

import signal
import subprocess

import httpx
import pytest
import redis

from jobs import keys
from jobs.config import Settings
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream.sample import SampleDirectory
from tests.integration.test_refresh_exact import FAST, FULL_SCALE, PAGE_CAP, SCALE
from tests.support.helpers import REFRESHQ, checksum, exported, free_port, province_hospitals, settle, wait_until
from tests.support.lying_upstream import Lie, LyingUpstream


@pytest.fixture
def fast(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()


def test_a_province_of_opaque_ids_with_an_id_under_two_leaves_and_a_stale_count(
    fast: Settings, conn: redis.Redis
) -> None:
    sample = SampleDirectory(SCALE, id_format="opaque")
    shared = sample.hospitals({"code": "110108", "name": "海淀区", "level": "district"})[0]
    lies = (Lie("foreign", "110105", other="110108"), Lie("total_low", "110111", by=2))
    with LyingUpstream(sample, lies, page_cap=PAGE_CAP) as lying:
        manager = SyncTaskManager(fast, conn, upstream={"kind": "http", "url": lying.url})
        task_id = manager.create_province_refresh_task("北京")
        status = settle(conn, manager, task_id)
    assert status["status"] == "SUCCEEDED", status
    published = exported(conn)
    assert checksum(published) == checksum(province_hospitals(sample, "11"))
    assert [h["id"] for h in published].count(shared["id"]) == 1
    assert status["conflicts"]["count"] == 1
    [example] = status["conflicts"]["examples"]
    assert example["id"] == shared["id"] and sorted(example["leaves"]) == ["110105", "110108"]
    assert status["total_mismatches"]["count"] == 1 and status["statistics"]["hospitals_found"] == 222
    # Published in id order, as exports always were, though the upstream lists them in another.
    for leaf in ("110101", "110105"):
        ids = [h["id"] for h in published if h["region_code"] == leaf]
        assert ids == sorted(ids) and ids != [h["id"] for h in sample.hospitals(
            {"code": leaf, "name": "", "level": "district"})]
    assert not conn.exists(keys.task_seen_ids(task_id), keys.task_home_ids(task_id))  # gone with success


@pytest.mark.slow
def test_a_full_refresh_of_opaque_ids_is_exact_and_keeps_an_id_under_two_provinces_once(
    fast: Settings, conn: redis.Redis
) -> None:
    sample = SampleDirectory(FULL_SCALE, id_format="opaque")
    shared = sample.hospitals({"code": "120101", "name": "和平区", "level": "district"})[0]
    with LyingUpstream(sample, (Lie("foreign", "110101", other="120101"),)) as lying:
        manager = SyncTaskManager(fast, conn, upstream={"kind": "http", "url": lying.url})
        status = settle(conn, manager, manager.create_full_refresh_task(), timeout=180)
    assert status["status"] == "SUCCEEDED", status
    published = exported(conn)
    assert checksum(published) == checksum(sample.all_hospitals())
    assert [h["id"] for h in published].count(shared["id"]) == 1
    assert status["conflicts"]["count"] == 1
    assert sorted(status["conflicts"]["examples"][0]["leaves"]) == ["110101", "120101"]
    assert status["statistics"]["hospitals_found"] == FULL_SCALE


def test_upstream_serve_with_opaque_ids() -> None:
    port = free_port()
    server = subprocess.Popen(
        [REFRESHQ, "upstream", "serve", "--port", str(port), "--scale", "20000", "--id-format", "opaque"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}/v1/regions/440104/hospitals"

        def answer() -> httpx.Response | None:
            try:
                return httpx.get(url, timeout=2)
            except httpx.TransportError:
                return None

        page = wait_until(answer, 30, 0.1, "the upstream to answer").json()
        expected = SampleDirectory(20_000, id_format="opaque").hospital_page("440104", 1, 500)[0]
        assert page["items"] == expected and len(expected[0]["id"]) == 32
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=15)
    assert server.returncode == 0 and b"opaque ids" in err, err
