"""The Lua scripts refreshq runs in Redis, each a read-check-write that must be atomic: one `<name>.lua` file
per script beside this module, its header naming every KEYS[n] and ARGV[n] it takes. Every key a script
touches comes in KEYS, built by jobs/keys.py (the groups each script takes are noted there, for a later
hash tag); no script builds a key name.

Composition, the only thing this loader adds to a file: a header line `-- include: a, b` prepends those
fragments (`_a.lua`, or a table of Python constants from CONSTANTS) in that order, before the script's own
text. Scripts are read and hashed once per process: `Scripts(conn)` is a view binding them to a connection
or pipeline, free to make at any call site (redis-py's Script sends EVALSHA, loading a script the server
lacks on NOSCRIPT, and a pipeline loads its scripts before it runs).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from importlib import resources
from typing import Any, cast

import redis
from redis.commands.core import Script

from jobs import keys
from jobs.scripts import gate

# Lua constants taken from Python (a fragment named here is a table of `local NAME = value` lines).
CONSTANTS: dict[str, dict[str, float | str]] = {
    "gate_constants": gate.LUA_CONSTANTS,
    "stats_fields": {"TOTAL_MISMATCHES": keys.TOTAL_MISMATCHES},
}

_INCLUDE = re.compile(r"^-- include: (.+)$", re.MULTILINE)


def _text(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


def _constants(name: str) -> str:
    return "".join(f"local {k} = {v!r}\n" for k, v in CONSTANTS[name].items())


def header(text: str) -> str:
    """The comment lines a .lua file starts with."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line)
    return "\n".join(lines)


def source(name: str) -> str:
    """The text of script `name` as Redis runs it: its fragments, then its own file."""
    own = _text(name)
    parts = []
    for included in _INCLUDE.findall(header(own)):
        for fragment in (part.strip() for part in included.split(",")):
            parts.append(_constants(fragment) if fragment in CONSTANTS else _text(f"_{fragment}"))
    return "".join(parts) + own


def script_names() -> list[str]:
    """Every script (fragments, named `_*.lua`, are not scripts)."""
    names = (entry.name for entry in resources.files(__package__).iterdir())
    return sorted(n[:-4] for n in names if n.endswith(".lua") and not n.startswith("_"))


# One Script per script per process, bound to no client: every call names the connection or pipeline it
# runs on (Scripts below), so one object serves every pool, and its SHA is computed once.
REGISTERED: dict[str, Script] = {name: Script(cast(Any, None), source(name).encode()) for name in script_names()}


class _Registered:
    """A script as an attribute of Scripts: the registered Script, run on the view's connection."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        if name not in REGISTERED:
            raise LookupError(f"jobs/scripts/{name}.lua is missing")

    def __get__(self, view: Scripts, owner: type) -> Callable[..., Any]:
        return functools.partial(REGISTERED[self.name], client=view.conn)


class Scripts:
    """The scripts on one connection or pipeline (EVALSHA, falling back to loading them after a restart).
    Making one registers nothing: the scripts were read and hashed once, at import."""

    transition = _Registered()
    start = _Registered()
    upstream_hold = _Registered()
    upstream_pace_take = _Registered()
    upstream_pace_report = _Registered()
    move_to_front = _Registered()
    progress = _Registered()
    count_once = _Registered()
    stage_leaf = _Registered()
    province_ended = _Registered()
    trim_history = _Registered()
    end_if_running = _Registered()
    note_run = _Registered()
    claim_due = _Registered()
    claim = _Registered()
    step = _Registered()
    release_claims = _Registered()
    requeue_orphaned_claims = _Registered()
    claim_unit = _Registered()
    release_job = _Registered()
    publish = _Registered()
    renew_claims = _Registered()

    def __init__(self, conn: redis.Redis | redis.client.Pipeline) -> None:
        self.conn = conn


STAGE_LEAF = source("stage_leaf")  # what tests preload (SCRIPT LOAD) to count a warm worker's commands
