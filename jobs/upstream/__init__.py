"""Upstreams of the hospital directory, and the one place that picks which one a task talks to.

A task stores a spec: a JSON-able, secret-free descriptor such as {"kind": "sample", "scale": 1000}.
Secrets and concurrency come from Settings when the upstream is built, so they are never stored: that
includes credentials inside a URL (`http://user:pass@host/v1`), stored without them and re-attached
from the worker's settings.
The clients are imported only when built, so importing this package stays cheap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import redis

from jobs import limits
from jobs.config import HTTP_SCHEMES, MAX_SAMPLE_SCALE, Settings
from jobs.errors import ValidationError
from jobs.observe.counters import UpstreamTally
from jobs.redact import mask_url, without_credentials
from jobs.upstream.base import RequestCounter, RequestGate, Upstream, no_count
from jobs.upstream.identity import check_upstream, normal_url

__all__ = [
    "Upstream", "build_upstream", "check_upstream", "open_upstream", "secret_free_spec", "spec_from_settings",
]

KINDS = ("sample", "http", "llm")
# The URL field of each kind's spec; REFRESHQ_UPSTREAM_URL and REFRESHQ_LLM_BASE_URL hold them with credentials.
_URL_FIELDS = {"http": "url", "llm": "base_url"}


def spec_from_settings(settings: Settings) -> dict[str, Any]:
    """The spec of the upstream the settings configure (http, then llm, else the sample)."""
    upstream = settings.upstream
    if upstream.kind == "http" and upstream.url:
        return {"kind": "http", "url": without_credentials(upstream.url)}
    if upstream.kind == "llm" and upstream.llm_base_url:
        return {"kind": "llm", "base_url": without_credentials(upstream.llm_base_url), "model": upstream.llm_model}
    return {"kind": "sample", "scale": upstream.sample_scale}


def _configured_url(kind: str, settings: Settings) -> str | None:
    return settings.upstream.url if kind == "http" else settings.upstream.llm_base_url if kind == "llm" else None


def _with_credentials(url: str, kind: str, settings: Settings) -> str:
    """The configured URL, userinfo and all, when `url` names the same place (jobs.upstream.identity);
    else `url` as it is: a worker fetches from the upstream its own settings name."""
    configured = _configured_url(kind, settings)
    if configured and normal_url(configured) == normal_url(url):
        return configured
    return url


def _secret_for(url: str, kind: str, settings: Settings, secret: str | None) -> str | None:
    """The token or API key of the settings, for their own upstream only (or any, when they name none)."""
    configured = _configured_url(kind, settings)
    return secret if configured is None or normal_url(configured) == normal_url(url) else None


def secret_free_spec(spec: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The spec as it may be stored with a task: checked (ValidationError), its URL without credentials.

    A URL whose credentials the settings do not hold too is refused: stored without them, the worker
    could not authenticate; stored with them, they would sit in Redis.
    """
    check_spec(spec, settings)
    field = _URL_FIELDS.get(str(spec["kind"]))
    url = spec[field] if field else None
    if field is None or not isinstance(url, str) or without_credentials(url) == url:
        return spec
    if _configured_url(str(spec["kind"]), settings) != url:
        variable = "REFRESHQ_UPSTREAM_URL" if spec["kind"] == "http" else "REFRESHQ_LLM_BASE_URL"
        raise ValidationError(
            f"upstream spec {field} {mask_url(url)!r} carries credentials: a task's spec is stored, so they "
            f"must come from the settings ({variable}) instead"
        )
    return {**spec, field: without_credentials(url)}


def _url(spec: dict[str, Any], key: str) -> str:
    value = spec.get(key)
    if not isinstance(value, str) or not value.startswith(tuple(f"{s}://" for s in HTTP_SCHEMES)):
        raise ValidationError(f"upstream spec {spec.get('kind')!r} needs {key!r}: an http:// or https:// URL")
    return value


def check_spec(spec: dict[str, Any], settings: Settings) -> None:
    """ValidationError unless `spec` is one build_upstream can build (checked before a task is stored)."""
    kind = spec.get("kind")
    if kind == "sample":
        scale = spec.get("scale", settings.upstream.sample_scale)
        if not isinstance(scale, int) or isinstance(scale, bool) or not 0 <= scale <= MAX_SAMPLE_SCALE:
            raise ValidationError(
                f"upstream spec 'sample' needs 'scale': a whole number from 0 to {MAX_SAMPLE_SCALE}, got {scale!r}"
            )
    elif kind in _URL_FIELDS:
        _url(spec, _URL_FIELDS[kind])
        model = spec.get("model")
        if kind == "llm" and (not isinstance(model, str) or not model.strip()):
            raise ValidationError("upstream spec 'llm' needs 'model': a model name")
    else:
        raise ValidationError(f"unknown upstream kind {kind!r}: expected one of {', '.join(KINDS)}")


def build_upstream(
    spec: dict[str, Any], settings: Settings, request_gate: RequestGate | None = None, count: RequestCounter = no_count
) -> Upstream:
    """The Upstream a task's spec describes; ValidationError if the spec is not a valid one. `count` is told
    the outcome of every request it sends (the sample sends none)."""
    check_spec(spec, settings)
    kind = spec["kind"]
    if kind == "sample":
        from jobs.upstream.sample import SampleDirectory

        return SampleDirectory(spec.get("scale", settings.upstream.sample_scale))
    if kind == "http":
        from jobs.upstream.http import HttpDirectoryClient

        return HttpDirectoryClient(
            _with_credentials(spec["url"], "http", settings),
            token=_secret_for(spec["url"], "http", settings, settings.upstream.token),
            concurrency=settings.pacing.job_concurrency,
            timeout=settings.upstream.timeout,
            max_attempts=settings.upstream.attempts,
            request_gate=request_gate,
            count=count,
        )
    from jobs.upstream.llm import LLMClient

    return LLMClient(
        _with_credentials(spec["base_url"], "llm", settings),
        api_key=_secret_for(spec["base_url"], "llm", settings, settings.upstream.llm_api_key),
        model=spec["model"],
        concurrency=settings.pacing.job_concurrency,
        timeout=max(settings.upstream.timeout, 60.0),  # model calls take 5-60 s
        max_attempts=settings.upstream.attempts,
        request_gate=request_gate,
        count=count,
    )


@contextlib.contextmanager
def open_upstream(conn: redis.Redis, spec: dict[str, Any], settings: Settings, holder: str) -> Iterator[Upstream]:
    """The Upstream of `spec` behind the request gate of `holder` (jobs.limits: every request refreshq makes
    counts against the global limits), its requests counted (jobs.observe.counters). However the block ends,
    the client closes first -- no request of it can start once its slots are given back -- then the gate
    gives its slots back, then its last requests are added to the counters."""
    with contextlib.ExitStack() as stack:
        tally = UpstreamTally(conn, str(spec.get("kind")))
        stack.callback(tally.flush)
        gate = limits.gate_for(conn, settings, holder)
        if gate is not None:
            stack.callback(gate.close)
        upstream = build_upstream(spec, settings, request_gate=gate, count=tally)
        stack.callback(upstream.close)  # callbacks run last-in first-out: the client before the gate
        yield upstream
