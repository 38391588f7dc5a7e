"""Exports after a refresh are byte for byte those of the version before the performance work (issue 13).

A refresh over HTTP of an upstream whose hospitals carry every kind of value a JSON encoder can spell
differently -- non-BMP characters (sent as surrogate-pair escapes), control characters, quotes and
backslashes, U+2028, floats (1e16, 1e-07, -0.0, 0.1), integers beyond 64 bits, nested lists and
objects, booleans and nulls, keys in an unusual order -- is exported as JSON lines and as CSV, and the
SHA-256 of each export is compared with the digests the code of main@0692edb produced for the same
upstream (tests/support/data/export_digests.json; `generate` below is what ran there, see its docstring).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Iterator
from typing import Any

import redis

from jobs.config import Settings
from jobs.refresh import published
from jobs.refresh.manager import SyncTaskManager
from jobs.upstream.base import Hospital
from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import DirectoryHandler, DirectoryServer, RunningUpstream
from tests.support.helpers import REPO, settle

DIGESTS = REPO / "tests" / "support" / "data" / "export_digests.json"
SCALE = 200_000  # 北京: about 1,100 hospitals in 16 districts

# Values whose JSON spelling differs between encoders, or between escaped and unescaped forms.
ODD_VALUES: list[Any] = [
    "😀 𠀀 𝄞", "tab\there \"quoted\" back\\slash", "ctl \x00\x01\x1f\x7f end", "line\u2028sep\u2029para",
    1e16, 1e-07, -0.0, 0.1, 2.5, 123456789.125, 2**70, -(2**63), 0, True, False, None,
    [1, "二", [3.0, {"k": "😀"}]], {"z": 1, "a": {"é": None}}, "", " ",
]


NAME_SUFFIXES = ["", "🏥", "\\", '"', "\n"]


class OddDirectory(SampleDirectory):
    """The sample with extra fields of odd values on most hospitals, and some names spelled oddly."""

    def hospital_page(self, code: str, page: int, page_size: int) -> tuple[list[Hospital], int]:
        items, total = super().hospital_page(code, page, page_size)
        return [_odd(h) for h in items], total


def _odd(hospital: Hospital) -> Hospital:
    n = int(hashlib.sha256(str(hospital["id"]).encode()).hexdigest()[:8], 16)
    if n % 7 == 0:
        return hospital  # some stay plain
    odd: dict[str, Any] = {"extra_first": ODD_VALUES[n % len(ODD_VALUES)], **hospital}
    odd["name"] = hospital["name"] + NAME_SUFFIXES[n % len(NAME_SUFFIXES)]
    odd["extra_last"] = ODD_VALUES[(n // 7) % len(ODD_VALUES)]
    if n % 3 == 0:
        odd["nested"] = {"values": ODD_VALUES[: 1 + n % len(ODD_VALUES)]}
    return odd


class EscapingHandler(DirectoryHandler):
    """Answers as some servers do: every non-ASCII character escaped (non-BMP as surrogate pairs),
    with whitespace after separators."""

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(body, ensure_ascii=True, indent=1).encode("ascii"), headers)


@contextlib.contextmanager
def odd_upstream() -> Iterator[str]:
    server = DirectoryServer(("127.0.0.1", 0), OddDirectory(SCALE))
    server.RequestHandlerClass = EscapingHandler
    running = RunningUpstream(server)
    try:
        yield running.url
    finally:
        running.stop()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def generate(conn: redis.Redis, settings: Settings) -> dict[str, Any]:
    """Refresh 北京 from the odd upstream (a forking worker in this process) and digest its exports.

    The stored digests were made by this function with the code of main@0692edb: a git worktree of that
    commit, this file copied into its tests/, and `pytest` run there with this branch's venv and
    PYTHONPATH set to that worktree, so every module imported was the old one."""
    with odd_upstream() as url:
        manager = SyncTaskManager(settings, conn, upstream={"kind": "http", "url": url})
        status = settle(conn, manager, manager.create_province_refresh_task("北京"), timeout=120)
    assert status["status"] == "SUCCEEDED", status
    digests: dict[str, Any] = {"records": status["statistics"]["hospitals_found"]}
    for fmt in ("jsonl", "csv"):
        out = io.StringIO()
        published.export(conn, out, fmt)
        digests[fmt] = _sha256(out.getvalue())
    return digests


def test_exports_are_byte_identical_to_the_previous_version(conn: redis.Redis, env: dict[str, str]) -> None:
    expected = json.loads(DIGESTS.read_text())
    got = generate(conn, Settings.from_env())
    assert got["records"] == expected["records"] > 1000
    assert got == {k: expected[k] for k in got}


def test_the_odd_values_are_served_and_stored() -> None:
    """The upstream really sends what the comparison is about: escaped non-BMP characters, floats, big
    integers (otherwise equal digests would prove little)."""
    with odd_upstream() as url:
        import httpx

        body = httpx.get(f"{url}/regions/110105/hospitals", params={"page": 1, "page_size": 500}).content
    assert b"\\ud83d\\ude00" in body and b"1e-07" in body and str(2**70).encode() in body
    assert any(isinstance(item.get("extra_first"), float) for item in json.loads(body)["items"])
