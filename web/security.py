"""What every response of the web process carries, and what a request that changes state must show.

- A Content-Security-Policy without 'unsafe-inline' for scripts: the pages' one inline script runs by a
  per-response nonce, so markup that reached a page anyway (an `onerror=` attribute, a `<script>`)
  does not run. 'unsafe-eval' stays because rq-dashboard's pages build their rows with underscore's
  `_.template`, which compiles with `new Function`; what it compiles is the pages' own static
  `text/template` blocks, never data (data goes through `_.escape`, see web.dashboard.templates).
- Whether a request comes from this site's pages (`is_same_origin`): HTTP Basic credentials and cookies
  are sent by the browser with any request to this host, a forged cross-site form included, so they
  alone do not tell this site's own requests from another site's. Requests that change state must
  (web.auth for the API and the pages, web.dashboard.guards for rq-dashboard's actions).
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from flask import Flask, g
from werkzeug.datastructures import Headers
from werkzeug.wrappers import Response as BaseResponse

_POLICY = (
    "default-src 'none'; script-src 'self' 'nonce-{nonce}' 'unsafe-eval'; style-src 'self'; "
    # The pages hide and place a few elements with style attributes; no <style> element is allowed.
    "style-src-attr 'unsafe-inline'; img-src 'self' data:; font-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def csp_nonce() -> str:
    """This response's nonce (made on first use)."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(18)
    return str(g.csp_nonce)


def content_security_policy(nonce: str) -> str:
    return _POLICY.format(nonce=nonce)


def is_same_origin(headers: Headers, host: str) -> bool:
    """True when a browser says this request comes from a page of this host.

    Sec-Fetch-Site is the browser's own verdict (sent to https and loopback origins); otherwise the
    Origin (or, from older browsers, the Referer) must name this host. A request with none of them
    is refused too: every browser sends one of them with a POST, so only a stripped request lacks all.
    The host is compared, not the scheme: behind a TLS-terminating proxy the app sees http.
    """
    site = headers.get("Sec-Fetch-Site")
    if site is not None:
        return site == "same-origin"
    source = headers.get("Origin") or headers.get("Referer")
    if not source or source == "null":
        return False
    netloc = urlsplit(source).netloc.rpartition("@")[2]
    return bool(netloc) and netloc.lower() == host.lower()


def install(app: Flask) -> None:
    """Security headers on every response, and the nonce in every template's context."""

    @app.context_processor
    def nonce() -> dict[str, str]:
        return {"csp_nonce": csp_nonce()}

    @app.after_request
    def security_headers(response: BaseResponse) -> BaseResponse:
        response.headers["Content-Security-Policy"] = content_security_policy(csp_nonce())
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        return response
