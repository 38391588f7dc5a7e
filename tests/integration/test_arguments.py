"""Named-task arguments are checked against the function's annotations when enqueued, on every path in:
delay(), signatures for chains and batches, schedules, the CLI; a refused call stores nothing."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, Optional, Union

import pytest
import redis

from jobs.errors import ConfigError, TaskArgumentsError
from jobs.named import arguments, runs, schedules
from jobs.named.catalog import TaskCatalog
from jobs.named.definitions import ScheduleSpec, definition_of
from jobs.named.workflows import Signature, batch, chain
from tests.support import named_task_functions as f
from tests.support.helpers import run_cli, stored_keys
from tests.support.named_helpers import drain_all, registry

GOOD: dict[str, Any] = {"count": 3, "ratio": 0.5, "label": None, "flags": [True, False], "weights": {"a": 1, "b": 2.5}}


@pytest.mark.parametrize(("change", "problem"), [
    ({"count": "3"}, "count: expected int, got '3' (str)"),
    ({"count": True}, "count: expected int, got True (bool)"),
    ({"count": 2.5}, "count: expected int, got 2.5 (float)"),
    ({"ratio": "abc"}, "ratio: expected float, got 'abc' (str)"),
    ({"ratio": False}, "ratio: expected float, got False (bool)"),
    ({"label": 7}, "label: expected str, got 7 (int)"),
    ({"flags": "yes"}, "flags: expected an array, got 'yes' (str)"),
    ({"flags": [True, 1]}, "flags[1]: expected bool, got 1 (int)"),
    ({"weights": [1]}, "weights: expected an object, got [1] (array)"),
    ({"weights": {"a": "x"}}, "weights['a']: expected float, got 'x' (str)"),
    ({"mode": "medium"}, "mode: expected one of 'fast', 'slow', got 'medium'"),
    ({"surprise": 1}, "surprise: expected str, got 1 (int)"),  # **more: str
])
def test_a_mismatch_is_refused_naming_the_parameter(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(TaskArgumentsError) as err:
        runs.check_arguments(f.typed, [], {**GOOD, **change})
    assert str(err.value).startswith("arguments do not fit task t-typed(")
    assert str(err.value).endswith(f": {problem}")


def test_what_fits_is_accepted_as_the_worker_will_see_it() -> None:
    plain = runs.check_arguments(f.typed, [1, 2, "x", [], {}, "slow", "object", 4, 5], {"note": "n"})
    assert plain == ([1, 2, "x", [], {}, "slow", "object", 4, 5], {"note": "n"})
    # Unannotated takes anything JSON can carry; an int is a JSON number, so it fits float.
    assert runs.check_arguments(f.typed, [], {**GOOD, "ratio": 1, "anything": {"x": [1, None]}})
    with pytest.raises(TaskArgumentsError, match=r"rest\[1\]: expected int, got 'b' \(str\)"):
        runs.check_arguments(f.typed, [1, 2.0, None, [], {}, "fast", None, 3, "b"], {})


def test_the_checker_on_every_supported_annotation() -> None:
    fits = [
        (None, type(None)), (None, None), ("a", Optional[str]), (1, Union[int, str]), ("x", int | str),  # noqa: UP007, UP045
        ([1, "a"], tuple[int, str]), ([1, 2, 3], tuple[int, ...]), ([1], Sequence[int]), ({"k": 1}, Mapping[str, int]),
        ({"k": [1]}, dict[str, list[int]]), ([], list), ({}, dict), (3, Literal[3]), (5, Any), ("t", object),
        ("2026-01-01", datetime),  # not a JSON type: nothing JSON sends fits it better, so it is not refused
    ]
    for value, annotation in fits:
        assert arguments.mismatch(value, annotation) is None, (value, annotation)
    refused = [
        (0, type(None), "expected null"), (2.5, int | str, "expected int or str, got 2.5"),
        ([1], tuple[int, str], "expected an array of 2 items, got 1"), ({"k": "v"}, Mapping[str, int], "['k']"),
        (True, Literal[1], "expected one of 1, got True"), ("1", Sequence[int], "expected an array"),
    ]
    for value, annotation, problem in refused:
        assert problem in (arguments.mismatch(value, annotation) or ""), (value, annotation)


def test_an_unresolvable_annotation_counts_as_unannotated() -> None:
    def task(a: NoSuchType, b: int) -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    definition = definition_of(task, "t-unresolvable")
    assert runs.check_arguments(definition, ["anything", 1], {}) == (["anything", 1], {})
    with pytest.raises(TaskArgumentsError, match="b: expected int"):
        runs.check_arguments(definition, ["anything", "1"], {})


def test_every_path_in_refuses_them_and_stores_nothing(conn: redis.Redis, tenv: dict[str, str]) -> None:
    before = stored_keys(conn)
    bad = {**GOOD, "count": "3"}
    with pytest.raises(TaskArgumentsError, match="count: expected int"):
        f.typed.delay(**bad)
    with pytest.raises(TaskArgumentsError, match="count: expected int"):
        f.typed.s(**bad)
    with pytest.raises(TaskArgumentsError, match="b: expected int"):
        f.add.s(1, "2")
    # Signatures made by hand (not through .s()) are checked again when the chain or batch is enqueued.
    with pytest.raises(TaskArgumentsError, match="b: expected int"):
        chain(f.step.s("first"), Signature("t-add", [1, "2"])).delay()
    with pytest.raises(TaskArgumentsError, match="label: expected str"):
        batch([f.add.s(1, 2)], callback=Signature("t-step", [3])).delay()
    with pytest.raises(TaskArgumentsError, match="a: expected int"):
        schedules.make_schedule(registry(), "t-add", interval=60, args=["1", 2])
    assert stored_keys(conn) == before


@pytest.mark.slow
def test_the_builtin_cleanup_refuses_a_string_age_and_running_statuses(conn: redis.Redis, tenv: dict[str, str]) -> None:
    before = stored_keys(conn)
    for args, problem in (
        ('{"older_than_days":"abc"}', "older_than_days: expected float, got 'abc' (str)"),
        ('{"statuses":["RUNNING"]}', "statuses[0]: expected one of 'SUCCEEDED', 'FAILED', 'CANCELLED', got 'RUNNING'"),
        ('{"statuses":"FAILED"}', "statuses: expected an array, got 'FAILED' (str)"),
        ("[1e400]", "must be JSON-serializable"),  # JSON reads it as inf, which JSON cannot carry back
        ("[" * 30_000 + "]" * 30_000, "is nested too deeply"),
    ):
        for command in (("tasks", "run", "cleanup"), ("schedule", "add", "cleanup", "--interval", "60")):
            result = run_cli(*command, "--args", args, env=tenv)
            assert result.returncode == 2, (command, args, result.stderr)
            assert "refreshq: error: " in result.stderr and problem in result.stderr, result.stderr
            assert result.stdout == ""
    assert stored_keys(conn) == before
    # The same task with fitting arguments runs.
    ok = run_cli("tasks", "run", "cleanup", "--args", '{"older_than_days": 3, "statuses": ["FAILED"]}', env=tenv)
    assert ok.returncode == 0, ok.stderr
    drain_all(conn)
    assert runs.get_result(ok.stdout.strip(), timeout=10, conn=conn)["older_than_days"] == 3


def test_a_task_whose_default_schedule_does_not_fit_it_is_not_registered() -> None:
    def task(days: int) -> None:
        pass

    with pytest.raises(ConfigError, match="default schedule: arguments do not fit the function: days: expected int"):
        TaskCatalog([definition_of(task, "t-bad-default", schedule=ScheduleSpec(interval=60, args=("3",)))])
    with pytest.raises(ConfigError, match="max instances"):
        TaskCatalog([definition_of(task, "t-bad-default", schedule=ScheduleSpec(interval=60, max_instances=10**9))])


@pytest.mark.parametrize("options", [
    {"time_limit": 10**20}, {"time_limit": 0}, {"retries": 10**6}, {"retries": 2, "retry_delay": 10**12},
    {"retries": 2, "retry_backoff": float("inf")}, {"history_days": float("nan")}, {"history_limit": 10**9},
])
def test_out_of_range_task_options_are_refused_at_registration(options: dict[str, Any]) -> None:
    def task() -> None:
        pass

    with pytest.raises(ConfigError, match=r"not valid|expected"):
        TaskCatalog([definition_of(task, "t-options", **options)])


def test_long_retry_intervals_are_capped() -> None:
    def task() -> None:
        pass

    definition = definition_of(task, "t-capped", retries=100, retry_delay=3600, retry_backoff=10)
    intervals = definition.retry.intervals()
    assert intervals[:2] == [3600, 36_000] and max(intervals) == 7 * 86_400
    assert json.dumps(intervals)  # plain ints, whatever the powers grew to
