"""Who is asking, and what they may do: Flask-HTTPAuth over three ways in.

- `Authorization: Bearer <token>` (the API's way): a token made by `refreshq tokens create`, looked up
  by its SHA-256; its role and its user's limits come with it. Never a token in a query string.
- HTTP Basic with REFRESHQ_WEB_PASSWORD (any user name): admin, as the dashboard always was.
- The browser's session cookie, set by the sign-in form (/login) from the password or a token: signed
  with a random secret kept in Redis, HttpOnly, SameSite=Strict, Secure over HTTPS. It holds no secret: a
  keyed digest of the password, or the token's SHA-256 (so a revoked token or a changed password ends the
  session).

Wrong passwords and tokens are throttled per client address and per user (web.throttle): 429 with
Retry-After after too many.

Without REFRESHQ_WEB_PASSWORD the process serves loopback only (web.app.check_exposure) and a request
without credentials is the local admin, as the dashboard was before tokens; a bad token still is 401.

Roles: read may GET; operate may also create refreshes and runs and cancel or resume its own refreshes;
admin everything. A request that changes state and is not authenticated by a Bearer header (a browser
adds Basic credentials and cookies on its own, to forged cross-site requests too) must come from this
site's pages (web.security.is_same_origin).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

import redis
from flask import Flask, current_app, g, redirect, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_httpauth import HTTPBasicAuth, HTTPTokenAuth, MultiAuth
from werkzeug.wrappers import Response as BaseResponse

from jobs import keys, tokens
from jobs.config import Settings
from jobs.owners import Owner
from jobs.redis_values import as_text
from web import security
from web.api.problems import problem
from web.throttle import Throttle

ROLE_GRANTS = {"read": ("read",), "operate": ("read", "operate"), "admin": ("read", "operate", "admin")}
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
LOCAL_USER = "local"
PASSWORD_USER = "admin"
F = TypeVar("F", bound=Callable[..., Any])
ACCESS = "access"  # the attribute of a view that holds its access rule: a role, or what `declares` says
PUBLIC = "public"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: user, role, how they authenticated, and the owner their work gets."""

    user: str
    role: str
    via: str  # bearer, password, session, local
    owner: Owner

    def may(self, role: str) -> bool:
        return role in ROLE_GRANTS[self.role]


def session_secret(conn: redis.Redis) -> str:
    """The key that signs session cookies: made once, shared by every web process on this Redis."""
    conn.set(keys.WEB_SECRET, secrets.token_hex(32), nx=True)
    return as_text(conn.get(keys.WEB_SECRET))


def _password_digest(password: str) -> str:
    """What a password session keeps: useless without the signing secret, changes with the password."""
    return hmac.new(str(current_app.secret_key).encode(), password.encode(), hashlib.sha256).hexdigest()


class Auth:
    """The app's authentication: `check(role)` answers for a view (`requires`) or a request hook."""

    def __init__(self, settings: Settings, conn: redis.Redis) -> None:
        self.settings, self.conn = settings, conn
        self.throttle = Throttle(conn)
        self.basic = HTTPBasicAuth(realm="refreshq")
        self.bearer = HTTPTokenAuth("Bearer", realm="refreshq")
        self.multi = MultiAuth(self.basic, self.bearer)
        self.basic.verify_password(self._verify_password)
        self.bearer.verify_token(self._verify_token)
        for scheme in (self.basic, self.bearer):
            scheme.get_user_roles(lambda p: list(ROLE_GRANTS[p.role]))
            scheme.error_handler(_refused)

    def _verify_token(self, token: str) -> Principal | None:
        self.throttle.check()
        info = tokens.verify(self.conn, token)
        if info is None:
            self.throttle.failed()
            return None
        return Principal(info.user, info.role, "bearer", info.owner)

    def _verify_password(self, _username: str, password: str) -> Principal | None:
        expected = self.settings.web.password
        if request.authorization is not None and expected is not None:
            self.throttle.check(PASSWORD_USER)
            if hmac.compare_digest(password.encode(), expected.encode()):
                return Principal(PASSWORD_USER, "admin", "password", Owner(PASSWORD_USER))
            self.throttle.failed(PASSWORD_USER)
            return None
        from_session = self.session_principal()
        if from_session is not None:
            return from_session
        if expected is None:  # loopback only (check_exposure): the local admin, as before tokens
            return Principal(LOCAL_USER, "admin", "local", Owner(LOCAL_USER))
        return None

    def session_principal(self) -> Principal | None:
        kind = session.get("via")
        if kind == "password" and self.settings.web.password is not None:
            if hmac.compare_digest(str(session.get("pw", "")), _password_digest(self.settings.web.password)):
                return Principal(PASSWORD_USER, "admin", "session", Owner(PASSWORD_USER))
        elif kind == "token":
            info = tokens.lookup(self.conn, str(session.get("sha", "")))
            if info is not None:
                return Principal(info.user, info.role, "session", info.owner)
        return None

    def sign_in(self, password: str | None, token: str | None) -> bool:
        """Start a browser session from the password or a token; False if neither is right, TooManyRequests
        (werkzeug's 429) while this address or the password's user is throttled (web.throttle)."""
        expected = self.settings.web.password
        user = PASSWORD_USER if password else None
        self.throttle.check(user)
        if password and expected and hmac.compare_digest(password.encode(), expected.encode()):
            session.clear()
            session.update(via="password", pw=_password_digest(expected))
            return True
        if token and tokens.verify(self.conn, token.strip()) is not None:
            session.clear()
            session.update(via="token", sha=tokens.digest(token.strip()))
            return True
        self.throttle.failed(user)
        return False

    def check(self, role: str) -> BaseResponse | None:
        """None if the request may go on with `role`, else the 401/403 response (for request hooks)."""
        outcome = self.multi.login_required(role=role)(_allowed)()
        return None if outcome is None else outcome


def requires(role: str) -> Callable[[F], F]:
    """A view's access rule, on the view: authenticated with `role` (read, operate or admin), and
    same-origin when it changes state from a browser. web.access reads the rule back from the view."""
    if role not in ROLE_GRANTS:
        raise ValueError(f"no role {role!r}: one of {', '.join(ROLE_GRANTS)}")

    def wrap(view: F) -> F:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            refused = auth_of(current_app).check(role)
            if refused is not None:
                return refused
            return view(*args, **kwargs)
        setattr(guarded, ACCESS, role)
        return guarded  # type: ignore[return-value]
    return wrap


def declares(access: str) -> Callable[[F], F]:
    """The access rule of a view that checks its caller itself or is open to anyone, said on the view (a
    view without any rule stops the app: web.access)."""
    def wrap(view: F) -> F:
        setattr(view, ACCESS, access)
        return view
    return wrap


def public(view: F) -> F:
    """Open to anyone (the sign-in form, /healthz), said on the view."""
    return declares(PUBLIC)(view)


def _allowed() -> BaseResponse | None:
    """Runs once authenticated: remember who, and refuse a browser's cross-site mutation."""
    principal: Principal = g.flask_httpauth_user
    g.principal = principal
    if request.method not in SAFE_METHODS and principal.via != "bearer" \
            and not security.is_same_origin(request.headers, request.host):
        return _forbidden("refused: the request does not come from this site's pages")
    return None


def current() -> Principal:
    """The caller of this request (inside a guarded view)."""
    return g.principal  # type: ignore[no-any-return]


def _is_api() -> bool:
    return request.path.startswith("/api/")


def _forbidden(detail: str) -> BaseResponse:
    if _is_api():
        return problem(403, "Forbidden", detail)
    return BaseResponse(f"403 Forbidden: {detail}\n", 403, mimetype="text/plain")


def _refused(status: int) -> BaseResponse:
    """401 or 403: problem+json on the API, the sign-in page for pages, a Basic challenge on /rq."""
    if _is_api():
        if status == 401:
            return problem(401, "Unauthorized", "send 'Authorization: Bearer <token>' (refreshq tokens create)",
                           {"WWW-Authenticate": 'Bearer realm="refreshq"'})
        return problem(403, "Forbidden", "this token's role may not do this")
    if request.path.startswith("/rq"):
        if status == 401:
            return BaseResponse("authentication required\n", 401, {"WWW-Authenticate": 'Basic realm="refreshq"'},
                                mimetype="text/plain")
        return BaseResponse("403 Forbidden: your role may not do this\n", 403, mimetype="text/plain")
    if status == 401 and request.method in SAFE_METHODS:
        return redirect(url_for("pages.login", next=request.full_path.rstrip("?")))
    return _forbidden("your role may not do this" if status == 403 else "sign in first")


class _SessionCookies(SecureCookieSessionInterface):
    """Flask's signed cookie, `Secure` whenever the request came over HTTPS (directly, or through a proxy
    that says so when REFRESHQ_WEB_TRUST_PROXY lets it: web.app)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure or super().get_cookie_secure(app)


def install(app: Flask, auth: Auth) -> None:
    """Session cookie settings; no WWW-Authenticate on anything but a 401."""
    app.config.update(SESSION_COOKIE_NAME="refreshq_session", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict")
    app.session_interface = _SessionCookies()
    app.extensions["refreshq.auth"] = auth

    @app.after_request
    def challenge_only_on_401(response: BaseResponse) -> BaseResponse:
        if response.status_code != 401:
            response.headers.pop("WWW-Authenticate", None)
        return response


def auth_of(app: Flask) -> Auth:
    return app.extensions["refreshq.auth"]  # type: ignore[no-any-return]
