"""Where settings come from besides arguments: environment variables and config files.

Text from either source is converted to each field's type here, then validated by
:data:`~pgactors.config.fields.FIELD_CHECKS`; errors name the variable or file and key.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from ..errors import ConfigError
from .dsn import analyze_dsn
from .fields import FIELD_CHECKS, FIELD_NAMES, show

_INT_FIELDS = frozenset(
    {"port", "pool_min_size", "pool_max_size", "max_data_bytes", "cache_size", "cache_bytes"}
)
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
    ("PGACTORS_POOLER", "pooler"),
    ("PGACTORS_LISTEN_DSN", "listen_dsn"),
    ("PGACTORS_CACHE_SIZE", "cache_size"),
    ("PGACTORS_CACHE_BYTES", "cache_bytes"),
)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


_DSN_ALIASES = ("url", "connectionString", "connection_string")
_FILE_KEYS: dict[str, str] = {
    **{name: name for name in FIELD_NAMES},
    **{_camel(name): name for name in FIELD_NAMES},
    **dict.fromkeys(_DSN_ALIASES, "dsn"),
}
_ALLOWED_KEYS = (
    f"allowed keys: {', '.join(FIELD_NAMES)} (or their camelCase forms), "
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
            raise ConfigError(f"{field} must be an integer, got {show(text)}")
        return int(stripped)
    if field in _FLOAT_FIELDS:
        if not _FLOAT_TEXT_RE.fullmatch(stripped):
            raise ConfigError(f"{field} must be a number of seconds, got {show(text)}")
        return float(stripped)
    if field in _BOOL_FIELDS:
        if stripped.lower() not in _BOOL_TEXT:
            raise ConfigError(f"{field} must be true or false, got {show(text)}")
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


class EnvSettings(NamedTuple):
    """Validated field values read from environment variables, and the variable of each."""

    values: dict[str, object]
    sources: dict[str, str]

    def origin(self, error: ConfigError) -> str:
        """Which variable an error about the combined config comes from, for its message."""
        culprit = next(
            (var for field, var in self.sources.items() if str(error).startswith(field + " ")),
            None,
        )
        return (
            f"environment variable {culprit}" if culprit else "configuration from the environment"
        )


def read_env(env: Mapping[str, str], base_dsn: str | None) -> EnvSettings:
    """Settings from ``PGACTORS_DSN`` or else ``DATABASE_URL``, ``PG*`` and ``PGACTORS_*``.

    A ``PG*`` variable is skipped when the dsn (from the environment, else ``base_dsn``)
    already sets its parameter, as libpq does. Empty variables count as unset.
    """
    settings = EnvSettings({}, {})

    def get(var: str) -> str | None:
        return env.get(var) or None

    def put(var: str, field: str) -> None:
        text = get(var)
        if text is None:
            return
        try:
            settings.values[field] = FIELD_CHECKS[field](_from_text(field, text))
        except ConfigError as exc:
            raise ConfigError(f"environment variable {var}: {exc}") from None
        settings.sources[field] = var

    put("PGACTORS_DSN" if get("PGACTORS_DSN") else "DATABASE_URL", "dsn")
    dsn = settings.values.get("dsn", base_dsn)
    in_dsn = analyze_dsn(dsn).params if isinstance(dsn, str) else {}
    for var, field, keyword in _LIBPQ_ENV:
        if keyword not in in_dsn:
            put(var, field)
    for var, field in _PGACTORS_ENV:
        put(var, field)
    return settings


class FileSettings(NamedTuple):
    """Validated field values read from a config file, and how messages name the file."""

    where: str
    values: dict[str, Any]


def read_file(path: str | os.PathLike[str], env: Mapping[str, str]) -> FileSettings:
    """Settings from a YAML or TOML file; ``${VAR}`` references expand from ``env``."""
    file = Path(path)
    where = f"config file {file}"
    values: dict[str, Any] = {}
    keys_used: dict[str, object] = {}
    for key, raw in _load_table(file, where).items():
        field = _FILE_KEYS.get(key) if isinstance(key, str) else None
        if field is None:
            raise ConfigError(f"{where}: unknown key {key!r}{_suggest(key)}; {_ALLOWED_KEYS}")
        if field in keys_used:
            raise ConfigError(f"{where}: keys {keys_used[field]!r} and {key!r} both set {field}")
        keys_used[field] = key
        values[field] = _file_value(field, raw, env, f"{where}: key {key!r}")
    return FileSettings(where, values)


def _load_table(file: Path, where: str) -> dict[Any, Any]:
    """The file's table of settings: its top level, or its one ``pgactors`` table."""
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
    return data


def _file_value(field: str, raw: object, env: Mapping[str, str], context: str) -> object:
    """One file value, expanded and validated; errors start with ``context``."""
    value: object = raw
    try:
        if isinstance(raw, str):
            text = _substitute(raw, env, context)
            value = _from_text(field, text) if _SINGLE_REF_RE.fullmatch(raw) else text
        return FIELD_CHECKS[field](value)
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(
            message if message.startswith(context) else f"{context}: {message}"
        ) from None


__all__ = ["EnvSettings", "FileSettings", "read_env", "read_file"]
