"""Which upstream a task is for, and which one the deployment's workers fetch from.

The upstream belongs to the deployment: a worker configured for an upstream (REFRESHQ_UPSTREAM_URL, or
REFRESHQ_LLM_BASE_URL and REFRESHQ_LLM_MODEL) fetches from that upstream alone, with its own credentials,
and refuses the jobs of a task created for another one (`check_upstream`, a permanent failure: another
worker would refuse it again). Such a worker advertises its upstream in Redis while it lives
(`advertise`), so that creating a task for another upstream is refused before anything is enqueued
(`check_workers`). A worker configured for none serves the upstream each task names, as the built-in
sample's demos and tests do; it advertises nothing.

Two specs are the same upstream when their identities are equal (`identity`, the one place that says
so): an HTTP API by its URL, normalised (scheme and host in lower case, the scheme's default port
dropped, no trailing slash, no credentials or fragment); an LLM by its base URL, so normalised, and its
model (another model answers differently); the sample by its scale (another scale is another directory).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from jobs import keys
from jobs.config import Settings
from jobs.errors import UpstreamMismatchError
from jobs.redact import mask_url, without_credentials
from jobs.redis_values import as_texts

# The settings that configure an upstream and its credentials.
UPSTREAM_VARIABLES = ("REFRESHQ_UPSTREAM_URL", "REFRESHQ_UPSTREAM_TOKEN", "REFRESHQ_LLM_BASE_URL",
                      "REFRESHQ_LLM_API_KEY", "REFRESHQ_LLM_MODEL")
# Seconds an advertisement holds after a worker's last heartbeat renewed it, and how often a worker
# renews it (its heartbeats come every second while idle and every 5 s while a job runs).
ADVERTISEMENT_SECONDS = 60.0
ADVERTISE_EVERY = 15.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Fields of a spec that may be shown: none of them holds a secret (URLs are shown without credentials).
_SHOWN = ("kind", "url", "base_url", "model", "scale")


def normal_url(url: str) -> str:
    """`url` as two deployments of one upstream would both spell it (see the module's docstring)."""
    parts = urlsplit(without_credentials(url.strip()))
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address keeps its brackets
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), parts.query, ""))


def identity(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The secret-free identity of the upstream `spec` describes: equal identities, same data."""
    kind = spec.get("kind")
    if kind == "http" and isinstance(spec.get("url"), str):
        return {"kind": "http", "url": normal_url(spec["url"])}
    if kind == "llm" and isinstance(spec.get("base_url"), str):
        return {"kind": "llm", "base_url": normal_url(spec["base_url"]), "model": str(spec.get("model") or "").strip()}
    if kind == "sample":
        return {"kind": "sample", "scale": spec.get("scale")}
    return {"kind": kind}


def same_upstream(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return identity(a) == identity(b)


def shown(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec as the status dict, the pages and the CLI show it: no credentials, whatever was stored."""
    return {k: mask_url(without_credentials(v)) if k.endswith("url") and isinstance(v, str) else v
            for k, v in spec.items() if k in _SHOWN}


def label(spec: Mapping[str, Any]) -> str:
    """One line naming the upstream: its URL, the model and its URL, or the sample and its scale."""
    show = shown(spec)
    kind = show.get("kind")
    if kind == "http":
        return str(show.get("url"))
    if kind == "llm":
        return f"LLM {show.get('model')} at {show.get('base_url')}"
    if kind == "sample":
        scale = show.get("scale")
        return "the built-in sample" + (f" (scale {scale})" if scale is not None else "")
    return f"an unknown upstream ({kind!r})"


def configured(settings: Settings) -> dict[str, Any] | None:
    """The identity of the upstream the settings configure, or None when they configure none (the sample)."""
    if settings.upstream.kind == "http":
        return identity({"kind": "http", "url": settings.upstream.url})
    if settings.upstream.kind == "llm":
        upstream = settings.upstream
        return identity({"kind": "llm", "base_url": upstream.llm_base_url, "model": upstream.llm_model})
    return None


def _variables(kind: str | None) -> str:
    if kind == "llm":
        return "REFRESHQ_LLM_BASE_URL and REFRESHQ_LLM_MODEL (and REFRESHQ_LLM_API_KEY)"
    return "REFRESHQ_UPSTREAM_URL (and REFRESHQ_UPSTREAM_TOKEN if it takes one)"


def check_upstream(record: Mapping[str, str], settings: Settings) -> None:
    """In a refresh job, before any request: UpstreamMismatchError unless this worker may fetch the task's
    data -- it is configured for no upstream, or for the one the task was created for."""
    mine = configured(settings)
    if mine is None:
        return
    stored = json.loads(record.get("upstream") or "null")
    spec: dict[str, Any] = stored if isinstance(stored, dict) else {"kind": None}
    if identity(spec) == mine:
        return
    raise UpstreamMismatchError(
        f"refresh task {record.get('task_id')} was created for {label(spec)}, but this worker fetches from "
        f"{label(mine)}: refused, nothing fetched or published; create refreshes where {_variables(mine['kind'])} "
        f"is set as the workers have it"
    )


def advertise(conn: redis.Redis | redis.client.Pipeline, settings: Settings, now: float | None = None) -> bool:
    """Say in Redis that a live worker fetches from the upstream its settings configure (None: nothing to
    say). Written with the worker's heartbeats; lapses ADVERTISEMENT_SECONDS after the last one."""
    mine = configured(settings)
    if mine is None:
        return False
    now = time.time() if now is None else now
    member = json.dumps(mine, sort_keys=True, ensure_ascii=False)
    # Into the heartbeat's pipeline when there is one; else one round trip of its own.
    pipe = conn if isinstance(conn, redis.client.Pipeline) else conn.pipeline(transaction=False)
    pipe.zremrangebyscore(keys.UPSTREAM_WORKERS, "-inf", now)
    pipe.zadd(keys.UPSTREAM_WORKERS, {member: now + ADVERTISEMENT_SECONDS})
    pipe.expire(keys.UPSTREAM_WORKERS, int(ADVERTISEMENT_SECONDS) + 1)
    if pipe is not conn:
        pipe.execute()
    return True


def advertised(conn: redis.Redis, now: float | None = None) -> list[dict[str, Any]]:
    """The identities live workers advertise (none: no configured worker is alive)."""
    now = time.time() if now is None else now
    return [json.loads(m) for m in as_texts(conn.zrangebyscore(keys.UPSTREAM_WORKERS, f"({now}", "+inf"))]


def check_workers(conn: redis.Redis, spec: Mapping[str, Any]) -> None:
    """Before a task is created: UpstreamMismatchError when live workers advertise their upstreams and
    `spec` is none of them (they would refuse its jobs). With no live configured worker it passes: the
    worker's own check is the backstop."""
    live = advertised(conn)
    if not live or identity(spec) in live:
        return
    workers = " and ".join(sorted(label(s) for s in live))
    kinds = {s.get("kind") for s in live}
    raise UpstreamMismatchError(
        f"the workers here fetch from {workers}; this request's upstream is {label(spec)}: set "
        f"{_variables('llm' if kinds == {'llm'} else 'http')} as the workers have it; nothing was created"
    )
