"""A local OpenAI-compatible chat server for the LLM client tests, answering from a SampleDirectory.

Real HTTP on loopback, threaded, port 0. Its `style` decides how it answers, imitating what language
models do: fenced JSON, prose around JSON, invalid JSON first, always invalid, messy items.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from jobs.upstream.base import Hospital, Region, Upstream
from jobs.upstream.sample import SampleDirectory
from jobs.upstream.serve import BackgroundServer

CODE = re.compile(r"行政区划代码 (\w+)")
STYLES = (
    "plain",
    "fenced",
    "prose",
    "invalid_then_valid",
    "always_invalid",
    "messy",
    "nothing_valid",
    "unavailable_then_valid",
    "slow_then_valid",
    "not_a_completion",
)


def _json(items: list[Any]) -> str:
    return json.dumps(items, ensure_ascii=False)


def _messy(items: list[dict[str, Any]]) -> list[Any]:
    """The same items, each repeated (exact repeats collapse into one; junk items would make the whole
    answer invalid, see the styles that send them)."""
    messy: list[Any] = []
    for item in items:
        # The first copy carries a wrong level and region code, which the client must overwrite.
        messy += [{**item, "level": "wrong", "region_code": "000000"}, item]
    return messy


class FakeChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, directory: SampleDirectory, style: str, api_key: str | None, slow_seconds: float) -> None:
        super().__init__(("127.0.0.1", 0), _ChatHandler)
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}")
        self.directory = directory
        self.style = style
        self.api_key = api_key
        self.slow_seconds = slow_seconds
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()  # by prompt: which attempt this is
        self.requests: list[dict[str, Any]] = []  # every request body received

    def attempt(self, body: dict[str, Any]) -> int:
        prompt = body["messages"][-1]["content"]
        with self.lock:
            self.requests.append(body)
            self.calls[prompt] += 1
            return self.calls[prompt]

    def items_for(self, prompt: str) -> list[Any]:
        match = CODE.search(prompt)
        if match is None:
            return list(self.directory.provinces())
        region = self.directory.find_region(match.group(1))
        if region is None:
            return []
        if "医院" in prompt:
            return self.directory.hospitals(region)
        return list(self.directory.children(region))

    def answer(self, prompt: str, attempt: int) -> str:
        items = self.items_for(prompt)
        truncated = _json(items)[:-20] if items else "[{"
        style = self.style
        if style == "fenced":
            return f"```json\n{_json(items)}\n```"
        if style == "prose":
            return f"好的，以下是结果 [共 {len(items)} 项]：\n{_json(items)}\n如需更多信息请告诉我。"
        if style == "always_invalid" or (style == "invalid_then_valid" and attempt == 1):
            return f"```json\n{truncated}"
        if style == "messy":
            return _json(_messy(items))
        if style == "nothing_valid":
            return _json([{"code": item.get("code")} for item in items] or [{"code": "1"}])
        return _json(items)


class _ChatHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: FakeChatServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced."""

    def do_POST(self) -> None:
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
            self._send(401, {"error": {"message": "invalid api key"}})
            return
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": {"message": "not found"}})
            return
        attempt = server.attempt(body)
        self._reply(body["messages"][-1]["content"], attempt)

    def _reply(self, prompt: str, attempt: int) -> None:
        server = self.server
        if server.style == "unavailable_then_valid" and attempt == 1:
            self._send(503, {"error": {"message": "overloaded"}})
            return
        if server.style == "not_a_completion":
            self._send(200, {"object": "error", "message": "the proxy ate it"})
            return
        if server.style == "slow_then_valid" and attempt == 1:
            server.released.wait(server.slow_seconds)
        content = server.answer(prompt, attempt)
        self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out first (slow style)


class RunningChat(BackgroundServer[FakeChatServer]):
    """A FakeChatServer on a background thread; `.url` is the base URL the client takes."""

    def __init__(self, server: FakeChatServer) -> None:
        super().__init__(server, poll_interval=0.05)
        self.url = f"{self.base_url}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self.server.lock:
            return list(self.server.requests)

    def stop(self) -> None:
        self.server.released.set()
        super().stop()


def start_chat_server(
    directory: SampleDirectory, style: str = "plain", api_key: str | None = None, slow_seconds: float = 5.0
) -> RunningChat:
    return RunningChat(FakeChatServer(directory, style, api_key, slow_seconds))


def walk(
    upstream: Upstream, only: Iterable[str] | None = None, workers: int = 8
) -> tuple[list[Region], list[Hospital]]:
    """Every region (depth first, in the upstream's order) and every hospital of the leaves.

    Provinces are walked on a thread pool, the way a refresh shares one client between threads.
    `only` restricts the walk to some province codes, to keep slow paths short.
    """
    wanted = set(only) if only is not None else None
    provinces = [p for p in upstream.provinces() if wanted is None or p["code"] in wanted]

    def subtree(region: Region) -> tuple[list[Region], list[Hospital]]:
        children = upstream.children(region)
        if not children:
            return [region], upstream.hospitals(region)
        regions, hospitals = [region], []
        for child in children:
            more_regions, more_hospitals = subtree(child)
            regions += more_regions
            hospitals += more_hospitals
        return regions, hospitals

    all_regions: list[Region] = []
    all_hospitals: list[Hospital] = []
    with ThreadPoolExecutor(workers) as pool:
        for regions, hospitals in pool.map(subtree, provinces):
            all_regions += regions
            all_hospitals += hospitals
    return all_regions, all_hospitals
