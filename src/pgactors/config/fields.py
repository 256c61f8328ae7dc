"""Validation of each :class:`~pgactors.config.StoreConfig` field, and the field defaults.

Every source of settings (arguments, environment, files) goes through
:data:`FIELD_CHECKS`, so a value is refused with the same message wherever it came from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from ..checks import int_in_range
from ..errors import ConfigError
from .dsn import URL_PREFIXES, parse_keyvalue

DEFAULT_MAX_DATA_BYTES = 16 * 1024 * 1024
"""Default upper bound on the serialized size of one record's data."""

DEFAULT_APPLICATION_NAME = "pgactors"
"""Default ``application_name`` reported to the server."""

DEFAULT_CONNECT_TIMEOUT = 10.0
"""Default seconds to wait for a connection."""

DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
"""Default upper bound on the bytes of JSON (or binary payload) the read cache holds."""

MAX_CACHE_SIZE = 100_000_000
"""Upper bound on ``cache_size`` (records)."""

IDENTIFIER_RE = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")
"""Allowed schema names, table prefixes and channel names (short enough for suffixes)."""

_IDENTIFIER_RULE = (
    f"{IDENTIFIER_RE.pattern} (a lowercase letter or underscore, "
    "then at most 47 lowercase letters, digits or underscores)"
)
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# PostgreSQL stores statement_timeout as int milliseconds; below 1 ms it would round to 0,
# which the server reads as "no timeout".
_STATEMENT_TIMEOUT_MIN = 0.001
_STATEMENT_TIMEOUT_MAX = 2_147_483.647


def _check_identifier(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{field} must be a string matching {_IDENTIFIER_RULE}, {_got(value)}")
    if IDENTIFIER_RE.fullmatch(value) is None:
        raise ConfigError(f"{field} must match {_IDENTIFIER_RULE}, got {show(value)}")
    return value


def show(value: object) -> str:
    """``repr(value)`` cut to 80 characters, for error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _got(value: object) -> str:
    return f"got {show(value)} ({type(value).__name__})"


def _check_text(field: str, value: object, *, secret: bool = False) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        got = f"got a value of type {type(value).__name__}" if secret else _got(value)
        raise ConfigError(f"{field} must be a string or None, {got}")
    if not value:
        raise ConfigError(f"{field} must be a non-empty string or None, got ''")
    if "\x00" in value:
        raise ConfigError(f"{field} must not contain NUL characters")
    return value


def _check_int(field: str, value: object, minimum: int | None, maximum: int | None = None) -> int:
    if minimum is None:
        rule = "an integer"
    elif maximum is None:
        rule = f"an integer >= {minimum}"
    else:
        rule = f"an integer between {minimum} and {maximum}"
    if not int_in_range(value):
        raise ConfigError(f"{field} must be {rule}, {_got(value)}")
    if not int_in_range(value, minimum, maximum):
        raise ConfigError(f"{field} must be {rule}, got {value}")
    return value


def _check_seconds(
    field: str, value: object, rule: str, minimum: float, maximum: float = math.inf
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{field} must be {rule}, {_got(value)}")
    if not (math.isfinite(value) and value > 0 and minimum <= value <= maximum):
        raise ConfigError(f"{field} must be {rule}, got {value!r}")
    return float(value)


POOLERS = ("auto", "pgbouncer", "none")
"""Allowed ``pooler`` values: detect a transaction pooler, say there is one, or none."""


def _check_pooler(value: object) -> str:
    if isinstance(value, str) and value in POOLERS:
        return value
    raise ConfigError(f"pooler must be one of {', '.join(POOLERS)}, {_got(value)}")


def _check_dsn(value: object, field: str = "dsn") -> str | None:
    if value is None:
        return None
    allowed = (
        "a string starting with postgresql:// or postgres://, "
        "or a libpq key=value string (e.g. 'host=db dbname=app')"
    )
    if not isinstance(value, str):
        raise ConfigError(f"{field} must be {allowed}, got a value of type {type(value).__name__}")
    if value.startswith(URL_PREFIXES):
        if "\x00" in value:
            raise ConfigError(f"{field} must not contain NUL characters")
        return value
    # The value itself is never shown: a malformed DSN may still hold a password.
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*)://", value)
    if scheme is not None:
        raise ConfigError(f"{field} must be {allowed}, got a URL with scheme {scheme.group(1)!r}")
    if "\x00" in value or not parse_keyvalue(value):
        raise ConfigError(
            f"{field} must be {allowed}, got a string that is neither (value not shown)"
        )
    return value


def _check_sslmode(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and value in _SSLMODES:
        return value
    raise ConfigError(f"sslmode must be one of {', '.join(_SSLMODES)} or None, {_got(value)}")


def _check_schema(value: object) -> str:
    schema = _check_identifier("schema", value)
    if schema.startswith("pg_"):
        raise ConfigError(f"schema must not start with 'pg_' (reserved), got {schema!r}")
    return schema


def _check_application_name(value: object) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= 63
        or any(not " " <= c <= "~" for c in value)
    ):
        raise ConfigError(
            f"application_name must be 1 to 63 printable ASCII characters, {_got(value)}"
        )
    return value


def _check_bool(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{field} must be true or false, {_got(value)}")
    return value


FIELD_CHECKS: dict[str, Callable[[object], object]] = {
    "dsn": _check_dsn,
    "host": lambda v: _check_text("host", v),
    "port": lambda v: None if v is None else _check_int("port", v, 1, 65535),
    "user": lambda v: _check_text("user", v),
    "password": lambda v: _check_text("password", v, secret=True),
    "database": lambda v: _check_text("database", v),
    "sslmode": _check_sslmode,
    "sslrootcert": lambda v: _check_text("sslrootcert", v),
    "sslcert": lambda v: _check_text("sslcert", v),
    "sslkey": lambda v: _check_text("sslkey", v),
    "schema": _check_schema,
    "table_prefix": lambda v: _check_identifier("table_prefix", v),
    "pool_min_size": lambda v: _check_int("pool_min_size", v, 0),
    # The lower bound depends on pool_min_size; StoreConfig.__post_init__ checks it.
    "pool_max_size": lambda v: _check_int("pool_max_size", v, None),
    "connect_timeout": lambda v: _check_seconds(
        "connect_timeout", v, "a finite number of seconds > 0", 0.0
    ),
    "statement_timeout": lambda v: (
        None
        if v is None
        else _check_seconds(
            "statement_timeout",
            v,
            f"a number of seconds between {_STATEMENT_TIMEOUT_MIN} and {_STATEMENT_TIMEOUT_MAX}, "
            "or None (server default)",
            _STATEMENT_TIMEOUT_MIN,
            _STATEMENT_TIMEOUT_MAX,
        )
    ),
    "application_name": _check_application_name,
    "max_data_bytes": lambda v: _check_int("max_data_bytes", v, 1),
    "changes": lambda v: _check_bool("changes", v),
    "coalesce": lambda v: _check_bool("coalesce", v),
    "channel": lambda v: _check_identifier("channel", v),
    "changes_retention": lambda v: _check_seconds(
        "changes_retention", v, "a number of seconds >= 1", 1.0, 10.0 * 365 * 86400
    ),
    "purge_interval": lambda v: _check_seconds(
        "purge_interval", v, "a finite number of seconds > 0", 0.0, 10.0 * 365 * 86400
    ),
    "pooler": _check_pooler,
    "listen_dsn": lambda v: _check_dsn(v, "listen_dsn"),
    "cache_size": lambda v: _check_int("cache_size", v, 0, MAX_CACHE_SIZE),
    "cache_bytes": lambda v: _check_int("cache_bytes", v, 1),
}

"""Per field, a function that returns the validated (possibly normalised) value or raises
:class:`ConfigError`; in the order of the ``StoreConfig`` fields."""

FIELD_NAMES: tuple[str, ...] = tuple(FIELD_CHECKS)
"""The ``StoreConfig`` field names, in order."""


__all__ = [
    "DEFAULT_APPLICATION_NAME",
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_DATA_BYTES",
    "FIELD_CHECKS",
    "FIELD_NAMES",
    "IDENTIFIER_RE",
    "POOLERS",
    "show",
]
