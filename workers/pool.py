"""`refreshq worker --processes N`: a pool of worker processes on one machine, steered through Redis.

Built on RQ's WorkerPool (its worker table, reaping, start and stop of processes), departing from it where
refreshq needs more (through the hooks of jobs.rqseam.pool):
- the size is not fixed: the wanted size lives in Redis (keys.pool_wanted, set by `refreshq workers
  scale` from any machine) and outlives the pool; each tick the pool converges to it, starting processes
  or draining the idle ones first (a busy one only when no idle one is left, and it finishes its job);
- a worker is built by refreshq (workers.base.build, forking or fast), registered in RQ's registry as
  any worker, named `<pool>.<8 hex>`, without RQ's scheduler (refreshq's scheduler process does that);
- the tick waits on the pool's command channel (drain, stop, scale) instead of sleeping, so a command
  acts at once, and reaping does not block (RQ joins each process for 0.1 s per tick);
- one pool per name (an owner-checked lock), and a record listing its workers for `workers list`;
- the signals RQ's pool leaves open between a fork and the worker's own handlers are blocked, so a stop
  in that instant cannot run the pool's handler inside the new worker (or be lost).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing import get_context
from typing import Any
from uuid import uuid4

import redis
from redis.client import PubSub
from rq.worker_pool import WorkerData

from jobs import keys, shutdown
from jobs.config import Settings
from jobs.errors import ConfigError
from jobs.lock import OwnedLock
from jobs.redis_values import as_text
from jobs.rqseam.pool import PoolSeam
from jobs.workforce import POOL_DRAIN, POOL_RECORD_TTL, POOL_STOP
from workers.drain import DRAIN_SIGNAL

log = logging.getLogger("refreshq.pool")

TICK = 0.5  # seconds between checks of the processes when no command arrives
LOCK_TTL_MS = 15_000
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, DRAIN_SIGNAL}


@dataclass(frozen=True)
class PoolSpec:
    name: str
    queues: tuple[str, ...]
    processes: int
    fast: bool
    settings: Settings
    burst: bool = False


def default_pool_name(fast: bool) -> str:
    return f"{socket.gethostname()}-{'fast' if fast else 'worker'}"


def run_pool_worker(spec: PoolSpec, name: str) -> None:
    """The body of one process of the pool (forked, its stop signals still blocked)."""
    from jobs.connection import connect
    from workers import FORKING
    from workers.base import Mode, build
    from workers.fast import FAST

    shutdown.requested.clear()
    shutdown.install_stop_handlers()
    signal.signal(DRAIN_SIGNAL, lambda _s, _f: shutdown.requested.set())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    shutdown.die_with_parent(signal.SIGTERM)  # the pool gone, even killed: a warm shutdown, not an orphan
    conn = connect(spec.settings, patient=True)
    mode: Mode[Any] = FAST if spec.fast else FORKING
    worker = build(mode, conn, spec.queues, name=name, settings=spec.settings, pool=spec.name)
    if shutdown.requested.is_set():
        return
    worker.work(burst=spec.burst, with_scheduler=False)


class RefreshqPool(PoolSeam):
    def __init__(self, conn: redis.Redis, spec: PoolSpec) -> None:
        super().__init__(conn, spec.queues, spec.processes)
        self.name = spec.name
        self.spec = spec
        self.leaving: set[str] = set()  # asked to drain by a scale-down
        self.draining = False
        self.started_at = datetime.now(UTC).isoformat()
        self._lock = OwnedLock(conn, keys.pool_lock(spec.name), ttl_ms=LOCK_TTL_MS)

    def spawn_worker(self) -> None:
        name = f"{self.name}.{uuid4().hex[:8]}"
        process = get_context("fork").Process(target=run_pool_worker, args=(self.spec, name), name=name)
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        self.worker_dict[name] = WorkerData(name=name, pid=process.pid or 0, process=process)
        log.info("Pool %s: started worker %s (pid %s)", self.name, name, process.pid)

    def reap(self) -> None:
        for data in list(self.worker_dict.values()):
            if not data.process.is_alive():  # waitpid(WNOHANG): no wait, unlike RQ's join(0.1)
                log.info("Pool %s: worker %s (pid %s) exited with %s", self.name, data.name, data.pid,
                         data.process.exitcode)
                self.handle_dead_worker(data)
                self.leaving.discard(data.name)

    def wanted(self) -> int:
        """The wanted size from Redis; the pool's own start size when none is stored."""
        raw = self.connection.get(keys.pool_wanted(self.name))
        if raw is None:
            self.connection.set(keys.pool_wanted(self.name), self.num_workers)
            return self.num_workers
        return int(raw)

    def converge(self, respawn: bool) -> None:
        self.reap_workers()
        if not respawn or self.status == self.Status.STOPPED or self.draining:
            return
        self.num_workers = self.wanted()
        staying = [n for n in self.worker_dict if n not in self.leaving]
        for _ in range(self.num_workers - len(staying)):
            self.spawn_worker()
        if len(staying) > self.num_workers:
            self._shrink(staying, len(staying) - self.num_workers)

    def _shrink(self, staying: list[str], count: int) -> None:
        """Drain `count` workers, idle ones first (RQ's worker state; one not registered yet has no job)."""
        with self.connection.pipeline(transaction=False) as pipe:
            for name in staying:
                pipe.hget(f"rq:worker:{name}", "state")
            states = [as_text(s) if s else "" for s in pipe.execute()]
        by_idleness = sorted(zip(staying, states, strict=True), key=lambda item: item[1] == "busy")
        for name, state in by_idleness[:count]:
            log.info("Pool %s: scaling down, draining %s worker %s", self.name, state or "starting", name)
            self._signal(name, DRAIN_SIGNAL)
            self.leaving.add(name)

    def _signal(self, name: str, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.worker_dict[name].pid, sig)

    def drain_workers(self) -> None:
        log.info("Pool %s: draining %d workers", self.name, len(self.worker_dict))
        self.draining = True
        for name in list(self.worker_dict):
            self._signal(name, DRAIN_SIGNAL)

    def on_stop_request(self) -> bool:
        shutdown.requested.set()
        return bool(self.status != self.Status.STOPPED)

    def state_name(self) -> str:
        if self.status == self.Status.STOPPED:
            return "stopping"
        return "draining" if self.draining else "running"

    def publish_record(self) -> None:
        members = [{"name": n, "pid": d.pid} for n, d in self.worker_dict.items()]
        mode = "fast" if self.spec.fast else "forking"
        record: dict[Any, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "mode": mode,
                  "queues": ",".join(self.spec.queues), "wanted": self.num_workers, "workers": json.dumps(members),
                  "state": self.state_name(), "started_at": self.started_at,
                  "heartbeat": datetime.now(UTC).isoformat()}
        with self.connection.pipeline() as pipe:
            pipe.hset(keys.pool(self.name), mapping=record)
            pipe.expire(keys.pool(self.name), POOL_RECORD_TTL)
            pipe.sadd(keys.POOLS, self.name)
            pipe.execute()
        if not self._lock.acquire():
            log.warning("Pool %s: another process took this pool's lock", self.name)

    def run(self, burst: bool) -> None:
        """Run until stopped (SIGTERM, `workers stop`), drained (`workers drain`), or, in burst mode,
        until every worker has emptied its queues and exited (RQ's `start`)."""
        self._take_lock()
        stored = self.connection.get(keys.pool_wanted(self.name))
        if stored is not None and int(stored) != self.num_workers:
            log.info("Pool %s: keeping the wanted size %s stored in Redis (`refreshq workers scale`)",
                     self.name, as_text(stored))
        pubsub = self.connection.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(keys.pool_channel(self.name))
        self.status = self.Status.STARTED
        self.install_rq_signal_handlers()
        try:
            self._loop(pubsub, burst)
        finally:
            self._close(pubsub)

    def _take_lock(self) -> None:
        """The pool's lock; a pool killed outright holds it until it lapses, so wait that long first
        (a restart right after a crash succeeds) before deciding another live pool has this name."""
        deadline = time.monotonic() + LOCK_TTL_MS / 1000 + 1
        while not self._lock.acquire():
            if time.monotonic() > deadline or shutdown.requested.is_set():
                raise ConfigError(f"pool {self.name!r} is already running; give this one another --pool name")
            log.info("Pool %s: waiting for the lock of a previous process of this pool to lapse", self.name)
            time.sleep(1)

    def _loop(self, pubsub: PubSub, burst: bool) -> None:
        self.check_workers()
        while True:
            self.check_workers(respawn=not burst)
            self.publish_record()
            ending = burst or self.draining or self.status == self.Status.STOPPED
            if ending and not self.worker_dict:
                log.info("Pool %s: all workers stopped, exiting", self.name)
                return
            message = pubsub.get_message(timeout=TICK)
            if message and message.get("type") == "message":
                self._command(as_text(message["data"]))

    def _command(self, command: str) -> None:
        log.info("Pool %s: command %s", self.name, command)
        if command == POOL_DRAIN:
            self.drain_workers()
        elif command == POOL_STOP:
            self.request_stop()
        # POOL_SCALE: the next tick reads the wanted size

    def _close(self, pubsub: PubSub) -> None:
        with contextlib.suppress(redis.RedisError):
            pubsub.close()
            self.connection.delete(keys.pool(self.name))
            self._lock.release()
