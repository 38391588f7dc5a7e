"""Choosing an upstream from a task's spec, and running the sample server as a process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from jobs.config import PacingSettings, Settings, UpstreamSettings
from jobs.errors import ValidationError
from jobs.upstream import build_upstream, spec_from_settings
from jobs.upstream.http import HttpDirectoryClient
from jobs.upstream.llm import LLMClient
from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import start_background

SECRET = "never-store-me-123"


def test_spec_follows_the_settings() -> None:
    assert spec_from_settings(Settings(upstream=UpstreamSettings(sample_scale=42))) == {"kind": "sample", "scale": 42}
    http = Settings(upstream=UpstreamSettings(url="http://127.0.0.1:9/v1", token=SECRET))
    assert spec_from_settings(http) == {"kind": "http", "url": "http://127.0.0.1:9/v1"}
    llm = Settings(upstream=UpstreamSettings(llm_base_url="http://127.0.0.1:9/v1", llm_model="m", llm_api_key=SECRET))
    assert spec_from_settings(llm) == {"kind": "llm", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    assert SECRET not in json.dumps([spec_from_settings(http), spec_from_settings(llm)])


def test_build_each_kind() -> None:
    upstream = UpstreamSettings(token=SECRET, llm_api_key=SECRET)
    settings = Settings(upstream=upstream, pacing=PacingSettings(concurrency=3))
    sample = build_upstream({"kind": "sample", "scale": 5}, settings)
    assert isinstance(sample, SampleDirectory) and sample.scale == 5
    http = build_upstream({"kind": "http", "url": "http://127.0.0.1:9/v1"}, settings)
    assert isinstance(http, HttpDirectoryClient) and http.concurrency == 3
    assert SECRET not in repr(http)
    http.close()
    llm = build_upstream({"kind": "llm", "base_url": "http://127.0.0.1:9/v1", "model": "m"}, settings)
    assert isinstance(llm, LLMClient) and llm.model == "m" and SECRET not in repr(llm)
    llm.close()


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "ftp"},
        {},
        {"kind": "sample", "scale": -1},
        {"kind": "sample", "scale": "many"},
        {"kind": "http"},
        {"kind": "http", "url": "file:///etc/passwd"},
        {"kind": "llm", "base_url": "http://127.0.0.1:9/v1"},
    ],
)
def test_invalid_specs_are_refused(spec: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        build_upstream(spec, Settings())


def test_built_http_client_reaches_the_server_with_the_token() -> None:
    with start_background(50, token=SECRET) as server:
        settings = Settings(upstream=UpstreamSettings(url=server.url, token=SECRET))
        upstream = build_upstream(spec_from_settings(settings), settings)
        assert len(upstream.provinces()) == 34
        upstream.close()


def test_client_concurrency_bounds_what_the_server_sees() -> None:
    sample = SampleDirectory(50)
    with start_background(directory=sample, latency_ms=30) as server:
        with HttpDirectoryClient(server.url, concurrency=2) as upstream, ThreadPoolExecutor(8) as pool:
            results = list(pool.map(upstream.children, sample.provinces()))
        assert results == [sample.children(p) for p in sample.provinces()]
        assert 1 <= server.counters.max_in_flight <= 2
        assert server.counters.max_per_second <= server.counters.total == 34


def test_serve_runs_as_a_process_and_stops_on_sigterm() -> None:
    env = {**os.environ, "REFRESHQ_UPSTREAM_TOKEN": SECRET}
    command = [sys.executable, "-m", "jobs.upstream.serve", "--port", "0", "--scale", "10", "--require-token"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/v1", line)
        assert url, line
        regions = httpx.get(url.group(0) + "/regions", headers={"Authorization": f"Bearer {SECRET}"}, timeout=5)
        assert len(regions.json()["items"]) == 34
        assert httpx.get(url.group(0) + "/regions", timeout=5).status_code == 401
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
