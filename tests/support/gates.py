"""A fixture for modules whose tests open upstream gates (jobs.limits.UpstreamGate) in the test process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from jobs.limits import UpstreamGate


@pytest.fixture(autouse=True)
def close_every_gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A gate left open keeps renewing its lease into the next test's database: close them all. Autouse in
    every module that imports it."""
    opened: list[UpstreamGate] = []
    original = UpstreamGate.__init__

    def tracked(self: UpstreamGate, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(UpstreamGate, "__init__", tracked)
    yield
    for gate in opened:
        gate.close()
