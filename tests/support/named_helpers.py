"""Helpers of the named-task tests: an environment listing the test tasks, draining all queues."""

from __future__ import annotations

import os

import pytest
import redis

from jobs import queues
from jobs.config import Settings
from jobs.named.catalog import TaskCatalog, configured_tasks
from tests.support.helpers import REPO, drain
from tests.support.named_task_functions import TRACE

TASK_MODULES = "jobs.named.builtin,tests.support.named_task_functions"


def named_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """`env` plus REFRESHQ_TASK_MODULES with the test tasks (in os.environ too: forked work-horses read it)."""
    monkeypatch.setenv("REFRESHQ_TASK_MODULES", TASK_MODULES)
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # `refreshq` subprocesses import the test tasks too
    return dict(os.environ)


def registry() -> TaskCatalog:
    return configured_tasks(Settings.from_env())


def drain_all(conn: redis.Redis) -> None:
    drain(conn, queues.ALL_QUEUES)


def trace(conn: redis.Redis) -> list[str]:
    return [item.decode() for item in conn.lrange(TRACE, 0, -1)]
