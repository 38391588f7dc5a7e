"""`refreshq demo` stopped half-way (SIGTERM from a supervisor, Ctrl-C at a terminal): its task ends
CANCELLED with nothing left queued for a later worker, its workers and their work-horses are gone."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import redis

from jobs import queues
from jobs.config import Settings
from jobs.refresh.manager import SyncTaskManager
from tests.support.helpers import REFRESHQ, alive, horse_pids, wait_until


def _busy_workers(demo: subprocess.Popen[bytes]) -> tuple[list[int], list[int]] | None:
    workers = horse_pids(demo.pid)  # the demo's children are its workers
    horses = [h for w in workers for h in horse_pids(w)]
    return (workers, horses) if len(workers) == 2 and len(horses) == 2 else None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.slow
def test_a_stopped_demo_cancels_its_task_and_leaves_no_worker(
    sig: signal.Signals, conn: redis.Redis, env: dict[str, str], tmp_path: Path
) -> None:
    out, err = tmp_path / "demo.out", tmp_path / "demo.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        # A session of its own, as a shell's job: a Ctrl-C goes to its whole process group.
        demo = subprocess.Popen([REFRESHQ, "demo"], env=env, stdout=stdout, stderr=stderr, start_new_session=True)
    seen: list[int] = []
    try:
        workers, horses = wait_until(lambda: _busy_workers(demo), 90, 0.05, "both workers to run a job")
        seen = workers + horses
        manager = SyncTaskManager(Settings.from_env(env), conn)
        task_id = manager.list_tasks()["items"][0]["task_id"]
        if sig == signal.SIGINT:
            os.killpg(demo.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        else:
            demo.send_signal(signal.SIGTERM)
        code = demo.wait(timeout=60)
    finally:
        for pid in [demo.pid, *seen]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    messages = err.read_text()
    assert code == 128 + sig, messages
    assert f"cancelling task {task_id}" in messages
    assert f"task {task_id} CANCELLED" in messages
    assert "workers stopped" in messages
    assert [pid for pid in seen if alive(pid)] == [], "a worker or work-horse outlived the demo"
    assert manager.get_task_status(task_id)["status"] == "CANCELLED"
    assert queues.queue(conn, queues.REFRESH).count == 0  # nothing a later worker would resume
    # The workers unregistered: they stopped, not died (their logs say how they ended if one did not).
    logs = "".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
                   for log in sorted((Settings.from_env(env).server.data_dir / "logs").glob("demo-worker-*.log")))
    assert conn.smembers("rq:workers") == set(), messages + logs
