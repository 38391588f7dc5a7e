"""The range of rq refreshq is tested with, checked before anything of refreshq relies on RQ: when the seam is
first imported (jobs.rqseam) and when the `refreshq` command starts (cli.py). An rq outside it is refused with
one line naming the installed and the supported versions, not met as a traceback somewhere inside a worker."""

from __future__ import annotations

import re

import rq

from jobs.errors import UnsupportedRQError

# pyproject.toml declares the same range (tests/processes/test_rq_seam.py keeps the two equal).
SUPPORTED = ">=2.12,<3"
LOWEST = (2, 12)  # the first release tested
BELOW = (3,)  # the first release not tested: RQ 3 changes the signatures the seam overrides (jobs.rqseam)


def installed_version() -> str:
    """The version of the rq this process imported (not of whichever distribution pip lists)."""
    return str(getattr(rq, "__version__", "unknown"))


def release(version: str) -> tuple[int, int] | None:
    """(major, minor) of a version string; None when it does not start with them."""
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else None


def check(version: str | None = None) -> None:
    """UnsupportedRQError unless `version` (default: the installed rq's) is in the tested range."""
    version = installed_version() if version is None else version
    found = release(version)
    if found is None or not LOWEST <= found < BELOW:
        raise UnsupportedRQError(
            f"rq {version} is installed, but refreshq supports rq {SUPPORTED} (the versions it is tested with): "
            f"install one with `pip install 'rq{SUPPORTED}'`"
        )
