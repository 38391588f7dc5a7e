"""Helpers for the dashboard tests: the web app on a real WSGI server, a gated upstream whose province
name is markup, and a scan of Redis for pickled values."""

from __future__ import annotations

import base64
import binascii
import re
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import redis
import waitress
from flask import Flask
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.worker import Worker
from waitress import wasyncore

from jobs import queues
from jobs.upstream.base import Hospital, Region
from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import RunningUpstream, start_background
from tests.support.helpers import REFRESHQ, drain, free_port, inflated, key_values, wait_until

MARKUP_NAME = "<img src=x onerror=alert(1)>省"
MARKUP_CODE = "110000"  # 北京, renamed


@contextmanager
def served(app: Flask) -> Iterator[str]:
    """The app on waitress (the server `refreshq web` runs) on a loopback port; yields its base URL."""
    server: Any = waitress.create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        # Closed from inside its own loop (a trigger), where closing every channel is safe. Seen once in
        # 1,500 tests under xdist: the trigger's pipe already closed (EBADF); then close from here.
        try:
            server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        except OSError:
            wasyncore.close_all(server._map, ignore_all=True)
        thread.join(timeout=10)
        server.task_dispatcher.shutdown()
        assert not thread.is_alive(), "the test web server did not stop"


@contextmanager
def web_process(env: dict[str, str], password: str | None = "pw", **extra: str) -> Iterator[str]:
    """`refreshq web` as a user starts it (its own process, waitress, a free loopback port); yields its base
    URL once /healthz answers; SIGTERMed at the end, and it must exit 0. Its output goes to a file (a
    pipe nobody reads would stop it once full)."""
    port = free_port()
    environment = {**env, "REFRESHQ_SAMPLE_SCALE": "2000", **extra}
    if password is not None:
        environment["REFRESHQ_WEB_PASSWORD"] = password
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([REFRESHQ, "web", "--port", str(port)], env=environment, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"

        def output() -> str:
            log.seek(0)
            return log.read().decode(errors="replace")[-5000:]

        try:
            wait_until(lambda: _answers(url) or proc.poll() is not None, 30, 0.1, "refreshq web to answer")
            assert proc.poll() is None, output()
            yield url
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                assert proc.wait(timeout=20) == 0, output()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def same_origin(base_url: str) -> dict[str, str]:
    """The headers a browser sends with a POST from one of the dashboard's pages."""
    return {"Origin": base_url, "Referer": f"{base_url}/rq/"}


class MarkupNamedDirectory(SampleDirectory):
    """The sample with 北京 renamed to markup; hospital pages wait until `release` is set, so that
    province jobs stay busy for as long as a test looks at them."""

    def __init__(self, scale: int) -> None:
        super().__init__(scale)
        self.release = threading.Event()

    def provinces(self) -> list[Region]:
        return [self._renamed(p) for p in super().provinces()]

    def find_region(self, code: str) -> Region | None:
        region = super().find_region(code)
        return self._renamed(region) if region is not None else None

    def hospital_page(self, code: str, page: int, page_size: int) -> tuple[list[Hospital], int]:
        self.release.wait(120)
        return super().hospital_page(code, page, page_size)

    @staticmethod
    def _renamed(region: Region) -> Region:
        return Region(code=region["code"], name=MARKUP_NAME, level=region["level"]) \
            if region["code"] == MARKUP_CODE else region


@contextmanager
def markup_upstream(scale: int) -> Iterator[tuple[RunningUpstream, MarkupNamedDirectory]]:
    """A loopback HTTP upstream serving a MarkupNamedDirectory; released and stopped at the end."""
    directory = MarkupNamedDirectory(scale)
    running = start_background(directory=directory)
    try:
        yield running, directory
    finally:
        directory.release.set()
        running.stop()


def failed_job(conn: redis.Redis, queue: str = queues.NORMAL, key: str = "test:flaky-ok", **options: Any) -> Job:
    """A JSON job with markup in its description and meta that failed on a real worker (the default
    function succeeds once `key` exists)."""
    func, args = options.pop("func", "tests.support.job_functions.flaky"), options.pop("args", (key,))
    job = queues.queue(conn, queue).enqueue_call(
        func, args=args, meta={"region": MARKUP_NAME, "attempt": 1},
        description=f"refresh test: {MARKUP_NAME}", **options,
    )
    drain(conn, [queue])
    assert job.get_status(refresh=True) == JobStatus.FAILED
    return job


def busy_province_jobs(conn: redis.Redis, count: int) -> list[str]:
    """Wait until `count` workers are busy on province jobs; the ids of those jobs."""
    def current() -> list[str]:
        ids = [w.get_current_job_id() for w in Worker.all(connection=conn, serializer=JSONSerializer)]
        started = set(StartedJobRegistry(queues.REFRESH, connection=conn).get_job_ids())
        # `<task>-p<code>-<attempt>`; the plan job (`<task>-plan`) has a "-p" too
        busy = [i for i in ids if i is not None and i in started and re.search(r"-p\d+-\d+$", i)]
        return busy if len(busy) >= count else []
    return wait_until(current, timeout=60, what=f"{count} workers busy on province jobs")  # type: ignore[no-any-return]


def _forms(value: bytes) -> Iterator[tuple[bytes, bool]]:
    """The value as stored, inflated (RQ compresses job data and tracebacks) and base64-decoded (RQ's
    results stream holds serialized return values in base64), each with whether it came out of
    base64 (there only a whole pickle counts: any text can decode to a leading 0x80)."""
    decoded = _unbase64(value)
    for data, from_base64 in ((value, False), (decoded, True)):
        if not data:
            continue
        yield data, from_base64
        yield inflated(data), from_base64


def _unbase64(value: bytes) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _is_pickle(data: bytes, strict: bool) -> bool:
    if not data.startswith(b"\x80"):  # pickle protocol 2 and later start with PROTO (0x80)
        return False
    return not strict or (len(data) > 2 and 2 <= data[1] <= 5 and data.endswith(b"."))


def pickled_values(conn: redis.Redis) -> list[str]:
    """Every key (with the index of the value) holding a pickle, in any of its readable forms."""
    found = []
    for key in conn.scan_iter(count=1000):
        for index, value in enumerate([key, *key_values(conn, key, names=False)]):
            if any(_is_pickle(data, strict) for data, strict in _forms(value)):
                found.append(f"{key.decode(errors='replace')}[{index}]")
    return found


def value_count(conn: redis.Redis) -> int:
    """How many values the scan read (so a test can tell a scan of something from a scan of nothing)."""
    return sum(1 + len(key_values(conn, key, names=False)) for key in conn.scan_iter(count=1000))
