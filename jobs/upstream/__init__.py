"""Upstreams of the hospital directory, and the one place that picks which one a task talks to.

A task stores a spec: a JSON-able, secret-free descriptor such as {"kind": "sample", "scale": 1000}.
Secrets and concurrency come from Settings when the upstream is built, so they are never stored.
The clients are imported only when built, so importing this package stays cheap.
"""

from __future__ import annotations

from typing import Any

from jobs.config import HTTP_SCHEMES, Settings
from jobs.errors import ValidationError
from jobs.upstream.base import RequestGate, Upstream

__all__ = ["Upstream", "build_upstream", "spec_from_settings"]

KINDS = ("sample", "http", "llm")


def spec_from_settings(settings: Settings) -> dict[str, Any]:
    """The spec of the upstream the settings configure (http, then llm, else the sample)."""
    kind = settings.upstream_kind
    if kind == "http":
        return {"kind": "http", "url": settings.upstream_url}
    if kind == "llm":
        return {"kind": "llm", "base_url": settings.llm_base_url, "model": settings.llm_model}
    return {"kind": "sample", "scale": settings.sample_scale}


def _url(spec: dict[str, Any], key: str) -> str:
    value = spec.get(key)
    if not isinstance(value, str) or not value.startswith(tuple(f"{s}://" for s in HTTP_SCHEMES)):
        raise ValidationError(f"upstream spec {spec.get('kind')!r} needs {key!r}: an http:// or https:// URL")
    return value


def build_upstream(spec: dict[str, Any], settings: Settings, request_gate: RequestGate | None = None) -> Upstream:
    """The Upstream a task's spec describes; ValidationError if the spec is not a valid one."""
    kind = spec.get("kind")
    if kind == "sample":
        from jobs.upstream.sample import SampleDirectory

        scale = spec.get("scale", settings.sample_scale)
        if not isinstance(scale, int) or isinstance(scale, bool) or scale < 0:
            raise ValidationError(f"upstream spec 'sample' needs 'scale': a whole number >= 0, got {scale!r}")
        return SampleDirectory(scale)
    if kind == "http":
        from jobs.upstream.http import HttpDirectoryClient

        return HttpDirectoryClient(
            _url(spec, "url"),
            token=settings.upstream_token,
            concurrency=settings.upstream_concurrency,
            timeout=settings.upstream_timeout,
            max_attempts=settings.upstream_attempts,
            request_gate=request_gate,
        )
    if kind == "llm":
        from jobs.upstream.llm import LLMClient

        model = spec.get("model")
        if not isinstance(model, str) or not model.strip():
            raise ValidationError("upstream spec 'llm' needs 'model': a model name")
        return LLMClient(
            _url(spec, "base_url"),
            api_key=settings.llm_api_key,
            model=model,
            concurrency=settings.upstream_concurrency,
            timeout=max(settings.upstream_timeout, 60.0),  # model calls take 5-60 s
            max_attempts=settings.upstream_attempts,
            request_gate=request_gate,
        )
    raise ValidationError(f"unknown upstream kind {kind!r}: expected one of {', '.join(KINDS)}")
