"""The error tree is grouped by how errors are handled: every refreshq error descends from exactly one handling
base, the CLI and the API each map every base in one table, and one kind of error gets one answer wherever it
comes from (an unknown schedule and an unknown refresh: the same exit code, both 404)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys

import pytest
import redis

import cli
import jobs
import web
from jobs import errors
from jobs.errors import HANDLING_BASES, LimitExceededError, RefreshqError
from tests.support.api_helpers import Api, is_problem, make_api
from tests.support.helpers import run_cli, stored_keys
from web.api.problems import STATUS_OF, BadQuery, status_of

UNKNOWN_REFRESH = "task_20990101_000000_ffffff"
# A base's status may be refined for one subclass, in the same table: these and no others.
REFINED = {BadQuery: 400, LimitExceededError: 429}


def _every_error() -> list[type[RefreshqError]]:
    """Every RefreshqError subclass the product defines, wherever (every module of its packages imported)."""
    for package in (jobs, web):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(module.name)
    found: list[type[RefreshqError]] = []
    pending = [RefreshqError]
    while pending:
        for child in pending.pop().__subclasses__():
            if child not in found and not child.__module__.startswith("tests"):
                found.append(child)
                pending.append(child)
    return found


def _instance(kind: type[RefreshqError]) -> RefreshqError:
    return kind("boom")


def test_every_error_descends_from_exactly_one_handling_base() -> None:
    every = _every_error()
    defined_in_errors = {c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, RefreshqError)}
    assert defined_in_errors - {RefreshqError} <= set(every)
    assert BadQuery in every  # defined outside jobs/errors.py, found all the same
    for kind in every:
        bases = [base for base in HANDLING_BASES if issubclass(kind, base)]
        assert len(bases) == 1, (kind.__name__, [b.__name__ for b in bases])
        assert (kind.__doc__ or "").startswith("Raised when"), kind.__name__
    # The names callers and tests import stay importable, ServerUnreachableError now an unavailable server's.
    assert issubclass(errors.ServerUnreachableError, errors.UnavailableError)
    assert not issubclass(errors.ServerUnreachableError, errors.ConfigError)
    assert issubclass(errors.ServerRefusedError, errors.ConfigError)  # credentials or a port to fix: not "try later"
    for name in ("TaskNotFoundError", "UnknownTaskError", "ScheduleNotFoundError", "WorkflowNotFoundError",
                 "TokenNotFoundError"):
        assert issubclass(getattr(errors, name), errors.NotFoundError), name
    assert issubclass(errors.WritesRefusedError, redis.ConnectionError)
    assert errors.TransientUpstreamError.retryable and not errors.PermanentUpstreamError.retryable


def test_the_cli_and_the_api_map_every_base_in_one_table() -> None:
    assert set(cli.EXIT_CODES) == set(HANDLING_BASES)
    assert {kind for kind, _ in STATUS_OF} == set(HANDLING_BASES) | set(REFINED)
    expected = {errors.NotFoundError: 404, errors.ConflictError: 409, errors.ValidationError: 422,
                errors.UnavailableError: 503, errors.UpstreamError: 502}
    for base, status in expected.items():
        assert status_of(_instance(base)) == status, base.__name__
    # One answer per base: every error gets its base's code and status (bar the refinements listed above).
    for kind in _every_error():
        base = next(b for b in HANDLING_BASES if issubclass(kind, b))
        assert cli.exit_code(_instance(kind)) == cli.EXIT_CODES[base], kind.__name__
        assert status_of(_instance(kind)) == REFINED.get(kind, status_of(_instance(base))), kind.__name__
    # A server lost half-way is handled as one unreachable at the start.
    assert cli.exit_code(redis.ConnectionError("gone")) == cli.EXIT_CODES[errors.UnavailableError]
    assert cli.exit_code(errors.ServerUnreachableError("x")) == cli.exit_code(errors.WritesRefusedError("x"))


@pytest.fixture
def api(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, conn: redis.Redis, redis_url: str) -> Api:
    return make_api(env, monkeypatch, conn, redis_url)


def test_an_unknown_schedule_and_an_unknown_refresh_are_answered_alike(
    conn: redis.Redis, api: Api, tenv: dict[str, str]
) -> None:
    before = stored_keys(conn)
    schedule = run_cli("schedule", "pause", "nope", env=tenv)
    refresh = run_cli("status", UNKNOWN_REFRESH, env=tenv)
    for result, needle in ((schedule, "no schedule 'nope'"), (refresh, UNKNOWN_REFRESH)):
        assert result.returncode == cli.EXIT_CODES[errors.NotFoundError] == 2, (result.returncode, result.stderr)
        assert result.stderr.startswith("refreshq: error: ") and needle in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
    for path in (f"/refreshes/{UNKNOWN_REFRESH}", "/schedules/nope"):
        is_problem(api.get(path, "read"), 404)
    is_problem(api.post(f"/refreshes/{UNKNOWN_REFRESH}/cancel"), 404)
    is_problem(api.post("/schedules/nope/pause"), 404)
    assert stored_keys(conn) - before <= {key for key in stored_keys(conn) if b"token" in key}


@pytest.mark.parametrize("args", [
    ["cancel", UNKNOWN_REFRESH], ["resume", UNKNOWN_REFRESH], ["failed", "show", "nope"],
    ["schedule", "run-now", "nope"], ["tasks", "history", "nope"], ["failed", "retry", "nope"],
    ["tokens", "revoke", "nope"],
], ids=" ".join)
def test_every_unknown_id_or_name_exits_with_the_not_found_code(
    tenv: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    """Through the CLI's entry point in this process (the same mapping, without a process each)."""
    monkeypatch.setattr(sys, "argv", ["refreshq", *args])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    err = capsys.readouterr().err
    assert exited.value.code == cli.EXIT_CODES[errors.NotFoundError], (args, err)
    assert err.startswith("refreshq: error: ") and "Traceback" not in err, err
