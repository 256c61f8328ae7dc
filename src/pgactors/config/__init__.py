"""Connection and storage settings: :class:`StoreConfig` and :func:`redact`.

The roles around it live beside it: ``fields`` validates each field, ``sources`` reads
environment variables and config files, ``dsn`` parses connection strings and hides their
passwords. This package never imports the database driver; ``postgres`` turns a config
into a connection with :meth:`StoreConfig.conninfo_params` and :attr:`StoreConfig.dsn`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .dsn import MASK, analyze_dsn, redact_dsn, redact_patterns
from .fields import (
    DEFAULT_APPLICATION_NAME,
    DEFAULT_CACHE_BYTES,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_DATA_BYTES,
    FIELD_CHECKS,
    FIELD_NAMES,
    IDENTIFIER_RE,
)
from .sources import read_env, read_file


@dataclass(frozen=True, repr=False)
class StoreConfig:
    """Where and how pgactors stores state; every field is validated on construction.

    Explicit fields (``host``, ``port``, ...) override the same parameters in ``dsn``.
    ``repr``/``str`` and error messages never show a password.
    """

    dsn: str | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None
    database: str | None = None
    sslmode: str | None = None
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    schema: str = "public"
    table_prefix: str = "pgactors"
    pool_min_size: int = 1
    pool_max_size: int = 10
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    statement_timeout: float | None = None
    application_name: str = DEFAULT_APPLICATION_NAME
    max_data_bytes: int = DEFAULT_MAX_DATA_BYTES
    changes: bool = True
    coalesce: bool = True
    channel: str = "pgactors_changes"
    changes_retention: float = 86400.0
    purge_interval: float = 60.0
    pooler: str = "auto"
    listen_dsn: str | None = None
    cache_size: int = 0
    cache_bytes: int = DEFAULT_CACHE_BYTES

    def __post_init__(self) -> None:
        for name, check in FIELD_CHECKS.items():
            value = getattr(self, name)
            checked = check(value)
            if checked is not value:
                object.__setattr__(self, name, checked)
        lowest = max(1, self.pool_min_size)
        if self.pool_max_size < lowest:
            bound = f"pool_min_size ({self.pool_min_size})" if self.pool_min_size >= 1 else "1"
            raise ConfigError(
                f"pool_max_size must be an integer >= {bound}, got {self.pool_max_size}"
            )
        if self.pooler == "pgbouncer":
            # Both travel as the startup parameter "options", which PgBouncer refuses.
            for name, server_setting, set_here in (
                ("statement_timeout", "statement_timeout", self.statement_timeout is not None),
                ("changes=False", "pgactors.changes = off", not self.changes),
            ):
                if set_here:
                    raise ConfigError(
                        f"{name} is sent as a startup option, which PgBouncer refuses; with "
                        f"pooler='pgbouncer' set it on the server instead (ALTER ROLE ... SET "
                        f"{server_setting}) and leave it out here"
                    )

    def __repr__(self) -> str:
        shown: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "password" and value is not None:
                text = repr(MASK)
            elif f.name in ("dsn", "listen_dsn") and value is not None:
                text = repr(redact_dsn(value))
            else:
                text = repr(value)
            shown.append(f"{f.name}={text}")
        return f"StoreConfig({', '.join(shown)})"

    @property
    def has_target(self) -> bool:
        """True when a server was named explicitly (``dsn`` or ``host``)."""
        return self.dsn is not None or self.host is not None

    def redacted_dsn(self) -> str | None:
        """``dsn`` with every password replaced by ``***``."""
        return None if self.dsn is None else redact_dsn(self.dsn)

    def replace(self, **overrides: object) -> StoreConfig:
        """A validated copy with ``overrides`` applied; ``None`` overrides are ignored."""
        unknown = sorted(set(overrides) - set(FIELD_NAMES))
        if unknown:
            raise ConfigError(
                f"unknown StoreConfig field(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(FIELD_NAMES)}"
            )
        changes: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self

    def conninfo_params(self) -> dict[str, str]:
        """libpq keyword parameters from the explicit fields, to merge over ``dsn``.

        ``application_name`` and ``connect_timeout`` are left out when they still hold
        their defaults and ``dsn`` sets them, so a DSN's own values are kept.
        """
        in_dsn = analyze_dsn(self.dsn).params if self.dsn is not None else {}
        candidates = {
            "host": self.host,
            "port": None if self.port is None else str(self.port),
            "user": self.user,
            "password": self.password,
            "dbname": self.database,
            "sslmode": self.sslmode,
            "sslrootcert": self.sslrootcert,
            "sslcert": self.sslcert,
            "sslkey": self.sslkey,
        }
        params = {k: v for k, v in candidates.items() if v is not None}
        if not (self.application_name == DEFAULT_APPLICATION_NAME and "application_name" in in_dsn):
            params["application_name"] = self.application_name
        if not (self.connect_timeout == DEFAULT_CONNECT_TIMEOUT and "connect_timeout" in in_dsn):
            params["connect_timeout"] = str(max(1, math.ceil(self.connect_timeout)))
        return params

    def target(self) -> str:
        """Where this config connects, for messages: ``host:port[,host:port][/database]``."""
        params = dict(analyze_dsn(self.dsn).params) if self.dsn is not None else {}
        if self.host is not None:
            params["host"] = self.host
            params.pop("hostaddr", None)
        if self.port is not None:
            params["port"] = str(self.port)
        if self.database is not None:
            params["dbname"] = self.database
        hosts = (params.get("host") or params.get("hostaddr") or "").split(",")
        ports = params.get("port", "").split(",")
        shown: list[str] = []
        for i, raw_host in enumerate(hosts):
            port = ports[0] if len(ports) == 1 else ports[i] if i < len(ports) else ""
            host = raw_host.strip() or "localhost"
            if ":" in host and not host.startswith(("/", "@")):
                host = f"[{host}]"
            shown.append(f"{host}:{port.strip() or '5432'}")
        database = params.get("dbname")
        return ",".join(shown) + (f"/{database}" if database else "")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StoreConfig:
        """Build a config from environment variables (``os.environ`` by default).

        Order, later winning: the file named by ``PGACTORS_CONFIG``; ``PGACTORS_DSN`` or
        else ``DATABASE_URL``; ``PGHOST``-style libpq variables (skipped for parameters
        the dsn already sets, as libpq does); ``PGACTORS_*`` settings. Empty variables
        count as unset.
        """
        env: Mapping[str, str] = os.environ if environ is None else environ
        config_path = env.get("PGACTORS_CONFIG") or None
        base = cls.from_file(config_path, environ=env) if config_path else cls()
        settings = read_env(env, base.dsn)
        try:
            return base.replace(**settings.values)
        except ConfigError as exc:
            raise ConfigError(f"{settings.origin(exc)}: {exc}") from None

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
    ) -> StoreConfig:
        """Load a YAML (``.yaml``/``.yml``) or TOML (``.toml``) config file.

        Settings may sit at top level or under one ``pgactors`` table. Keys are field
        names, their camelCase forms, or ``url``/``connectionString``/``connection_string``
        for ``dsn``. ``${VAR}`` and ``${VAR:-default}`` in strings expand from ``environ``
        (``os.environ`` by default); ``$${`` is a literal ``${``.
        """
        env: Mapping[str, str] = os.environ if environ is None else environ
        settings = read_file(path, env)
        try:
            return cls(**settings.values)
        except ConfigError as exc:
            raise ConfigError(f"{settings.where}: {exc}") from None

    @classmethod
    def resolve(
        cls, dsn_or_config: str | StoreConfig | None = None, /, **overrides: object
    ) -> StoreConfig:
        """Turn a DSN, a config or ``None`` (read the environment) into a config, then
        apply ``overrides`` (``None`` values ignored)."""
        if isinstance(dsn_or_config, StoreConfig):
            base = dsn_or_config
        elif isinstance(dsn_or_config, str):
            base = cls(dsn=dsn_or_config)
        elif dsn_or_config is None:
            base = cls.from_env()
        else:
            raise ConfigError(
                "expected a DSN string, a StoreConfig or None, "
                f"got a value of type {type(dsn_or_config).__name__}"
            )
        return base.replace(**overrides)


def redact(text: str, config: StoreConfig | None = None) -> str:
    """Replace every password of ``config`` (field or DSN) found in ``text`` with ``***``.

    Also masks anything shaped like ``scheme://user:secret@`` or ``password=secret``.
    """
    secrets: list[str] = []
    if config is not None:
        if config.password:
            secrets.append(config.password)
        for dsn in (config.dsn, config.listen_dsn):
            if dsn is not None:
                secrets.extend(analyze_dsn(dsn).secrets)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return redact_patterns(text)


__all__ = [
    "DEFAULT_MAX_DATA_BYTES",
    "IDENTIFIER_RE",
    "StoreConfig",
    "redact",
]
