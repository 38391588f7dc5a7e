"""The API on a real `refreshq web` (waitress on loopback) with a real worker: a refresh created and
followed over Server-Sent Events to 100 %, Last-Event-ID resume, heartbeats, and the cap on open streams
(503 with Retry-After past it, the slot back when a stream closes, other requests still served)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import redis

from jobs import tokens
from tests.support.helpers import REFRESHQ, free_port, wait_until, worker_process

pytestmark = pytest.mark.slow  # real processes over seconds: out of the quick loop

PASSWORD = "pw"


@contextmanager
def refreshq_web(env: dict[str, str], **extra: str) -> Iterator[str]:
    port = free_port()
    environment = {**env, "REFRESHQ_WEB_PASSWORD": PASSWORD, "REFRESHQ_SAMPLE_SCALE": "2000", **extra}
    proc = subprocess.Popen([REFRESHQ, "web", "--port", str(port)], env=environment, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(url), 30, 0.1, "refreshq web to answer")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def events(response: httpx.Response) -> Iterator[tuple[str, str | None, Any]]:
    """(event name, id, data) of an event stream; comments come as ("comment", None, text)."""
    name, ident, data = "message", None, []
    for line in response.iter_lines():
        if line.startswith(":"):
            yield "comment", None, line[1:].strip()
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("id: "):
            ident = line[4:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            yield name, ident, json.loads("\n".join(data))
            name, ident, data = "message", None, []


@pytest.fixture
def token(conn: redis.Redis) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.create(conn, 'web-user', 'operate')[0]}"}


def test_a_refresh_followed_over_events_to_100_percent(env: dict[str, str], token: dict[str, str]) -> None:
    with refreshq_web(env) as url, httpx.Client(base_url=f"{url}/api/v1", timeout=30) as http:
        refused = http.get("/refreshes")
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == 'Bearer realm="refreshq"'
        assert refused.headers["Content-Type"] == "application/problem+json"
        created = http.post("/refreshes", json={"kind": "province", "province": "广东省"}, headers=token)
        assert created.status_code == 201, created.text
        task_id = created.json()["task_id"]
        seen: list[tuple[str, int, str]] = []
        last_id = None
        with worker_process(env), http.stream("GET", f"/refreshes/{task_id}/events", headers=token) as stream:
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            for name, ident, data in events(stream):
                if name in ("state", "end"):
                    seen.append((name, data["task"]["progress"], data["task"]["status"]))
                    last_id = ident
                    assert data["provinces"][0]["code"] == "440000"
                if name == "end":
                    break
        progress = [p for _, p, _ in seen]
        assert progress == sorted(progress) and len(seen) >= 3, seen
        assert seen[-1] == ("end", 100, "SUCCEEDED")
        # Coming back with the last id: nothing is sent again but the end.
        with http.stream("GET", f"/refreshes/{task_id}/events", headers={**token, "Last-Event-ID": last_id}) as again:
            got = [(name, ident) for name, ident, _ in events(again) if name != "comment"]
        assert got == [("end", last_id)]
        live = http.get(f"/refreshes/{task_id}/live", headers=token)
        assert http.get(f"/refreshes/{task_id}/live", headers={**token, "If-None-Match": live.headers["ETag"]}
                        ).status_code == 304


def test_open_streams_are_capped_and_heartbeat(env: dict[str, str], token: dict[str, str]) -> None:
    with refreshq_web(env, REFRESHQ_WEB_STREAMS="2") as url, httpx.Client(base_url=f"{url}/api/v1", timeout=30) as http:
        task_id = http.post("/refreshes", json={"kind": "full"}, headers=token).json()["task_id"]  # no worker: PENDING
        path = f"/refreshes/{task_id}/events"
        with http.stream("GET", path, headers=token) as first, http.stream("GET", path, headers=token) as second:
            first_events = events(first)
            assert next(e for e in first_events if e[0] == "state")[2]["task"]["status"] == "PENDING"
            assert next(e for e in events(second) if e[0] == "state")
            started = time.monotonic()
            third = http.get(path, headers=token)
            assert third.status_code == 503 and int(third.headers["Retry-After"]) > 0
            assert time.monotonic() - started < 5
            assert http.get(f"/refreshes/{task_id}", headers=token).status_code == 200  # other requests go on
            beat = next(e for e in first_events if e[0] == "comment")
            assert beat == ("comment", None, "heartbeat") and time.monotonic() - started < 15
        # Both closed: their slots come back (noticed at their next write, within a heartbeat).
        def reopened() -> bool:
            with http.stream("GET", path, headers=token) as stream:
                return stream.status_code == 200
        wait_until(reopened, 30, 0.5, "a stream slot to come back")
