"""The Procfile, run by honcho as a developer would from a fresh clone (embedded server, no REDIS_URL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from jobs.server import EmbeddedServer
from tests.conftest import REPO, free_port
from tests.helpers import get_when_up


def test_honcho_starts_web_worker_scheduler_and_sigterm_stops_them(short_dir: Path) -> None:
    bin_dir = Path(sys.executable).parent  # on PATH, as in a shell with the virtualenv activated
    env = {**os.environ, "REFRESHQ_DATA_DIR": str(short_dir / "h"), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("REDIS_URL", None)
    port = free_port()
    proc = subprocess.Popen(
        [str(bin_dir / "honcho"), "start", "-p", str(port)], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )
    try:
        page = get_when_up(f"http://127.0.0.1:{port}/rq/", 40, proc)
        assert page.status_code == 200
        conn = EmbeddedServer(short_dir / "h")
        assert conn.ping()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=40)
        EmbeddedServer(short_dir / "h").stop()
    for name in ("web.1", "worker.1", "scheduler.1"):
        assert f"{name} stopped (rc=0)" in out, out
    assert "scheduler: active" in out
    assert "Listening on critical, high, normal, low, refresh" in out  # routine work before refresh at first
