"""``pgactors ui``: serve the web dashboard (``pgactors.ui``) over the configured store."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Final

import typer

from ..errors import ConfigError
from ..store import Store
from .app import handle_errors, with_store
from .render import err

__all__ = ["ui"]

DEFAULT_PORT: Final = 8470


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and the loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def ui(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="PGACTORS_UI_TOKEN",
            show_envvar=True,
            help="Every request must carry it (login form or Authorization: Bearer). "
            "Required to listen on a non-loopback address.",
        ),
    ] = None,
    allow_writes: Annotated[
        bool, typer.Option("--allow-writes", help="Allow editing and deleting records.")
    ] = False,
) -> None:
    """Serve the web dashboard: types, records, queries, the live change feed."""
    if not is_loopback(host) and not token:
        with handle_errors(ctx):
            raise ConfigError(
                f"listening on {host} (not a loopback address) needs a token: "
                "pass --token or set PGACTORS_UI_TOKEN"
            )
    serve(ctx, host=host, port=port, token=token or None, allow_writes=allow_writes)


@with_store
async def serve(store: Store, host: str, port: int, token: str | None, allow_writes: bool) -> None:
    """Run the dashboard's server until interrupted."""
    try:
        import uvicorn

        from ..ui import create_app
    except ImportError as exc:
        raise ConfigError(
            f"the dashboard needs starlette and uvicorn ({exc.name} is missing): "
            "pip install 'pgactors[ui]'"
        ) from None
    app = create_app(store, token=token, allow_writes=allow_writes)
    shown = f"[{host}]" if ":" in host else host
    mode = "read-write" if allow_writes else "read-only"
    err.print(f"dashboard ({mode}) on http://{shown}:{port}/ (Ctrl-C stops)", markup=False)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2
    )
    await uvicorn.Server(config).serve()
