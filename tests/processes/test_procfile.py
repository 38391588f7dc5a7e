"""The Procfile, run by honcho as a developer would from a fresh clone (embedded server, no REDIS_URL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from jobs.embedded_server import EmbeddedServer
from tests.support.helpers import REPO, free_port, get_when_up, log_lines, wait_until


def test_honcho_starts_web_worker_scheduler_and_sigterm_stops_them(short_dir: Path) -> None:
    bin_dir = Path(sys.executable).parent  # on PATH, as in a shell with the virtualenv activated
    env = {**os.environ, "REFRESHQ_DATA_DIR": str(short_dir / "h"), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("REDIS_URL", None)
    port = free_port()
    log = short_dir / "honcho.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(bin_dir / "honcho"), "start", "-p", str(port)], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        page = get_when_up(f"http://127.0.0.1:{port}/rq/", 40, proc)
        assert page.status_code == 200
        assert EmbeddedServer(short_dir / "h").ping()
        # All three are up: the worker listens (routine work before refresh at first), the scheduler is active.
        wait_until(lambda: log_lines(log, "Listening on critical, high, normal, low, refresh"), 40,
                   what="the worker to listen")
        wait_until(lambda: log_lines(log, "scheduler: active"), 40, what="the scheduler to be active")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=40)
        EmbeddedServer(short_dir / "h").stop()
    text = log.read_text(errors="replace")
    for name in ("web.1", "worker.1", "scheduler.1"):
        assert f"{name} stopped (rc=0)" in text, text
