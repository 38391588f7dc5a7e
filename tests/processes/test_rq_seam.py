"""The seam to RQ (jobs/rqseam/): what it relies on in RQ, checked so that an RQ release that changes any of
it fails here, with a message naming it, and nowhere in production; the rule that nothing outside the seam
overrides RQ or names RQ's private attributes; and the version gate.

When a test here fails after an rq upgrade: read what changed in RQ (the message names the method or the
attribute), adapt the seam (each module of jobs/rqseam says what RQ 3 changes in it), then the table.
"""

from __future__ import annotations

import ast
import enum
import importlib
import inspect
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import rq
from rq import Queue, SimpleWorker, Worker
from rq.executions import Execution
from rq.job import Job
from rq.utils import now
from rq.worker_pool import WorkerPool

from jobs.errors import ConfigError, UnsupportedRQError
from jobs.rqseam import forking, gate, pool, queue, recorded, simple
from tests.support.helpers import REFRESHQ, REPO
from tests.unit.test_layout import FILES, TREES

SEAM = "jobs/rqseam/"
# The seam's classes that RQ's run: each is RQ's class with the seam's overrides mixed in.
SEAM_CLASSES = (forking.ForkingWorker, simple.NonForkingWorker, pool.PoolSeam, queue.NotifyingQueue, queue.JSONJob,
                queue.JSONQueue)
# Every RQ method the seam overrides, with the parameters (names, kinds, defaults) of RQ's version it was
# written against (rq 2.12). A change here is a change of what RQ calls the seam with, or of what the seam's
# override calls on to.
OVERRIDDEN = {
    "BaseWorker.bootstrap": "(self, logging_level='INFO', date_format='%H:%M:%S', "
                            "log_format='%(asctime)s %(message)s')",
    "BaseWorker.clean_registries": "(self)",
    "BaseWorker.dequeue_job_and_maintain_ttl": "(self, timeout, max_idle_time=None)",
    "BaseWorker.get_heartbeat_ttl": "(self, job)",
    "BaseWorker.handle_job_failure": "(self, job, queue, started_job_registry=None, exc_string='')",
    "BaseWorker.handle_job_retry": "(self, job, queue, retry, started_job_registry, execution)",
    "BaseWorker.handle_job_success": "(self, job, queue, started_job_registry)",
    "BaseWorker.handle_payload": "(self, message)",
    "BaseWorker.handle_warm_shutdown_request": "(self)",
    "BaseWorker.heartbeat": "(self, timeout=None, pipeline=None)",
    "BaseWorker.horse_pid": "property",
    "BaseWorker.kill_horse": "(self, sig=Signals.SIGKILL)",
    "BaseWorker.perform_job": "(self, job, queue)",
    "BaseWorker.prepare_execution": "(self, job)",
    "BaseWorker.reorder_queues": "(self, reference_queue)",
    "BaseWorker.request_stop": "(self, signum, frame)",
    "BaseWorker.set_shutdown_requested_date": "(self)",
    "BaseWorker.setup_work_horse_signals": "(self)",
    "BaseWorker.subscribe": "(self)",
    "BaseWorker.teardown": "(self)",
    "BaseWorker.unsubscribe": "(self)",
    "BaseWorker.work": "(self, burst=False, logging_level=None, date_format='%H:%M:%S', "
                       "log_format='%(asctime)s %(message)s', max_jobs=None, max_idle_time=None, "
                       "with_scheduler=False, dequeue_strategy=DequeueStrategy.DEFAULT)",
    "Job.__init__": "(self, id=None, connection=None, serializer=None)",
    "Queue.__init__": "(self, name='default', connection=None, default_timeout=None, is_async=True, job_class=None, "
                      "serializer=None, death_penalty_class=UnixSignalDeathPenalty, **kwargs)",
    "Queue.push_job_id": "(self, job_id, pipeline=None, at_front=False)",
    "SimpleWorker.get_heartbeat_ttl": "(self, job)",
    "Worker.execute_job": "(self, job, queue)",
    "Worker.monitor_work_horse": "(self, job, queue)",
    "WorkerPool.__init__": "(self, queues, connection, num_workers=1, worker_class=Worker, "
                           "serializer=DefaultSerializer, job_class=Job, queue_class=Queue, exception_handlers=None, "
                           "*args, **kwargs)",
    "WorkerPool.check_workers": "(self, respawn=True)",
    "WorkerPool.reap_workers": "(self)",
    "WorkerPool.request_stop": "(self, signum=None, frame=None)",
    "WorkerPool.start": "(self, burst=False, logging_level='INFO')",
    "WorkerPool.start_worker": "(self, count=None, burst=True, _sleep=0, logging_level='INFO')",
}
# RQ's other methods the seam calls (RQ's bookkeeping it replays, RQ's private methods), with their parameters.
CALLED = {
    "BaseWorker._install_signal_handlers": "(self)",
    "BaseWorker._pubsub_exception_handler": "(self, exc, pubsub, pubsub_thread)",
    "BaseWorker.cleanup_execution": "(self, job, pipeline)",
    "BaseWorker.death_penalty_class": "(timeout, exception=BaseTimeoutException, **kwargs)",
    "BaseWorker.handle_exception": "(self, job, *exc_info)",
    "BaseWorker.handle_execution_ended": "(self, job, queue, heartbeat_ttl)",
    "BaseWorker.increment_successful_job_count": "(self, pipeline=None)",
    "BaseWorker.increment_total_working_time": "(self, job_execution_time, pipeline)",
    "BaseWorker.maintain_heartbeats": "(self, job)",
    "BaseWorker.set_current_job_id": "(self, job_id=None, pipeline=None)",
    "BaseWorker.set_current_job_working_time": "(self, current_job_working_time, pipeline=None)",
    "BaseWorker.set_state": "(self, state, pipeline=None)",
    "Execution.create": "(cls, job, ttl, pipeline, worker_name='')",
    "Job._execute": "(self)",
    "Job._handle_success": "(self, result_ttl, pipeline, worker_name='', execution_id=None, "
                           "execution_started_at=None, execution_ended_at=None)",
    "Job.cleanup": "(self, ttl=None, pipeline=None, remove_from_queue=True)",
    "Job.execute_failure_callback": "(self, death_penalty_class, *exc_info)",
    "Job.execute_stopped_callback": "(self, death_penalty_class)",
    "Job.execute_success_callback": "(self, death_penalty_class, result)",
    "Job.get_result_ttl": "(self, default_ttl)",
    "Job.heartbeat": "(self, timestamp, ttl, pipeline=None, xx=False)",
    "Job.prepare_for_execution": "(self, worker_name, pipeline)",
    "WorkerPool._install_signal_handlers": "(self)",
}


def _default(value: Any) -> str:
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    return repr(value)


def shape(member: Any) -> str:
    """A method's parameters as names, kinds and defaults (annotations left out); "property" for one."""
    if isinstance(member, property):
        return "property"
    out: list[str] = []
    for p in inspect.signature(member).parameters.values():
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        if p.kind is p.KEYWORD_ONLY and not any(o.startswith("*") for o in out):
            out.append("*")
        out.append(prefix + p.name + ("" if p.default is p.empty else "=" + _default(p.default)))
    return "(" + ", ".join(out) + ")"


def _is_rq(cls: type) -> bool:
    return cls.__module__ == "rq" or cls.__module__.startswith("rq.")


def _is_seam(cls: type) -> bool:
    return cls.__module__.startswith("jobs.rqseam")


def overridden() -> dict[str, Any]:
    """{"RQClass.name": RQ's member} for each member of RQ's the seam's classes override."""
    found: dict[str, Any] = {}
    for cls in SEAM_CLASSES:
        defined = {n for c in cls.__mro__ if _is_seam(c) for n in vars(c)}
        for name in defined:
            owner = next((c for c in cls.__mro__ if _is_rq(c) and name in vars(c)), None)
            if owner is not None and (not name.startswith("__") or name == "__init__"):
                found[f"{owner.__name__}.{name}"] = vars(owner)[name]
    return found


def test_every_rq_method_the_seam_overrides_is_listed_with_rqs_parameters() -> None:
    found = overridden()
    assert sorted(set(OVERRIDDEN) - set(found)) == [], "RQ no longer has these methods the seam overrides"
    assert sorted(set(found) - set(OVERRIDDEN)) == [], "the seam overrides RQ methods the table does not list"
    changed = {name: shape(member) for name, member in found.items() if shape(member) != OVERRIDDEN[name]}
    assert changed == {}, f"RQ changed the parameters of methods the seam overrides: {changed}"


def test_each_override_accepts_every_call_rqs_method_accepts() -> None:
    """RQ calls the seam's overrides as it calls its own methods (by position or by keyword)."""
    for cls in SEAM_CLASSES:
        for name in {n for c in cls.__mro__ if _is_seam(c) for n in vars(c) if not n.startswith("__")}:
            ours, theirs = getattr(cls, name), next((vars(c)[name] for c in cls.__mro__ if _is_rq(c)
                                                     and name in vars(c)), None)
            if theirs is None or isinstance(theirs, property):
                continue
            mine, rqs = inspect.signature(ours).parameters, list(inspect.signature(theirs).parameters)
            named = [n for n, p in mine.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            assert named == rqs[:len(named)] and (len(named) == len(rqs) or len(named) < len(mine)), \
                f"{cls.__name__}.{name}{shape(ours)} does not take RQ's {shape(theirs)}"


def test_the_seams_own_names_are_not_rqs() -> None:
    """A hook or accessor the seam adds must not shadow anything of RQ's (a later RQ may add the name)."""
    for cls in SEAM_CLASSES:
        rq_names = {n for c in cls.__mro__ if _is_rq(c) for n in dir(c)}
        own = {n for c in cls.__mro__ if _is_seam(c) for n in vars(c) if not n.startswith("__")}
        clash = own & rq_names - {n.split(".")[1] for n in OVERRIDDEN}
        assert clash == set(), f"{cls.__name__}: RQ defines {sorted(clash)} too"


def _rq_member(cls: type, name: str, after: type | None = None) -> tuple[str, Any] | None:
    """("RQClass.name", member) of the first definition of `name` in `cls`'s MRO (past `after`), if RQ's."""
    mro = cls.__mro__[cls.__mro__.index(after) + 1:] if after else cls.__mro__
    owner = next((c for c in mro if name in vars(c)), None)
    if owner is None or not _is_rq(owner):
        return None
    member = vars(owner)[name]
    return f"{owner.__name__}.{name}", member.__func__ if isinstance(member, classmethod | staticmethod) else member


def called() -> dict[str, Any]:
    """RQ's members the seam's classes call: on `self`, on `super()`, on a `job` and on `Execution`."""
    found: dict[str, Any] = {}
    for path in (f for f in FILES if f.startswith(SEAM)):
        for node, cls in _classes_of(path):
            for call in (n for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)):
                receiver, name = call.func.value, call.func.attr  # type: ignore[attr-defined]
                if isinstance(receiver, ast.Call) and ast.unparse(receiver.func) == "super":
                    hit = _rq_member(cls, name, after=cls)
                elif isinstance(receiver, ast.Name) and receiver.id in ("self", "job", "Execution"):
                    hit = _rq_member({"self": cls, "job": Job, "Execution": Execution}[receiver.id], name)
                else:
                    continue
                if hit is not None:
                    found[hit[0]] = hit[1]
    return found


def test_the_other_rq_methods_the_seam_calls_keep_their_parameters() -> None:
    found = {name: member for name, member in called().items() if name not in OVERRIDDEN}
    assert sorted(set(CALLED) - set(found)) == [], "RQ no longer has these methods the seam calls"
    assert sorted(set(found) - set(CALLED)) == [], "the seam calls RQ methods the table does not list"
    changed = {name: shape(member) for name, member in found.items() if shape(member) != CALLED[name]}
    assert changed == {}, f"RQ changed the parameters of methods the seam calls: {changed}"


@pytest.fixture
def fresh(conn: redis.Redis) -> Iterator[dict[str, Any]]:
    """A fresh instance of each RQ class the seam touches the private attributes of."""
    q = Queue("seam", connection=conn)
    yield {"Worker": Worker([q], connection=conn), "SimpleWorker": SimpleWorker([q], connection=conn),
           "Job": Job.create("tests.support.job_functions.add", args=(1, 2), connection=conn),
           "WorkerPool": WorkerPool(["seam"], connection=conn), "Queue": q, "rq.job": rq.job}


def rq_private_names() -> set[str]:
    """Every private name RQ defines: its private functions, methods and module globals, and the private
    attributes its classes set on their instances (`self._x = ...`)."""
    names: set[str] = set()
    for path in Path(rq.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return {n for n in names if n.startswith("_") and n[1:2].islower()}


RQ_PRIVATE = rq_private_names()


def private_uses(path: str) -> Iterator[tuple[int, str, str]]:
    """(line, receiver, name) of each RQ private name `path` uses: an attribute, an import or a getattr."""
    for node in ast.walk(TREES[path]):
        if isinstance(node, ast.Attribute) and node.attr in RQ_PRIVATE:
            yield node.lineno, ast.unparse(node.value), node.attr
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "rq":
            yield from ((node.lineno, node.module or "", a.name) for a in node.names if a.name.startswith("_"))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr")
              and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and node.args[1].value in RQ_PRIVATE):
            yield node.lineno, ast.unparse(node.args[0]), str(node.args[1].value)


def _module(path: str) -> Any:
    return importlib.import_module(path[:-3].replace("/", ".").removesuffix(".__init__"))


def _classes_of(path: str) -> Iterator[tuple[ast.ClassDef, type]]:
    module = None
    for node in ast.walk(TREES[path]):
        if isinstance(node, ast.ClassDef):
            module = module or _module(path)
            cls = getattr(module, node.name, None)
            if isinstance(cls, type):
                yield node, cls


def _on_own_object(path: str, line: int, receiver: str) -> bool:
    """`self._x` inside a class that is not RQ's: refreshq's own private attribute."""
    if receiver not in ("self", "cls"):
        return False
    for node, cls in _classes_of(path):
        if node.lineno <= line <= (node.end_lineno or node.lineno):
            return not any(_is_rq(c) for c in cls.__mro__)
    return False


def test_no_rq_private_name_is_used_outside_the_seam() -> None:
    assert {"_job_stack", "_stop_requested", "_ordered_queues", "_horse_pid", "_status", "_result",
            "_handle_success", "_install_signal_handlers", "_handle_retry_result"} <= RQ_PRIVATE
    used = [f"{path}:{line}: {receiver}.{name}" for path in FILES if not path.startswith(SEAM)
            for line, receiver, name in private_uses(path) if not _on_own_object(path, line, receiver)]
    assert used == [], "RQ's private names outside jobs/rqseam (use the seam's accessors and hooks)"


def test_the_seam_sees_the_private_names_it_uses(fresh: dict[str, Any]) -> None:
    """Each private attribute of RQ's the seam touches is on a fresh RQ object (or in rq.job), and the scan
    of the seam finds them (a scan that finds nothing could not fail)."""
    used = {name for path in FILES if path.startswith(SEAM) for _line, _receiver, name in private_uses(path)}
    assert {"_job_stack", "_stop_requested", "_ordered_queues", "_horse_pid", "_stopped_job_id", "_status",
            "_result", "_execute", "_handle_success", "_install_signal_handlers", "_shutdown_requested_date",
            "_pubsub_exception_handler"} <= used
    missing = sorted(n for n in used if not any(hasattr(o, n) for o in fresh.values()))
    assert missing == [], f"RQ no longer has these private attributes the seam uses: {missing}"
    assert callable(rq.job._job_stack.push) and callable(rq.job._job_stack.pop)


def test_no_class_outside_the_seam_overrides_rq() -> None:
    """A refreshq class built on RQ's implements the seam's hooks; what it defines is never RQ's (a
    constructor may extend the seam's, which calls RQ's)."""
    broken: list[str] = []
    for path in FILES:
        if path.startswith(SEAM) or path.endswith("__main__.py"):
            continue
        for _node, cls in _classes_of(path):
            rq_names = {n for c in cls.__mro__ if _is_rq(c) for n in vars(c)}
            seam_init = any(_is_seam(c) and "__init__" in vars(c) for c in cls.__mro__)
            own = {n for n in vars(cls) if not n.startswith("__") or (n == "__init__" and not seam_init)}
            broken += [f"{path}: {cls.__name__}.{n}" for n in sorted(own & rq_names)]
    assert broken == [], "overrides of RQ outside jobs/rqseam (implement a seam hook instead)"


def test_every_push_of_a_job_goes_through_the_push_hook(conn: redis.Redis) -> None:
    """NotifyingQueue relies on RQ pushing every job id through Queue.push_job_id."""
    pushed: list[str] = []

    class Counting(queue.NotifyingQueue):
        def pushed(self, pipeline: Any) -> None:
            pushed.append(self.name)

    q = Counting("seam", connection=conn)
    first = q.enqueue("tests.support.job_functions.add", 1, 2)
    q.enqueue("tests.support.job_functions.add", 1, 2, depends_on=first)  # deferred: not pushed yet
    q.enqueue_job(first, at_front=True)
    q.enqueue_dependents(first)
    assert pushed == ["seam"] * 3


@pytest.mark.parametrize("result_ttl", [500, -1])
def test_rqs_recorded_bookkeeping_reaches_step_with_every_key_declared(conn: redis.Redis, result_ttl: int) -> None:
    """Each command RQ's recorded bookkeeping sends (a job's start, its success with its result kept a while or
    forever, the idle state after) is one jobs.rqseam.recorded passes to step.lua with exactly the keys the
    server says it touches (COMMAND GETKEYS) in KEYS; a command it cannot place is refused by name."""
    q = Queue("seam", connection=conn)
    job = q.enqueue("tests.support.job_functions.add", 1, 2, result_ttl=result_ttl)
    worker = simple.NonForkingWorker([q], connection=conn)
    started = recorded.commands(worker.record_start(job))
    job.started_at = job.ended_at = now()
    ended = recorded.commands(worker.record_success(job, result_ttl))
    assert len(started) > 5 and len(ended) > 10
    for args, options in started + ended:
        table = recorded.ScriptKeys(5)
        encoded = table.encode([(args, options)])
        touched = [str(key) for key in conn.command_getkeys(*args)]
        assert [str(key) for key in table.keys] == touched, args
        assert encoded[2 + 1] == 6 and str(args[1]) not in map(str, encoded[1:]), args  # the key, by index
    with pytest.raises(LookupError, match="SMOVE"):
        recorded.ScriptKeys(0).encode([(("SMOVE", "a", "b", "m"), {})])


@pytest.mark.parametrize("version", ["2.12.0", "2.12.5", "2.13.0rc1", "2.99.1"])
def test_the_gate_lets_the_tested_range_through(version: str) -> None:
    gate.check(version)


@pytest.mark.parametrize("version", ["2.11.9", "3.0.0", "3.0.0b1", "1.16.2", "10.0", "unknown", ""])
def test_the_gate_refuses_an_rq_outside_the_range(version: str) -> None:
    with pytest.raises(UnsupportedRQError) as refused:
        gate.check(version)
    assert isinstance(refused.value, ConfigError)  # exits 2, as every configuration error
    assert f"rq {version} is installed" in str(refused.value) and "rq >=2.12,<3" in str(refused.value)


def test_the_gate_reads_the_rq_this_process_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    gate.check()
    monkeypatch.setattr(rq, "__version__", "3.0.0")
    with pytest.raises(UnsupportedRQError, match=r"rq 3\.0\.0 is installed"):
        gate.check()


def test_the_gate_checks_the_range_pyproject_declares() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    rq_pin = [d for d in declared if d.split(">")[0].split("<")[0].split("=")[0].strip() == "rq"]
    assert rq_pin == [f"rq{gate.SUPPORTED}"]


def _with_rq(version: str, *command: str) -> subprocess.CompletedProcess[str]:
    """Run `command` in a process whose imported rq says it is `version` (a sitecustomize sets
    rq.__version__ before anything else runs); no other rq is installed."""
    fake = Path(os.environ.get("TMPDIR", "/tmp")) / f"refreshq-fake-rq-{os.getpid()}"
    fake.mkdir(exist_ok=True)
    (fake / "sitecustomize.py").write_text(f"import rq\nrq.__version__ = {version!r}\n")
    env = {**os.environ, "PYTHONPATH": str(fake), "REDIS_URL": "redis://127.0.0.1:1"}
    return subprocess.run(list(command), env=env, capture_output=True, text=True, timeout=60, cwd=REPO)


@pytest.mark.parametrize("command", [("worker", "--burst"), ("worker", "--fast", "--processes", "2"), ("scheduler",),
                                     ("list",)])
def test_a_refreshq_process_refuses_an_rq_outside_the_range_at_start(command: tuple[str, ...]) -> None:
    result = _with_rq("3.0.0", REFRESHQ, *command)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "refreshq: error: rq 3.0.0 is installed, but refreshq supports rq >=2.12,<3 (the versions it is tested "
        "with): install one with `pip install 'rq>=2.12,<3'`"]
    assert result.stdout == ""


def test_a_library_import_of_the_workers_refuses_it_too() -> None:
    result = _with_rq("3.1.0", sys.executable, "-c", "import workers")
    assert result.returncode == 1
    assert "UnsupportedRQError: rq 3.1.0 is installed, but refreshq supports rq >=2.12,<3" in result.stderr
    assert _with_rq(rq.__version__, sys.executable, "-c", "import workers").returncode == 0
