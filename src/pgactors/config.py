"""Connection and storage settings: :class:`StoreConfig`, its sources and its redaction.

This module never imports the database driver; ``postgres.py`` turns a config into
a connection with :meth:`StoreConfig.conninfo_params` and :attr:`StoreConfig.dsn`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote

import yaml

from pgactors.checks import int_in_range
from pgactors.errors import ConfigError

DEFAULT_MAX_DATA_BYTES = 16 * 1024 * 1024
"""Default upper bound on the serialized size of one record's data."""

IDENTIFIER_RE = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")
"""Allowed schema names, table prefixes and channel names (short enough for suffixes)."""

_IDENTIFIER_RULE = (
    f"{IDENTIFIER_RE.pattern} (a lowercase letter or underscore, "
    "then at most 47 lowercase letters, digits or underscores)"
)
_URL_PREFIXES = ("postgresql://", "postgres://")
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_SECRET_KEYS = frozenset({"password", "sslpassword"})
_MASK = "***"
_DEFAULT_APPLICATION_NAME = "pgactors"
_DEFAULT_CONNECT_TIMEOUT = 10.0
# PostgreSQL stores statement_timeout as int milliseconds; below 1 ms it would round to 0,
# which the server reads as "no timeout".
_STATEMENT_TIMEOUT_MIN = 0.001
_STATEMENT_TIMEOUT_MAX = 2_147_483.647


def _check_identifier(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{field} must be a string matching {_IDENTIFIER_RULE}, {_got(value)}")
    if IDENTIFIER_RE.fullmatch(value) is None:
        raise ConfigError(f"{field} must match {_IDENTIFIER_RULE}, got {_show(value)}")
    return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _got(value: object) -> str:
    return f"got {_show(value)} ({type(value).__name__})"


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


def _check_dsn(value: object) -> str | None:
    if value is None:
        return None
    allowed = (
        "a string starting with postgresql:// or postgres://, "
        "or a libpq key=value string (e.g. 'host=db dbname=app')"
    )
    if not isinstance(value, str):
        raise ConfigError(f"dsn must be {allowed}, got a value of type {type(value).__name__}")
    if value.startswith(_URL_PREFIXES):
        if "\x00" in value:
            raise ConfigError("dsn must not contain NUL characters")
        return value
    # The value itself is never shown: a malformed DSN may still hold a password.
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*)://", value)
    if scheme is not None:
        raise ConfigError(f"dsn must be {allowed}, got a URL with scheme {scheme.group(1)!r}")
    if "\x00" in value or not _parse_keyvalue(value):
        raise ConfigError(f"dsn must be {allowed}, got a string that is neither (value not shown)")
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


_FIELD_CHECKS: dict[str, Callable[[object], object]] = {
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
}


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
    connect_timeout: float = _DEFAULT_CONNECT_TIMEOUT
    statement_timeout: float | None = None
    application_name: str = _DEFAULT_APPLICATION_NAME
    max_data_bytes: int = DEFAULT_MAX_DATA_BYTES
    changes: bool = True
    coalesce: bool = True
    channel: str = "pgactors_changes"
    changes_retention: float = 86400.0
    purge_interval: float = 60.0

    def __post_init__(self) -> None:
        for name, check in _FIELD_CHECKS.items():
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

    def __repr__(self) -> str:
        shown: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "password" and value is not None:
                text = repr(_MASK)
            elif f.name == "dsn" and value is not None:
                text = repr(self.redacted_dsn())
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
        return None if self.dsn is None else _redact_dsn(self.dsn)

    def replace(self, **overrides: object) -> StoreConfig:
        """A validated copy with ``overrides`` applied; ``None`` overrides are ignored."""
        unknown = sorted(set(overrides) - set(_FIELD_NAMES))
        if unknown:
            raise ConfigError(
                f"unknown StoreConfig field(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(_FIELD_NAMES)}"
            )
        changes: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self

    def conninfo_params(self) -> dict[str, str]:
        """libpq keyword parameters from the explicit fields, to merge over ``dsn``.

        ``application_name`` and ``connect_timeout`` are left out when they still hold
        their defaults and ``dsn`` sets them, so a DSN's own values are kept.
        """
        in_dsn = _analyze_dsn(self.dsn).params if self.dsn is not None else {}
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
        if not (
            self.application_name == _DEFAULT_APPLICATION_NAME and "application_name" in in_dsn
        ):
            params["application_name"] = self.application_name
        if not (self.connect_timeout == _DEFAULT_CONNECT_TIMEOUT and "connect_timeout" in in_dsn):
            params["connect_timeout"] = str(max(1, math.ceil(self.connect_timeout)))
        return params

    def target(self) -> str:
        """Where this config connects, for messages: ``host:port[,host:port][/database]``."""
        params = dict(_analyze_dsn(self.dsn).params) if self.dsn is not None else {}
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

        def get(var: str) -> str | None:
            return env.get(var) or None

        config_path = get("PGACTORS_CONFIG")
        base = cls.from_file(config_path, environ=env) if config_path else cls()
        values: dict[str, object] = {}
        sources: dict[str, str] = {}

        def put(var: str, field: str) -> None:
            text = get(var)
            if text is None:
                return
            try:
                values[field] = _FIELD_CHECKS[field](_from_text(field, text))
            except ConfigError as exc:
                raise ConfigError(f"environment variable {var}: {exc}") from None
            sources[field] = var

        put("PGACTORS_DSN" if get("PGACTORS_DSN") else "DATABASE_URL", "dsn")
        dsn = values.get("dsn", base.dsn)
        in_dsn = _analyze_dsn(dsn).params if isinstance(dsn, str) else {}
        for var, field, keyword in _LIBPQ_ENV:
            if keyword not in in_dsn:
                put(var, field)
        for var, field in _PGACTORS_ENV:
            put(var, field)
        try:
            return base.replace(**values)
        except ConfigError as exc:
            culprit = next((v for f, v in sources.items() if str(exc).startswith(f + " ")), None)
            origin = (
                f"environment variable {culprit}"
                if culprit
                else "configuration from the environment"
            )
            raise ConfigError(f"{origin}: {exc}") from None

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
        file = Path(path)
        where = f"config file {file}"
        suffix = file.suffix.lower()
        if suffix not in (".yaml", ".yml", ".toml"):
            raise ConfigError(
                f"{where}: unsupported extension {suffix or '(none)'!r}; use .yaml, .yml or .toml"
            )
        data = _read_settings(file, where, toml=suffix == ".toml")
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
        if "pgactors" in data:
            others = sorted(str(k) for k in data if k != "pgactors")
            if others:
                raise ConfigError(
                    f"{where}: settings must be either at top level or all under 'pgactors', "
                    f"found also {', '.join(others)}"
                )
            data = data["pgactors"]
            if not isinstance(data, dict):
                raise ConfigError(f"{where}: 'pgactors' must be a table of settings")

        values: dict[str, Any] = {}
        keys_used: dict[str, object] = {}
        for key, raw in data.items():
            field = _FILE_KEYS.get(key) if isinstance(key, str) else None
            if field is None:
                raise ConfigError(f"{where}: unknown key {key!r}{_suggest(key)}; {_ALLOWED_KEYS}")
            if field in keys_used:
                raise ConfigError(
                    f"{where}: keys {keys_used[field]!r} and {key!r} both set {field}"
                )
            keys_used[field] = key
            context = f"{where}: key {key!r}"
            value: object = raw
            try:
                if isinstance(raw, str):
                    text = _substitute(raw, env, context)
                    value = _from_text(field, text) if _SINGLE_REF_RE.fullmatch(raw) else text
                values[field] = _FIELD_CHECKS[field](value)
            except ConfigError as exc:
                message = str(exc)
                raise ConfigError(
                    message if message.startswith(context) else f"{context}: {message}"
                ) from None
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

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


_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(StoreConfig))
_INT_FIELDS = frozenset({"port", "pool_min_size", "pool_max_size", "max_data_bytes"})
_FLOAT_FIELDS = frozenset(
    {"connect_timeout", "statement_timeout", "changes_retention", "purge_interval"}
)
_BOOL_FIELDS = frozenset({"changes", "coalesce"})
_INT_TEXT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BOOL_TEXT = {
    "true": True, "yes": True, "on": True, "1": True,
    "false": False, "no": False, "off": False, "0": False,
}  # fmt: skip

_LIBPQ_ENV: tuple[tuple[str, str, str], ...] = (
    ("PGHOST", "host", "host"),
    ("PGPORT", "port", "port"),
    ("PGUSER", "user", "user"),
    ("PGPASSWORD", "password", "password"),
    ("PGDATABASE", "database", "dbname"),
    ("PGSSLMODE", "sslmode", "sslmode"),
    ("PGSSLROOTCERT", "sslrootcert", "sslrootcert"),
    ("PGSSLCERT", "sslcert", "sslcert"),
    ("PGSSLKEY", "sslkey", "sslkey"),
    ("PGAPPNAME", "application_name", "application_name"),
    ("PGCONNECT_TIMEOUT", "connect_timeout", "connect_timeout"),
)
_PGACTORS_ENV: tuple[tuple[str, str], ...] = (
    ("PGACTORS_SCHEMA", "schema"),
    ("PGACTORS_TABLE_PREFIX", "table_prefix"),
    ("PGACTORS_POOL_MIN_SIZE", "pool_min_size"),
    ("PGACTORS_POOL_MAX_SIZE", "pool_max_size"),
    ("PGACTORS_STATEMENT_TIMEOUT", "statement_timeout"),
    ("PGACTORS_MAX_DATA_BYTES", "max_data_bytes"),
    ("PGACTORS_COALESCE", "coalesce"),
    ("PGACTORS_CHANGES", "changes"),
    ("PGACTORS_CHANNEL", "channel"),
    ("PGACTORS_CHANGES_RETENTION", "changes_retention"),
    ("PGACTORS_PURGE_INTERVAL", "purge_interval"),
)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


_DSN_ALIASES = ("url", "connectionString", "connection_string")
_FILE_KEYS: dict[str, str] = {
    **{name: name for name in _FIELD_NAMES},
    **{_camel(name): name for name in _FIELD_NAMES},
    **dict.fromkeys(_DSN_ALIASES, "dsn"),
}
_ALLOWED_KEYS = (
    f"allowed keys: {', '.join(_FIELD_NAMES)} (or their camelCase forms), "
    f"and {', '.join(_DSN_ALIASES)} for dsn"
)


def _suggest(key: object) -> str:
    if not isinstance(key, str):
        return ""
    close = difflib.get_close_matches(key, list(_FILE_KEYS), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _from_text(field: str, text: str) -> object:
    """Convert environment/file text to the field's type (strings pass through)."""
    stripped = text.strip()
    if field in _INT_FIELDS:
        if not _INT_TEXT_RE.fullmatch(stripped):
            raise ConfigError(f"{field} must be an integer, got {_show(text)}")
        return int(stripped)
    if field in _FLOAT_FIELDS:
        if not _FLOAT_TEXT_RE.fullmatch(stripped):
            raise ConfigError(f"{field} must be a number of seconds, got {_show(text)}")
        return float(stripped)
    if field in _BOOL_FIELDS:
        if stripped.lower() not in _BOOL_TEXT:
            raise ConfigError(f"{field} must be true or false, got {_show(text)}")
        return _BOOL_TEXT[stripped.lower()]
    return text


def _read_settings(file: Path, where: str, *, toml: bool) -> object:
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror or exc}") from None
    if toml:
        try:
            return tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(f"{where} is not valid UTF-8") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    try:
        data = yaml.safe_load(raw)
    except yaml.MarkedYAMLError as exc:
        # Only the problem and position: PyYAML's snippet could show a password.
        mark = exc.problem_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(
            f"{where} is not valid YAML: {exc.problem or 'parse error'}{at}"
        ) from None
    except yaml.YAMLError:
        raise ConfigError(f"{where} is not valid YAML") from None
    return {} if data is None else data


_REF_RE = re.compile(r"\$\$\{|\$\{(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\})?")
_SINGLE_REF_RE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")


def _substitute(text: str, env: Mapping[str, str], context: str) -> str:
    def expand(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group("name"), match.group("default")
        if name is None:
            raise ConfigError(
                f"{context}: malformed ${{...}} reference (write ${{NAME}} or "
                "${NAME:-default}; $${ gives a literal ${)"
            )
        if default is not None and "${" in default:
            raise ConfigError(
                f"{context}: nested ${{...}} in the default of {name} is not supported"
            )
        value = env.get(name)
        if default is not None and not value:
            return default
        if value is None:
            raise ConfigError(
                f"{context}: environment variable {name} is not set "
                f"(set it or write ${{{name}:-default}})"
            )
        return value

    return _REF_RE.sub(expand, text)


# --- DSN parsing and redaction ------------------------------------------------------------

_KEYWORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPACE = " \t\n\r\f\v"


class _DsnInfo(NamedTuple):
    params: dict[str, str]
    spans: dict[str, tuple[int, int]]  # raw span of each parameter's value in the DSN
    secret_spans: list[tuple[int, int]]
    secrets: list[str]


def _parse_keyvalue(text: str) -> list[tuple[str, str, int, int]] | None:
    """Parse a libpq ``key=value`` string into (key, value, raw start, raw end) items.

    Returns None when malformed (or empty), following libpq's quoting rules.
    """
    items: list[tuple[str, str, int, int]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _SPACE:
            i += 1
        if i >= n:
            return items or None
        start = i
        while i < n and text[i] not in _SPACE and text[i] != "=":
            i += 1
        key = text[start:i]
        while i < n and text[i] in _SPACE:
            i += 1
        if i >= n or text[i] != "=" or not _KEYWORD_RE.fullmatch(key):
            return None
        i += 1
        while i < n and text[i] in _SPACE:
            i += 1
        value_start = i
        chars: list[str] = []
        if i < n and text[i] == "'":
            i += 1
            while True:
                if i >= n:
                    return None
                if text[i] == "\\" and i + 1 < n:
                    chars.append(text[i + 1])
                    i += 2
                elif text[i] == "'":
                    i += 1
                    break
                else:
                    chars.append(text[i])
                    i += 1
        else:
            while i < n and text[i] not in _SPACE:
                if text[i] == "\\" and i + 1 < n:
                    chars.append(text[i + 1])
                    i += 2
                else:
                    chars.append(text[i])
                    i += 1
        items.append((key, "".join(chars), value_start, i))


def _is_conninfo(value: str) -> bool:
    return value.startswith(_URL_PREFIXES) or "=" in value


def _analyze_dsn(dsn: str) -> _DsnInfo:
    """The parameters a DSN sets and where its passwords are; empty when unparseable."""
    info = _analyze_url(dsn) if dsn.startswith(_URL_PREFIXES) else _analyze_keyvalue(dsn)
    # libpq may expand a dbname that is itself a connection string; never show its secrets.
    dbname = info.params.get("dbname")
    if dbname is not None and dbname != dsn and _is_conninfo(dbname):
        nested = _analyze_dsn(dbname)
        if nested.secrets:
            info.params["dbname"] = _redact_dsn(dbname)
            info.secrets.extend((*nested.secrets, dbname))
            if "dbname" in info.spans:
                info.secret_spans.append(info.spans["dbname"])
    return info


def _analyze_keyvalue(dsn: str) -> _DsnInfo:
    info = _DsnInfo({}, {}, [], [])
    for key, value, start, end in _parse_keyvalue(dsn) or []:
        info.params[key] = value
        info.spans[key] = (start, end)
        if key in _SECRET_KEYS and start < end:
            info.secret_spans.append((start, end))
            info.secrets.extend((value, dsn[start:end]))
    return info


def _url_query_spans(dsn: str) -> list[tuple[str, tuple[int, int]]]:
    """(decoded key, raw value span) for each ``key=value`` in a URL's query."""
    query = dsn.find("?", _url_host_start(dsn))
    if query < 0:
        return []
    found: list[tuple[str, tuple[int, int]]] = []
    pos = query + 1
    for part in dsn[query + 1 :].split("&"):
        key, sep, _ = part.partition("=")
        if sep:
            value_start = pos + len(key) + 1
            found.append((unquote(key), (value_start, pos + len(part))))
        pos += len(part) + 1
    return found


def _url_start(dsn: str) -> int:
    return len(next(p for p in _URL_PREFIXES if dsn.startswith(p)))


def _url_userinfo_end(dsn: str) -> int:
    """Index of the ``@`` ending the URL's userinfo, or -1.

    libpq takes the first ``@`` before any ``/``; the last ``@`` before ``?`` is also
    considered so a password holding a raw ``/`` or ``@`` is never mistaken for a host.
    """
    start = _url_start(dsn)
    stop = re.compile(r"[@/]").search(dsn, start)
    libpq_at = stop.start() if stop is not None and stop.group() == "@" else -1
    query = dsn.find("?", start)
    last_at = dsn.rfind("@", start, query if query >= 0 else len(dsn))
    return max(libpq_at, last_at)


def _url_host_start(dsn: str) -> int:
    at = _url_userinfo_end(dsn)
    if at >= 0:
        return at + 1
    return _url_start(dsn)


def _analyze_url(dsn: str) -> _DsnInfo:
    info = _DsnInfo({}, {}, [], [])
    start = _url_start(dsn)
    at = _url_userinfo_end(dsn)
    if at >= 0:
        user, colon, _ = dsn[start:at].partition(":")
        if user:
            info.params["user"] = unquote(user)
        password_start = start + len(user) + 1
        if colon and password_start < at:
            info.params["password"] = unquote(dsn[password_start:at])
            info.secret_spans.append((password_start, at))
            info.secrets.extend((dsn[password_start:at], info.params["password"]))
    host_start = _url_host_start(dsn)
    end = re.compile(r"[/?]").search(dsn, host_start)
    host_end = end.start() if end is not None else len(dsn)
    hosts: list[str] = []
    ports: list[str] = []
    for entry in dsn[host_start:host_end].split(","):
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port = entry.partition(":")
        hosts.append(unquote(host))
        ports.append(unquote(port))
    if any(hosts):
        info.params["host"] = ",".join(hosts)
    if any(ports):
        info.params["port"] = ",".join(ports)
    if host_end < len(dsn) and dsn[host_end] == "/":
        query = dsn.find("?", host_end)
        dbname_end = query if query >= 0 else len(dsn)
        if dbname_end > host_end + 1:
            info.params["dbname"] = unquote(dsn[host_end + 1 : dbname_end])
            info.spans["dbname"] = (host_end + 1, dbname_end)
    for key, (value_start, value_end) in _url_query_spans(dsn):
        raw_value = dsn[value_start:value_end]
        info.params[key] = unquote(raw_value)
        info.spans[key] = (value_start, value_end)
        if key in _SECRET_KEYS and raw_value:
            info.secret_spans.append((value_start, value_end))
            info.secrets.extend((raw_value, info.params[key]))
    return info


def _redact_dsn(dsn: str) -> str:
    info = _analyze_dsn(dsn)
    if not info.params:
        return _redact_patterns(dsn)
    result: list[str] = []
    pos = 0
    for start, end in sorted(set(info.secret_spans)):
        result.append(dsn[pos:start])
        result.append(_MASK)
        pos = end
    result.append(dsn[pos:])
    return "".join(result)


_URL_PASSWORD_RE = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@]*:)(?P<secret>\S*?)(?=@[^\s@]*(?:\s|$))"
)
_KEYWORD_PASSWORD_RE = re.compile(
    r"(?P<head>password\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE
)


def _redact_patterns(text: str) -> str:
    text = _URL_PASSWORD_RE.sub(lambda m: m.group("head") + _MASK, text)
    return _KEYWORD_PASSWORD_RE.sub(lambda m: m.group("head") + _MASK, text)


def redact(text: str, config: StoreConfig | None = None) -> str:
    """Replace every password of ``config`` (field or DSN) found in ``text`` with ``***``.

    Also masks anything shaped like ``scheme://user:secret@`` or ``password=secret``.
    """
    secrets: list[str] = []
    if config is not None:
        if config.password:
            secrets.append(config.password)
        if config.dsn is not None:
            secrets.extend(_analyze_dsn(config.dsn).secrets)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, _MASK)
    return _redact_patterns(text)


__all__ = [
    "DEFAULT_MAX_DATA_BYTES",
    "IDENTIFIER_RE",
    "StoreConfig",
    "redact",
]
