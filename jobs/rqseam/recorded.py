"""RQ's bookkeeping recorded in a pipeline (jobs.rqseam.simple) as a script's KEYS and ARGV: every key the
recorded commands touch goes into KEYS, once, and each command refers to its key by its index there
(jobs/scripts/step.lua replays them), so the script names no key it did not declare.

A recorded command is encoded as its argument count, its name, the KEYS index of its key, then its other
arguments. Only commands whose one key is their first argument pass as they are; DEL, UNLINK and TOUCH of
several keys become one command per key (the same writes). RQ 2.12's recorded paths send only the commands
below (tests/test_rq_seam.py records them); one outside the table is refused with its name, never sent with
a key the script would not declare. RQ 3 (its main branch): Job.perform's PERSIST goes (see simple).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Commands whose only key is their first argument, and commands each of whose arguments is a key.
FIRST_KEY = frozenset({
    "HSET", "HMSET", "HSETNX", "HDEL", "HINCRBY", "HINCRBYFLOAT", "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT",
    "PERSIST", "ZADD", "ZREM", "ZINCRBY", "SADD", "SREM", "XADD", "XTRIM", "SET", "SETEX", "PSETEX", "INCR",
    "INCRBY", "LPUSH", "RPUSH", "LREM", "LTRIM",
})
EVERY_KEY = frozenset({"DEL", "UNLINK", "TOUCH"})

Command = tuple[tuple[Any, ...], Any]  # a redis-py pipeline's recorded command: (arguments, options)


def commands(recorder: Any) -> list[Command]:
    """The commands a recording pipeline (NonForkingWorker.recorder) holds, in order."""
    return list(recorder.command_stack)


class ScriptKeys:
    """The KEYS of one script call past its `fixed` first ones: each key once, in the order first asked for."""

    def __init__(self, fixed: int) -> None:
        self.keys: list[Any] = []
        self._index: dict[Any, int] = {}
        self._fixed = fixed

    def index(self, key: Any) -> int:
        """`key`'s index in the script's KEYS (1-based), added if new."""
        found = self._index.get(key)
        if found is None:
            self.keys.append(key)
            found = self._index[key] = self._fixed + len(self.keys)
        return found

    def encode(self, recorded: Sequence[Command]) -> list[Any]:
        """`recorded` as a script's arguments: their count, then each as (count, name, key index, arguments...)."""
        out: list[Any] = [len(recorded)]
        index, known, extend = self.index, self._index.get, out.extend
        for args, _options in recorded:
            name = args[0]
            if name in FIRST_KEY or _name(name) in FIRST_KEY:  # RQ's pipeline spells them as FIRST_KEY does
                extend((len(args), name, known(args[1]) or index(args[1])))
                extend(args[2:])
            elif _name(name) in EVERY_KEY:
                out[0] += len(args) - 2
                for key in args[1:]:
                    extend((2, name, index(key)))
            else:
                raise LookupError(f"RQ recorded {_name(name)}, which jobs/rqseam/recorded.py cannot pass to a script "
                                  "with its keys declared: add it to FIRST_KEY or EVERY_KEY if its keys are placed so")
        return out


def _name(command: Any) -> str:
    return (command.decode() if isinstance(command, bytes) else str(command)).upper()

