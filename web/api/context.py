"""What the API's views share: the app's connection, settings, manager and the request's JSON body."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import redis
from flask import Response, current_app, request
from werkzeug.wrappers import Response as BaseResponse

from jobs.config import Settings
from jobs.errors import ValidationError
from jobs.refresh.manager import SyncRefreshManager
from web.api import bounds


def conn() -> redis.Redis:
    return current_app.redis_conn  # type: ignore[attr-defined,no-any-return]


def settings() -> Settings:
    return current_app.extensions["refreshq.settings"]  # type: ignore[no-any-return]


def manager() -> SyncRefreshManager:
    return current_app.extensions["refreshq.manager"]  # type: ignore[no-any-return]


def body(allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The request's JSON object with only `allowed` keys and every `required` one (422 otherwise)."""
    data = bounds.json_body()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValidationError(f"unknown field {', '.join(map(repr, unknown))}: expected {', '.join(allowed)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ValidationError(f"missing field {', '.join(map(repr, missing))}")
    return data


def as_json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(value, ensure_ascii=False) + "\n", status, headers, mimetype="application/json")


def with_etag(value: Any) -> BaseResponse:
    """The value as JSON with an ETag; 304 when the client already has this version (If-None-Match)."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    tag = hashlib.sha256(text.encode()).hexdigest()[:20]
    headers = {"ETag": f'"{tag}"', "Cache-Control": "no-cache"}
    if tag in request.if_none_match:
        return BaseResponse(status=304, headers=headers)
    return as_json(value, headers=headers)
