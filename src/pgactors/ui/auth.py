"""The dashboard's token: a bearer header or a cookie set by the login form.

Without a token the dashboard answers only requests addressed to a loopback name
(``localhost``, ``127.0.0.1``, ``[::1]``), so a web page whose domain an attacker
re-points at 127.0.0.1 (DNS rebinding) cannot read it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE: Final = "pgactors_ui"
LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
# Reachable without the token: the login form and the files it is drawn with.
OPEN_PATHS: Final = ("/login", "/static/")
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def same_origin(headers: Mapping[str, str]) -> bool:
    """True unless the browser says the request comes from another site's page."""
    origin = headers.get("origin")
    if origin is None:  # not sent by a browser, or a same-origin GET
        return True
    return urlsplit(origin).netloc == headers.get("host", "")


def session_value(token: str) -> str:
    """What the cookie holds: derived from the token, so the token itself is not stored."""
    return hmac.new(token.encode(), b"pgactors-ui-session", hashlib.sha256).hexdigest()


def host_name(headers: Mapping[str, str]) -> str:
    """The Host header without its port."""
    host = headers.get("host", "")
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class TokenGate:
    """ASGI middleware: every request but the login form must carry the token."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token
        self.session = session_value(token) if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self.refusal(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def authorized(self, request: Request) -> bool:
        """True if the request carries the token (header) or the session cookie."""
        assert self.token is not None and self.session is not None
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            credential.strip().encode(), self.token.encode()
        ):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(cookie.encode(), self.session.encode())

    def refusal(self, request: Request) -> Response | None:
        """The response refusing ``request``, or None to let it through."""
        path = request.url.path[len(request.scope.get("root_path", "")) :] or "/"
        if request.method not in SAFE_METHODS and not same_origin(request.headers):
            message = "a write must come from the dashboard's own pages (Origin differs)"
            return JSONResponse({"error": message}, status_code=403)
        if self.token is None:
            if host_name(request.headers) in LOOPBACK_HOSTS:
                return None
            message = "without a token the dashboard answers only requests to a loopback address"
            return JSONResponse({"error": message}, status_code=403)
        if path.startswith(OPEN_PATHS) or self.authorized(request):
            return None
        if path.startswith("/api/"):
            return JSONResponse(
                {"error": "a token is needed: Authorization: Bearer <token>, or log in"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        root = request.scope.get("root_path", "")
        back = urlencode({"next": path + (f"?{request.url.query}" if request.url.query else "")})
        return RedirectResponse(f"{root}/login?{back}", status_code=303)


def local_path(path: str) -> str:
    """``path`` if it is a path on this dashboard, else ``/``: the form must not send a
    user to another site (``//evil.example``, ``/\\evil.example``)."""
    if not path.startswith("/") or path.startswith(("//", "/\\")) or "\\" in path:
        return "/"
    return path


async def login(request: Request) -> Response:
    """POST /login: check the form's token, set the session cookie, go to the overview."""
    gate = request.app.state.gate
    assert isinstance(gate, TokenGate)
    root = request.scope.get("root_path", "")
    if gate.token is None:
        return RedirectResponse(f"{root}/", status_code=303)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    given = (form.get("token") or [""])[0]
    back = local_path((form.get("next") or ["/"])[0])
    if not hmac.compare_digest(given.encode(), gate.token.encode()):
        query = urlencode({"failed": 1, "next": back})
        return RedirectResponse(f"{root}/login?{query}", status_code=303)
    response = RedirectResponse(f"{root}{back}", status_code=303)
    assert gate.session is not None
    response.set_cookie(
        COOKIE,
        gate.session,
        httponly=True,
        samesite="strict",
        path=root or "/",
        secure=request.url.scheme == "https",
    )
    return response
