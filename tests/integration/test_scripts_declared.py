"""Every Lua script is a .lua file of jobs/scripts whose header declares its KEYS, takes every key it touches in
KEYS (built by jobs/keys.py, never inside the script), and is registered once per process, not per call site
(issue 21: scripts that declare their keys; a script that names an undeclared key cannot run on a cluster)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.commands.core import Script

from jobs import keys
from jobs.scripts import Scripts
from tests.support.helpers import REPO

SCRIPTS_DIR = REPO / "jobs" / "scripts"
ROOT = SCRIPTS_DIR.parent.parent

# Scripts that still name keys they do not declare, each with why; one converted leaves this list (the test
# below fails until it does), and a new script can never join it silently.
UNDECLARED: dict[str, str] = {}

# Commands whose first N arguments (or all: None) are keys.
_KEY_ARGS = {"LMOVE": 2, "RPOPLPUSH": 2, "SMOVE": 2, "EXISTS": None, "DEL": None, "UNLINK": None}
_DECLARED = re.compile(r"(KEYS|ARGV)\[(\d+)(\.\.(\d*))?\]")
_USED = re.compile(r"\b(KEYS|ARGV)\[([^\]]*)\]")


def lua_files() -> list[Path]:
    return sorted(SCRIPTS_DIR.glob("*.lua"))


def script_files() -> list[Path]:
    return [p for p in lua_files() if not p.name.startswith("_")]


def header(text: str) -> str:
    return "\n".join(iter_header(text))


def iter_header(text: str) -> Iterator[str]:
    for line in text.splitlines():
        if not line.startswith("--"):
            return
        yield line


def composed(path: Path) -> str:
    """The script as Redis runs it: the fragments its `-- include:` line names (Python constants excepted),
    then its own text."""
    own = path.read_text(encoding="utf-8")
    parts = []
    for line in iter_header(own):
        if line.startswith("-- include:"):
            for name in (n.strip() for n in line.split(":", 1)[1].split(",")):
                fragment = SCRIPTS_DIR / f"_{name}.lua"
                if fragment.exists():
                    parts.append(fragment.read_text(encoding="utf-8"))
    return "".join(parts) + own


def code_and_literals(text: str) -> tuple[str, list[str]]:
    """Lua `text` without its comments (each string literal replaced by its number, quoted), and its literals."""
    code, literals, i = [], [], 0
    while i < len(text):
        c = text[i]
        if text.startswith("--", i):
            i = text.find("\n", i) if "\n" in text[i:] else len(text)
        elif c in "'\"":
            j = i + 1
            while text[j] != c:
                j += 2 if text[j] == "\\" else 1
            literals.append(text[i + 1:j])
            code.append(f"'{len(literals) - 1}'")
            i = j + 1
        else:
            code.append(c)
            i += 1
    return "".join(code), literals


def declared(text: str, family: str) -> tuple[set[int], int | None]:
    """The indexes `family` (KEYS or ARGV) the header declares, and where an open-ended range starts."""
    fixed: set[int] = set()
    open_from = None
    for name, first, dots, last in ((m[1], m[2], m[3], m[4]) for m in _DECLARED.finditer(header(text))):
        if name != family:
            continue
        if dots and not last:
            open_from = int(first) if open_from is None else min(open_from, int(first))
        else:
            fixed.update(range(int(first), int(last or first) + 1))
    return fixed, open_from


def call_arguments(code: str) -> Iterator[list[str]]:
    """The top-level arguments of every redis.call / redis.pcall in `code`."""
    for match in re.finditer(r"redis\.p?call\(", code):
        depth, start, args, i = 1, match.end(), [], match.end()
        while depth:
            c = code[i]
            if c in "({":
                depth += 1
            elif c in ")}":
                depth -= 1
            if (c == "," and depth == 1) or depth == 0:
                args.append(code[start:i].strip())
                start = i + 1
            i += 1
        yield args


def key_prefix_pieces() -> set[str]:
    """The literal parts of every key jobs/keys.py builds (prefix off), as a script would have to spell them."""
    built = [value for name, value in vars(keys).items()
             if name.isupper() and isinstance(value, str) and value.startswith((keys.PREFIX, "rq:"))]
    for name, func in vars(keys).items():
        if inspect.isfunction(func) and func.__module__ == keys.__name__ and name != "province_stat":  # a field
            params = inspect.signature(func).parameters.values()
            value = func(*["\0"] * len(params)) if all(p.annotation in ("str", "int") for p in params) else None
            if isinstance(value, str):
                built.append(value)
    pieces = {"refreshq:", "rq:"}
    for key in built:
        for piece in key.removeprefix(keys.PREFIX).split("\0"):
            if ":" in piece and len(piece.strip(":")) >= 3:
                pieces.add(piece)
    return pieces


def undeclared_keys(path: Path) -> list[str]:
    """Why `path` names a key it did not take in KEYS: a key prefix spelled in it, or a redis.call on a key
    built by concatenation, taken from ARGV, or a command taken from ARGV."""
    code, literals = code_and_literals(composed(path))
    pieces = key_prefix_pieces()
    found = [f"literal {lit!r}" for lit in literals if any(p in lit for p in pieces)]
    for args in call_arguments(code):
        if args[0].startswith("unpack("):
            found.append(f"a command from its arguments: {args[0]}")
            continue
        command = literals[int(args[0].strip("'"))].upper() if args[0].startswith("'") else args[0]
        count = _KEY_ARGS.get(command, 1)
        for key in args[1:] if count is None else args[1:1 + count]:
            if ".." in key or key.startswith("ARGV["):
                found.append(f"{command} on {key}")
    return found


@pytest.mark.parametrize("path", lua_files(), ids=lambda p: p.name)
def test_every_key_and_argument_used_is_declared_in_the_header(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    whole = composed(path)
    assert text.startswith("-- "), f"{path.name}: no header"
    if path.name.startswith("_"):
        return  # a fragment: its KEYS are declared by the scripts that include it (checked with them)
    assert header(text).startswith(f"-- {path.stem}:"), f"{path.name}: the header names the script first"
    code, _ = code_and_literals(whole)
    for family in ("KEYS", "ARGV"):
        fixed, open_from = declared(text, family)
        for index in {m[2].strip() for m in _USED.finditer(code) if m[1] == family}:
            if index.isdigit():
                ok = int(index) in fixed or (open_from is not None and int(index) >= open_from)
                assert ok, f"{path.name}: {family}[{index}] is used but not declared"
            else:
                assert open_from is not None, f"{path.name}: {family}[{index}] needs a declared {family}[n..]"


@pytest.mark.parametrize("path", script_files(), ids=lambda p: p.name)
def test_no_script_builds_a_key_name(path: Path) -> None:
    found = undeclared_keys(path)
    if path.stem in UNDECLARED:
        assert found, f"{path.name} declares its keys now: take it off UNDECLARED"
        assert "UNDECLARED" in header(path.read_text(encoding="utf-8")), f"{path.name}: say so in its header"
    else:
        assert not found, f"{path.name} builds or takes keys it does not declare: {found}"


def test_the_checks_catch_what_the_scripts_once_did(tmp_path: Path) -> None:
    """The old TRANSITION built index names from a prefix in ARGV; the old fence counted into a literal key."""
    old = tmp_path / "old.lua"
    old.write_text("-- old: x\n-- KEYS[1] = record\nlocal id = redis.call('HGET', KEYS[1], 'task_id')\n"
                   "redis.call('ZREM', ARGV[5] .. 'tasks:status:' .. ARGV[2], id)\n"
                   "redis.call('HINCRBY', 'refreshq:metrics:counters', 'stale_writes|x', 1)\n"
                   "redis.call('DEL', ARGV[3])\n", encoding="utf-8")
    found = undeclared_keys(old)
    assert any("tasks:status:" in f for f in found) and any("refreshq:metrics" in f for f in found), found
    assert any(f.startswith("ZREM on") for f in found) and "DEL on ARGV[3]" in found, found


def test_every_script_file_is_registered_and_every_fragment_used() -> None:
    registered = {name for name, value in vars(Scripts).items() if not name.startswith("_") and not callable(value)}
    assert {p.stem for p in script_files()} == registered
    included = {name.strip() for p in script_files() for line in iter_header(p.read_text(encoding="utf-8"))
                if line.startswith("-- include:") for name in line.split(":", 1)[1].split(",")}
    assert {p.stem[1:] for p in lua_files() if p.name.startswith("_")} <= included


def test_no_lua_is_left_in_python_strings() -> None:
    for path in [*ROOT.glob("jobs/**/*.py"), *ROOT.glob("workers/**/*.py")]:
        assert "redis.call(" not in path.read_text(encoding="utf-8"), f"{path}: Lua belongs in jobs/scripts/*.lua"


def test_the_package_ships_the_lua_files() -> None:
    assert '"jobs.scripts" = ["*.lua"]' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")


def test_scripts_are_registered_once_not_per_call_site(
    conn: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Making Scripts at every call site creates no Script object (no text hashed again), on any pool, and the
    server loads each script once (NOSCRIPT, then EVALSHA) however many call sites and pools run it."""
    made = []
    original = Script.__init__

    def counting(self: Script, *args: object, **kwargs: object) -> None:
        made.append(self)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Script, "__init__", counting)
    conn.script_flush()
    conn.config_resetstat()
    other = redis.Redis.from_url(redis_url)  # a second connection pool on the same server
    try:
        for i in range(20):
            client = conn if i % 2 else other
            Scripts(client).count_once(keys=[keys.task_walked("t"), keys.task_stats("t")], args=[str(i), "n", 1])
            with client.pipeline() as pipe:
                Scripts(pipe).count_once(keys=[keys.task_walked("t"), keys.task_stats("t")], args=[f"p{i}", "n", 1])
                pipe.execute()
    finally:
        other.close()
    assert made == [], f"{len(made)} Script objects made by 40 call sites"
    assert int(conn.hget(keys.task_stats("t"), "n") or 0) == 40
    loads = conn.info("commandstats").get("cmdstat_script|load", {}).get("calls", 0)
    assert loads == 1, loads
