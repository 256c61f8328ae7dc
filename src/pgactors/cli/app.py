"""The ``pgactors`` Typer app, its global options, and how a command runs.

Exit codes: 0 ok, 1 a check failed or a record was not found (or conflicted),
2 usage, configuration or connection error. Errors print one line; ``--debug``
adds the traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import sys
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Concatenate, NoReturn, ParamSpec, TypeVar, cast

import typer

from ..config import StoreConfig
from ..embedded import EmbeddedServer
from ..errors import ConfigError, InvalidInput, NotFound, PgActorsError, VersionConflict
from ..store import Store
from ..target import resolve_target
from .render import err, print_embedded

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Failed",
    "JsonOption",
    "Options",
    "app",
    "fail",
    "get_options",
    "handle_errors",
    "main",
    "run",
    "with_store",
]

P = ParamSpec("P")
T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
"""The ``--json`` option of the commands that print a report."""

app = typer.Typer(
    name="pgactors",
    help="Durable state for Python actors and objects, in PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Failed(Exception):
    """A check failed or a record was missing: print the message, exit 1."""


@dataclass
class Options:
    """The global options, shared by every command."""

    dsn: str | None
    config_file: Path | None
    schema: str | None
    table_prefix: str | None
    data_dir: Path | None
    debug: bool
    # The embedded server ``config()`` chose, if it chose one.
    embedded: EmbeddedServer | None = None

    def server(self) -> EmbeddedServer:
        """The embedded server of ``--data-dir``."""
        return EmbeddedServer(self.data_dir)

    def config(self) -> StoreConfig:
        """The configuration from file/environment/options; embedded server if none."""
        base = (
            StoreConfig.from_file(self.config_file) if self.config_file else StoreConfig.from_env()
        )
        config = base.replace(dsn=self.dsn, schema=self.schema, table_prefix=self.table_prefix)

        def chosen(server: EmbeddedServer, started: bool) -> None:
            self.embedded = server
            print_embedded(server, started)

        return resolve_target(config, self.data_dir, on_embedded=chosen)


@app.callback()
def main_options(
    ctx: typer.Context,
    dsn: Annotated[
        str | None,
        typer.Option(envvar="PGACTORS_DSN", show_envvar=True, help="PostgreSQL DSN."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", envvar="PGACTORS_CONFIG", show_envvar=True, help="YAML or TOML file."
        ),
    ] = None,
    schema: Annotated[
        str | None,
        typer.Option(envvar="PGACTORS_SCHEMA", show_envvar=True, help="Database schema."),
    ] = None,
    table_prefix: Annotated[
        str | None,
        typer.Option(envvar="PGACTORS_TABLE_PREFIX", show_envvar=True, help="Table prefix."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="PGACTORS_DATA_DIR",
            show_envvar=True,
            help="Embedded server data directory (default ./.pgactors).",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """With no database configured, commands use the embedded server in the data dir."""
    ctx.obj = Options(dsn, config, schema, table_prefix, data_dir, debug)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except (ConfigError, InvalidInput) as exc:  # raised while parsing options
        err.print(f"error: {exc}", markup=False)
        sys.exit(EXIT_USAGE)


def get_options(ctx: typer.Context) -> Options:
    """The global options of the running command."""
    obj = ctx.find_root().obj
    assert isinstance(obj, Options)
    return obj


def fail(options: Options, exc: BaseException, code: int) -> NoReturn:
    """Print ``exc`` as one line (with its traceback under ``--debug``) and exit ``code``."""
    if options.debug:
        traceback.print_exception(exc, file=sys.stderr)
    err.print(f"error: {exc}", markup=False)
    raise typer.Exit(code)


@contextlib.contextmanager
def handle_errors(ctx: typer.Context) -> Iterator[Options]:
    """Turn the library's errors into the CLI's messages and exit codes."""
    options = get_options(ctx)
    try:
        yield options
    except Failed as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(EXIT_FAILED) from None
    except (NotFound, VersionConflict) as exc:
        fail(options, exc, EXIT_FAILED)
    except PgActorsError as exc:
        fail(options, exc, EXIT_USAGE)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def run(ctx: typer.Context, action: Callable[[Options], Coroutine[Any, Any, T]]) -> T:
    """Run an async action with the CLI's error handling."""
    with handle_errors(ctx) as options:
        result = asyncio.run(action(options))
    return result


def with_store(
    command: Callable[Concatenate[Store, P], Awaitable[T]],
) -> Callable[Concatenate[typer.Context, P], T]:
    """Make ``async command(store, ...)`` a CLI command ``command(ctx, ...)``.

    The store is connected as the global options say and closed afterwards; errors
    exit as :func:`handle_errors` says. Typer sees ``ctx`` and the command's other
    parameters.
    """

    def run_command(ctx: typer.Context, *args: P.args, **kwargs: P.kwargs) -> T:
        async def action(options: Options) -> T:
            config = await asyncio.to_thread(options.config)
            async with await Store.connect(config) as store:
                return await command(store, *args, **kwargs)

        return run(ctx, action)

    functools.update_wrapper(run_command, command)
    # Typer reads the parameters from the signature: ctx in place of the store.
    signature = inspect.signature(command, eval_str=True)
    _, *parameters = signature.parameters.values()
    ctx = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters.insert(0, ctx.replace(annotation=typer.Context))
    run_command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    # Typer passes ctx by keyword, so it cannot be positional-only as the type says.
    return cast("Callable[Concatenate[typer.Context, P], T]", run_command)
