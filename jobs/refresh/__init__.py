"""The refresh engine: refresh tasks (a record each) and the RQ jobs that run them, province by province.

`jobs.refresh.plan_task` and `jobs.refresh.refresh_province` are the job functions' names of the previous
layout: RQ stores a job's function by its dotted name, so jobs queued before an upgrade still find them here.
They are resolved lazily, so importing one module of the engine does not import all of it.
"""

from __future__ import annotations

from typing import Any

# Old dotted name -> (module, function) of the code that runs it now.
_LEGACY_FUNCS = {
    "plan_task": ("jobs.refresh.plan", "plan_task"),
    "refresh_province": ("jobs.refresh.province", "refresh_province"),
}


def __getattr__(name: str) -> Any:
    if name in _LEGACY_FUNCS:
        import importlib

        module, func = _LEGACY_FUNCS[name]
        return getattr(importlib.import_module(module), func)
    raise AttributeError(f"module 'jobs.refresh' has no attribute {name!r}")
