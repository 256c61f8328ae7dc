"""``create_app``: the dashboard's routes, security headers and error responses.

Pages are one HTML shell (``static/index.html``); the browser script draws each page
from the JSON API. The addresses are stable: ``/``, ``/types/{type}``,
``/types/{type}/{id}``, ``/changes``.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, Final

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import redact
from ..errors import InvalidInput, NotFound, PgActorsError, VersionConflict
from ..store import Store
from . import api, events
from .auth import TokenGate, login

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
)
STATIC: Final = resources.files("pgactors.ui") / "static"


class SecurityHeaders:
    """ASGI middleware adding the Content-Security-Policy and friends to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def shell(name: str, request: Request) -> HTMLResponse:
    """A static HTML page with the mount point filled in (for links and fetches)."""
    text = (STATIC / name).read_text(encoding="utf-8")
    root = html.escape(request.scope.get("root_path", ""), quote=True)
    return HTMLResponse(text.replace("{{root}}", root), headers={"Cache-Control": "no-store"})


async def page(request: Request) -> Response:
    """Every page: the shell; the script draws what the address names."""
    return shell("index.html", request)


async def login_form(request: Request) -> Response:
    """GET /login: the token form."""
    return shell("login.html", request)


def status_of(exc: PgActorsError) -> int:
    """The HTTP status of a library error."""
    if isinstance(exc, api.WritesDisabled):
        return 403
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, VersionConflict):
        return 409
    if isinstance(exc, InvalidInput):
        return 400
    return 503


async def error_response(request: Request, exc: Exception) -> Response:
    """A library error as ``{"error": message}`` (passwords redacted), with its status."""
    assert isinstance(exc, PgActorsError)
    store: Store = request.app.state.store
    body: dict[str, object] = {"error": redact(str(exc), store.config), "kind": type(exc).__name__}
    if isinstance(exc, VersionConflict):
        body["expected"], body["actual"] = exc.expected, exc.actual
    return JSONResponse(body, status_code=status_of(exc))


def create_app(
    store: Store,
    *,
    token: str | None = None,
    allow_writes: bool = False,
    silos: Callable[[], Awaitable[Sequence[Any]]] | None = None,
) -> Starlette:
    """The dashboard as an ASGI app over an open ``store`` (which the caller closes).

    ``token``: every request must carry it (``Authorization: Bearer``, or the cookie
    the login form sets); without one, only requests to a loopback address are
    answered. ``allow_writes``: edits (compare-and-set on the version shown) and
    deletes; read-only otherwise. ``silos``: a Ray actor system's ``status`` (its
    silos then show on the overview).
    """
    if silos is not None and not callable(silos):
        raise InvalidInput("silos must be an async callable, such as RayActorSystem.status")
    if token is not None and (not isinstance(token, str) or not token):
        raise InvalidInput("token must be a non-empty str, or None for no token")
    routes = [
        Route("/", page),
        Route("/changes", page),
        Route("/types/{type}", page),
        Route("/types/{type}/{id:path}", page),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/api/overview", api.overview),
        Route("/api/types", api.types),
        Route("/api/changes", events.changes),
        Route("/api/types/{type}", api.type_page),
        Route("/api/types/{type}/{id:path}", api.record, methods=["GET"]),
        Route("/api/types/{type}/{id:path}", api.save, methods=["PUT"]),
        Route("/api/types/{type}/{id:path}", api.delete, methods=["DELETE"]),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    gate = Middleware(TokenGate, token=token)
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders), gate],
        exception_handlers={PgActorsError: error_response},
    )
    app.state.store = store
    app.state.allow_writes = bool(allow_writes)
    app.state.silos = silos
    app.state.gate = TokenGate(app, token)
    return app
