"""The version gate of the seam to RQ (jobs.rqseam.gate): an rq outside the tested range is refused when a
refreshq process starts, with one line naming the installed and the supported versions."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import rq

from jobs.errors import ConfigError, UnsupportedRQError
from jobs.rqseam import gate
from tests.helpers import REFRESHQ, REPO


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
