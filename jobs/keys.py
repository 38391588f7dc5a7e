"""Every Redis key refreshq writes, in one place, so the whole data model is visible at once.

RQ's own keys (`rq:*`) belong to RQ; refreshq's live under `refreshq:`.
"""

from __future__ import annotations

PREFIX = "refreshq:"

# Processes
SCHEDULER_LOCK = PREFIX + "scheduler:lock"          # STRING owner token, PX expiry (owner-checked)
SCHEDULER_HEARTBEAT = PREFIX + "scheduler:beat"     # STRING ISO time of the active scheduler's last tick

# Task records and their indexes
TASKS_BY_CREATED = PREFIX + "tasks:created"         # ZSET task_id -> created_at (epoch)
TASKS_BY_UPDATED = PREFIX + "tasks:updated"         # ZSET task_id -> updated_at (epoch)


def task(task_id: str) -> str:
    """HASH: the task record (status dict fields, flat; nested values as JSON)."""
    return f"{PREFIX}task:{task_id}"


def tasks_with_status(status: str) -> str:
    """ZSET task_id -> created_at, one per status, for filtered listing."""
    return f"{PREFIX}tasks:status:{status}"


def task_stats(task_id: str) -> str:
    """HASH of integer counters (regions walked, leaves done, hospitals found, totals)."""
    return f"{PREFIX}task:{task_id}:stats"


def task_cancel(task_id: str) -> str:
    """STRING flag: present means the task was asked to stop."""
    return f"{PREFIX}task:{task_id}:cancel"


def task_provinces_done(task_id: str) -> str:
    """SET of province codes whose part of the task is published."""
    return f"{PREFIX}task:{task_id}:provinces:done"


def task_provinces_failed(task_id: str) -> str:
    """HASH province code -> error text, for provinces whose part ended in failure."""
    return f"{PREFIX}task:{task_id}:provinces:failed"


def task_province_progress(task_id: str) -> str:
    """HASH province code -> JSON {name, leaves_total, leaves_done, hospitals}: the per-province bars."""
    return f"{PREFIX}task:{task_id}:provinces:progress"


def task_failed_regions(task_id: str) -> str:
    """HASH region code -> JSON {name, level, error}: regions the upstream refused for good."""
    return f"{PREFIX}task:{task_id}:regions:failed"


def checkpoint_leaves(task_id: str, province: str) -> str:
    """SET of leaf codes of a province already fetched and staged: the checkpoint."""
    return f"{PREFIX}task:{task_id}:ckpt:{province}"


def province_plan(task_id: str, province: str) -> str:
    """HASH leaf code -> JSON leaf descriptor: the walked tree of a province, kept for resumes."""
    return f"{PREFIX}task:{task_id}:plan:{province}"


def task_keys_pattern(task_id: str) -> str:
    """Pattern matching every per-task key, for cleanup."""
    return f"{PREFIX}task:{task_id}:*"


# Published data: versioned per province; a version is the id of the task that wrote it.
PUBLISHED = PREFIX + "data:published"               # HASH province code -> version
PUBLISHED_META = PREFIX + "data:meta"               # HASH province code -> JSON {name, records, published_at}


def data_leaf(province: str, version: str, leaf: str) -> str:
    """HASH hospital id -> hospital JSON, the records of one leaf region in one version."""
    return f"{PREFIX}data:{province}@{version}:leaf:{leaf}"


def data_leaves(province: str, version: str) -> str:
    """HASH leaf code -> JSON leaf descriptor (name, level, city), the leaves of one version."""
    return f"{PREFIX}data:{province}@{version}:leaves"


def data_version_pattern(province: str, version: str) -> str:
    """Pattern matching every key of one version of a province."""
    return f"{PREFIX}data:{province}@{version}:*"


# Upstream-derived caches
UPSTREAM_PROVINCES = PREFIX + "upstream:provinces"  # STRING JSON list of provinces, short TTL


def job_heartbeat(job_id: str) -> str:
    """STRING with a short TTL, refreshed by a running refresh job."""
    return f"{PREFIX}job:{job_id}:alive"
