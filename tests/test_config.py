"""StoreConfig: validation, redaction, sources (env, YAML, TOML) and target description."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from pgactors.config import (
    DEFAULT_MAX_DATA_BYTES,
    IDENTIFIER_RE,
    StoreConfig,
    redact,
)
from pgactors.config.dsn import analyze_dsn
from pgactors.config.fields import FIELD_NAMES
from pgactors.errors import ConfigError

SECRET = "hunter2-Secret"


def config_error(**kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        StoreConfig(**kwargs)  # type: ignore[arg-type]
    return str(info.value)


# --- defaults and simple properties --------------------------------------------------------


def test_defaults() -> None:
    config = StoreConfig()
    assert config.dsn is None
    assert config.schema == "public"
    assert config.table_prefix == "pgactors"
    assert (config.pool_min_size, config.pool_max_size) == (1, 10)
    assert config.connect_timeout == 10.0
    assert config.statement_timeout is None
    assert config.application_name == "pgactors"
    assert config.max_data_bytes == DEFAULT_MAX_DATA_BYTES == 16 * 1024 * 1024
    assert config.changes is True
    assert config.has_target is False


def test_every_field_is_checked_in_order() -> None:
    assert tuple(f.name for f in dataclasses.fields(StoreConfig)) == FIELD_NAMES


def test_has_target() -> None:
    assert StoreConfig(dsn="postgresql://db/app").has_target is True
    assert StoreConfig(host="db").has_target is True
    assert StoreConfig(user="bob", database="app").has_target is False


def test_is_frozen_and_hashable() -> None:
    config = StoreConfig(host="db")
    with pytest.raises(AttributeError):
        config.host = "other"  # type: ignore[misc]
    assert hash(config) == hash(StoreConfig(host="db"))


def test_int_timeouts_are_normalised_to_float() -> None:
    config = StoreConfig(connect_timeout=5, statement_timeout=2)
    assert config.connect_timeout == 5.0 and isinstance(config.connect_timeout, float)
    assert config.statement_timeout == 2.0 and isinstance(config.statement_timeout, float)


# --- identifiers ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "_", "public", "my_app_2", "a" * 48])
def test_identifier_accepted(name: str) -> None:
    assert StoreConfig(schema=name).schema == name
    assert IDENTIFIER_RE.fullmatch(name)


@pytest.mark.parametrize(
    "name",
    [
        'x"; drop table y; --',
        "",
        "Public",
        "1abc",
        "a-b",
        "a b",
        "a" * 49,
        "abc\n",
        "é",
        "a.b",
    ],
)
def test_identifier_refused(name: str) -> None:
    message = config_error(channel=name)
    assert message.startswith("channel must match ")
    assert IDENTIFIER_RE.pattern in message
    assert repr(name) in message


def test_identifier_refuses_non_string() -> None:
    with pytest.raises(
        ConfigError, match=r"^table_prefix must be a string matching .*got 5 \(int\)"
    ):
        StoreConfig(table_prefix=5)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["schema", "table_prefix"])
def test_hostile_identifiers_refused_by_config(field: str) -> None:
    hostile = 'x"; drop table y; --'
    message = config_error(**{field: hostile})
    assert message.startswith(f"{field} must match")
    assert repr(hostile) in message


def test_schema_pg_prefix_is_reserved() -> None:
    assert "reserved" in config_error(schema="pg_catalog")


def test_long_values_are_truncated_in_messages() -> None:
    message = config_error(schema="x" * 500)
    assert len(message) < 300
    assert message.endswith("...")


# --- field validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"port": 0}, "port must be an integer between 1 and 65535, got 0"),
        ({"port": 65536}, "port must be an integer between 1 and 65535, got 65536"),
        ({"port": True}, "port must be an integer between 1 and 65535, got True (bool)"),
        ({"port": "5432"}, "port must be an integer between 1 and 65535, got '5432' (str)"),
        ({"port": 5432.0}, "port must be an integer between 1 and 65535, got 5432.0 (float)"),
        ({"pool_min_size": -1}, "pool_min_size must be an integer >= 0, got -1"),
        ({"pool_min_size": "2"}, "pool_min_size must be an integer >= 0, got '2' (str)"),
        ({"pool_max_size": 0}, "pool_max_size must be an integer >= pool_min_size (1), got 0"),
        (
            {"pool_min_size": 5, "pool_max_size": 4},
            "pool_max_size must be an integer >= pool_min_size (5), got 4",
        ),
        (
            {"pool_min_size": 0, "pool_max_size": 0},
            "pool_max_size must be an integer >= 1, got 0",
        ),
        ({"pool_max_size": False}, "pool_max_size must be an integer, got False (bool)"),
        ({"connect_timeout": 0}, "connect_timeout must be a finite number of seconds > 0, got 0"),
        (
            {"connect_timeout": -1.5},
            "connect_timeout must be a finite number of seconds > 0, got -1.5",
        ),
        (
            {"connect_timeout": float("inf")},
            "connect_timeout must be a finite number of seconds > 0, got inf",
        ),
        (
            {"connect_timeout": "10"},
            "connect_timeout must be a finite number of seconds > 0, got '10' (str)",
        ),
        (
            {"connect_timeout": True},
            "connect_timeout must be a finite number of seconds > 0, got True (bool)",
        ),
        ({"statement_timeout": 0}, "statement_timeout must be a number of seconds between"),
        ({"statement_timeout": 0.0001}, "statement_timeout must be a number of seconds between"),
        ({"statement_timeout": float("nan")}, "statement_timeout must be a number of seconds"),
        ({"statement_timeout": 3e6}, "statement_timeout must be a number of seconds between"),
        ({"max_data_bytes": 0}, "max_data_bytes must be an integer >= 1, got 0"),
        ({"max_data_bytes": 1.5}, "max_data_bytes must be an integer >= 1, got 1.5 (float)"),
        ({"changes": 1}, "changes must be true or false, got 1 (int)"),
        ({"changes": "yes"}, "changes must be true or false, got 'yes' (str)"),
        ({"sslmode": "strict"}, "sslmode must be one of disable, allow, prefer, require"),
        ({"sslmode": 1}, "sslmode must be one of"),
        ({"host": ""}, "host must be a non-empty string or None, got ''"),
        ({"host": 5}, "host must be a string or None, got 5 (int)"),
        ({"user": ["bob"]}, "user must be a string or None, got ['bob'] (list)"),
        ({"database": "a\x00b"}, "database must not contain NUL characters"),
        ({"sslrootcert": b"/ca.pem"}, "sslrootcert must be a string or None"),
        ({"sslcert": ""}, "sslcert must be a non-empty string"),
        ({"sslkey": 1}, "sslkey must be a string or None"),
        ({"application_name": ""}, "application_name must be 1 to 63 printable ASCII characters"),
        ({"application_name": "a" * 64}, "application_name must be 1 to 63 printable ASCII"),
        ({"application_name": "tab\there"}, "application_name must be 1 to 63 printable ASCII"),
        ({"application_name": "café"}, "application_name must be 1 to 63 printable ASCII"),
        ({"application_name": None}, "application_name must be 1 to 63 printable ASCII"),
        ({"schema": None}, "schema must be a string matching"),
        ({"table_prefix": "Bad"}, "table_prefix must match"),
    ],
)
def test_invalid_field_values(kwargs: dict[str, object], expected: str) -> None:
    assert config_error(**kwargs).startswith(expected)


@pytest.mark.parametrize(
    "mode", ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
)
def test_every_sslmode_accepted(mode: str) -> None:
    assert StoreConfig(sslmode=mode).sslmode == mode


def test_valid_edge_values_accepted() -> None:
    config = StoreConfig(
        port=65535,
        pool_min_size=0,
        pool_max_size=1,
        connect_timeout=0.1,
        statement_timeout=0.001,
        application_name="a" * 63,
        max_data_bytes=1,
        changes=False,
    )
    assert (config.port, config.pool_min_size, config.pool_max_size) == (65535, 0, 1)
    assert config.statement_timeout == 0.001
    assert config.changes is False
    assert StoreConfig(pool_min_size=4, pool_max_size=4).pool_max_size == 4


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://localhost/app",
        "postgres://u@h:5433/db",
        "postgresql://",
        "host=db dbname=app",
        "dbname=app",
        "host = db  password='a b'",
    ],
)
def test_valid_dsn(dsn: str) -> None:
    assert StoreConfig(dsn=dsn).dsn == dsn


@pytest.mark.parametrize(
    "dsn",
    ["", "   ", "localhost", "postgresql:/x", "host", "=x", "host='unterminated", "a b=c"],
)
def test_invalid_dsn(dsn: str) -> None:
    message = config_error(dsn=dsn)
    assert message.startswith("dsn must be a string starting with postgresql:// or postgres://")
    assert "key=value" in message


def test_invalid_dsn_type() -> None:
    assert config_error(dsn=b"postgresql://x").endswith("got a value of type bytes")


def test_wrong_scheme_named_but_password_not_shown() -> None:
    message = config_error(dsn=f"mysql://bob:{SECRET}@db/app")
    assert "scheme 'mysql'" in message
    assert SECRET not in message
    assert "bob" not in message


def test_garbage_dsn_is_not_echoed() -> None:
    assert SECRET not in config_error(dsn=SECRET)


# --- password never shown ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dsn", "redacted"),
    [
        (
            f"postgresql://bob:{SECRET}@db:5432/app",
            "postgresql://bob:***@db:5432/app",
        ),
        (f"postgres://bob:{SECRET}@db", "postgres://bob:***@db"),
        ("postgresql://bob:p%40ss%2Fw@db/app", "postgresql://bob:***@db/app"),
        ("postgresql://bob@db/app", "postgresql://bob@db/app"),
        ("postgresql://bob:@db/app", "postgresql://bob:@db/app"),
        (
            f"postgresql://db/app?sslmode=require&password={SECRET}&connect_timeout=3",
            "postgresql://db/app?sslmode=require&password=***&connect_timeout=3",
        ),
        (
            f"postgresql://db/app?sslpassword={SECRET}",
            "postgresql://db/app?sslpassword=***",
        ),
        (f"host=db password={SECRET} dbname=app", "host=db password=*** dbname=app"),
        (f"host=db password='{SECRET} x' dbname=app", "host=db password=*** dbname=app"),
        (f"host=db password = '{SECRET}'", "host=db password = ***"),
        ("host=db password='it\\'s secret'", "host=db password=***"),
        (f"password={SECRET}", "password=***"),
        ("host=db dbname=app", "host=db dbname=app"),
        # A raw '/', '@' or '?' in the password (libpq wants them percent-encoded).
        (f"postgresql://bob:{SECRET}/x@db/app", "postgresql://bob:***@db/app"),
        (f"postgresql://bob:{SECRET}@x@db/app", "postgresql://bob:***@db/app"),
        (f"postgresql://bob:{SECRET}?x@db/app", "postgresql://bob:***@db/app"),
        # A dbname that is itself a connection string.
        (f"dbname='postgresql://u:{SECRET}@h/db' host=h", "dbname=*** host=h"),
    ],
)
def test_redacted_dsn(dsn: str, redacted: str) -> None:
    config = StoreConfig(dsn=dsn)
    assert config.redacted_dsn() == redacted
    assert SECRET not in repr(config)
    assert SECRET not in str(config)
    assert SECRET not in config.target()
    assert repr(redacted) in repr(config)


def test_redacted_dsn_none() -> None:
    assert StoreConfig().redacted_dsn() is None


def test_password_field_hidden_in_repr_and_str() -> None:
    config = StoreConfig(host="db", user="bob", password=SECRET)
    for text in (repr(config), str(config), f"{config}", f"{config!r}"):
        assert SECRET not in text
        assert "password='***'" in text
        assert "user='bob'" in text
        assert text.startswith("StoreConfig(dsn=None, host='db'")
    assert "password=None" in repr(StoreConfig())


def test_password_never_in_validation_errors() -> None:
    message = config_error(password=12345)
    assert message == "password must be a string or None, got a value of type int"
    message = config_error(password=SECRET, pool_max_size=0)
    assert SECRET not in message
    message = config_error(dsn=f"postgresql://u:{SECRET}@h/db", port=0)
    assert SECRET not in message


def test_redact_scrubs_every_known_password() -> None:
    config = StoreConfig(
        dsn="postgresql://bob:dsn%40pw@db/app?sslpassword=keypass",
        password=SECRET,
    )
    message = f"failed: {SECRET} / dsn@pw / dsn%40pw / keypass / host db"
    assert redact(message, config) == "failed: *** / *** / *** / *** / host db"


def test_redact_keyvalue_password_forms() -> None:
    config = StoreConfig(dsn="host=db password='se cret'")
    assert redact("bad password se cret!", config) == "bad password ***!"
    assert (
        redact("conninfo: host=db password='se cret'", config) == "conninfo: host=db password=***"
    )


def test_redact_masks_password_shapes_without_config() -> None:
    assert redact("connect to postgresql://u:pw@h/db failed") == (
        "connect to postgresql://u:***@h/db failed"
    )
    assert redact("host=h password=abc user=u") == "host=h password=*** user=u"
    assert redact("PGPASSWORD=abc sslpassword='x y'") == "PGPASSWORD=*** sslpassword=***"
    assert redact('FATAL: password authentication failed for user "bob"') == (
        'FATAL: password authentication failed for user "bob"'
    )


def test_redact_leaves_text_without_passwords_alone() -> None:
    config = StoreConfig(host="db")
    assert redact("could not connect to db:5432", config) == "could not connect to db:5432"


# --- replace -------------------------------------------------------------------------------


def test_replace_returns_validated_copy() -> None:
    base = StoreConfig(host="db")
    changed = base.replace(port=6543, schema="app")
    assert (changed.host, changed.port, changed.schema) == ("db", 6543, "app")
    assert base.port is None and base.schema == "public"


def test_replace_ignores_none() -> None:
    base = StoreConfig(host="db", port=6543, statement_timeout=5)
    changed = base.replace(host=None, port=None, statement_timeout=None, user="bob")
    assert (changed.host, changed.port, changed.statement_timeout) == ("db", 6543, 5.0)
    assert changed.user == "bob"
    assert base.replace(host=None) == base


def test_replace_validates() -> None:
    with pytest.raises(ConfigError, match=r"^pool_max_size must be an integer >= pool_min_size"):
        StoreConfig().replace(pool_min_size=20)
    with pytest.raises(ConfigError, match=r"^table_prefix must match"):
        StoreConfig().replace(table_prefix="x; drop")


def test_replace_unknown_field() -> None:
    with pytest.raises(ConfigError) as info:
        StoreConfig().replace(hots="db", port=None)
    message = str(info.value)
    assert "hots" in message
    assert "allowed: dsn, host, port, user, password, database" in message
    assert "max_data_bytes, changes" in message


# --- conninfo_params -----------------------------------------------------------------------


def test_conninfo_params_defaults() -> None:
    assert StoreConfig().conninfo_params() == {
        "application_name": "pgactors",
        "connect_timeout": "10",
    }


def test_conninfo_params_all_fields() -> None:
    config = StoreConfig(
        host="db",
        port=6543,
        user="bob",
        password=SECRET,
        database="app",
        sslmode="verify-full",
        sslrootcert="/ca.pem",
        sslcert="/c.pem",
        sslkey="/c.key",
        application_name="worker",
        connect_timeout=2.1,
        statement_timeout=3,
    )
    assert config.conninfo_params() == {
        "host": "db",
        "port": "6543",
        "user": "bob",
        "password": SECRET,
        "dbname": "app",
        "sslmode": "verify-full",
        "sslrootcert": "/ca.pem",
        "sslcert": "/c.pem",
        "sslkey": "/c.key",
        "application_name": "worker",
        "connect_timeout": "3",
    }


def test_conninfo_params_connect_timeout_minimum_one() -> None:
    assert StoreConfig(connect_timeout=0.2).conninfo_params()["connect_timeout"] == "1"
    assert StoreConfig(connect_timeout=1.0).conninfo_params()["connect_timeout"] == "1"


def test_conninfo_params_keep_dsn_values_over_defaults() -> None:
    config = StoreConfig(dsn="postgresql://db/app?application_name=mine&connect_timeout=3")
    assert config.conninfo_params() == {}
    explicit = config.replace(application_name="worker", connect_timeout=4)
    assert explicit.conninfo_params() == {"application_name": "worker", "connect_timeout": "4"}


# --- target --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (StoreConfig(), "localhost:5432"),
        (StoreConfig(host="db"), "db:5432"),
        (StoreConfig(host="db", port=6543, database="app"), "db:6543/app"),
        (StoreConfig(database="app"), "localhost:5432/app"),
        (StoreConfig(dsn="postgresql://db.example.com/app"), "db.example.com:5432/app"),
        (StoreConfig(dsn=f"postgresql://u:{SECRET}@db:6000/app"), "db:6000/app"),
        (StoreConfig(dsn="postgres://db1:5433,db2,db3:5435/app"), "db1:5433,db2:5432,db3:5435/app"),
        (StoreConfig(dsn="postgresql://[::1]:6543/x"), "[::1]:6543/x"),
        (StoreConfig(dsn="postgresql://"), "localhost:5432"),
        (
            StoreConfig(dsn="postgresql:///app?host=/var/run/postgresql"),
            "/var/run/postgresql:5432/app",
        ),
        (StoreConfig(dsn="postgresql://%2Ftmp:5439/app"), "/tmp:5439/app"),
        (StoreConfig(dsn="postgresql://db/app?port=7000&dbname=other"), "db:7000/other"),
        (StoreConfig(dsn="host=db port=6543 dbname=app"), "db:6543/app"),
        (StoreConfig(dsn="host=/tmp dbname=app"), "/tmp:5432/app"),
        (StoreConfig(dsn="host=/tmp,db2 port=5432,5433"), "/tmp:5432,db2:5433"),
        (StoreConfig(dsn="host=a,b port=6000"), "a:6000,b:6000"),
        (StoreConfig(dsn="hostaddr=10.0.0.1 dbname=app"), "10.0.0.1:5432/app"),
        (StoreConfig(dsn=f"host=db password={SECRET}"), "db:5432"),
        # Explicit fields win over the dsn, component by component.
        (StoreConfig(dsn="postgresql://db:6000/app", host="other"), "other:6000/app"),
        (StoreConfig(dsn="host=db dbname=app", port=7000, database="x"), "db:7000/x"),
    ],
)
def test_target(config: StoreConfig, expected: str) -> None:
    assert config.target() == expected


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://bob:s%40cret@db1:5433,db2/app?sslmode=require&password=qpw",
        "postgres://h",
        "postgresql://",
        "postgresql:///app?host=/tmp",
        "postgresql://%2Fvar%2Frun%2Fpostgresql/app",
        "postgresql://[::1]:6543/x",
        "postgresql://u@h:1/d?application_name=x&connect_timeout=3",
        "postgresql://u:pa?ss@host/db",
        "postgresql://u:@host/db",
        "host=/var/run/postgresql,h2 port=5432,6000 dbname=app password='se cret' user=x",
        "host = h  port= 5 dbname ='a b\\'c' password=x\\ y",
        "host=h hostaddr=1.2.3.4",
    ],
)
def test_dsn_parsing_agrees_with_libpq(dsn: str) -> None:
    assert analyze_dsn(dsn).params == conninfo_to_dict(dsn)


# --- from_env ------------------------------------------------------------------------------


def test_from_env_empty_gives_defaults() -> None:
    assert StoreConfig.from_env({}) == StoreConfig()


def test_from_env_libpq_and_pgactors_variables() -> None:
    config = StoreConfig.from_env(
        {
            "PGHOST": "db",
            "PGPORT": "6543",
            "PGUSER": "bob",
            "PGPASSWORD": SECRET,
            "PGDATABASE": "app",
            "PGSSLMODE": "require",
            "PGSSLROOTCERT": "/ca.pem",
            "PGSSLCERT": "/c.pem",
            "PGSSLKEY": "/c.key",
            "PGAPPNAME": "worker",
            "PGCONNECT_TIMEOUT": "3",
            "PGACTORS_SCHEMA": "actors",
            "PGACTORS_TABLE_PREFIX": "pa",
            "PGACTORS_POOL_MIN_SIZE": "2",
            "PGACTORS_POOL_MAX_SIZE": "20",
            "PGACTORS_STATEMENT_TIMEOUT": "1.5",
            "PGACTORS_MAX_DATA_BYTES": "1024",
            "UNRELATED": "x",
        }
    )
    assert config == StoreConfig(
        host="db",
        port=6543,
        user="bob",
        password=SECRET,
        database="app",
        sslmode="require",
        sslrootcert="/ca.pem",
        sslcert="/c.pem",
        sslkey="/c.key",
        application_name="worker",
        connect_timeout=3.0,
        schema="actors",
        table_prefix="pa",
        pool_min_size=2,
        pool_max_size=20,
        statement_timeout=1.5,
        max_data_bytes=1024,
    )


def test_from_env_pgactors_dsn_beats_database_url() -> None:
    both = {"PGACTORS_DSN": "postgresql://a/x", "DATABASE_URL": "postgresql://b/y"}
    assert StoreConfig.from_env(both).dsn == "postgresql://a/x"
    assert StoreConfig.from_env({"DATABASE_URL": "postgresql://b/y"}).dsn == "postgresql://b/y"
    empty = {"PGACTORS_DSN": "", "DATABASE_URL": "host=b"}
    assert StoreConfig.from_env(empty).dsn == "host=b"


def test_from_env_libpq_variables_do_not_override_dsn_parameters() -> None:
    config = StoreConfig.from_env(
        {
            "DATABASE_URL": "postgresql://bob:pw@prod:5432/app",
            "PGHOST": "localhost",
            "PGPASSWORD": "other",
            "PGDATABASE": "other",
            "PGSSLMODE": "require",
        }
    )
    assert (config.host, config.password, config.database) == (None, None, None)
    assert config.sslmode == "require"
    assert config.target() == "prod:5432/app"


def test_from_env_empty_variables_are_unset() -> None:
    assert StoreConfig.from_env({"PGHOST": "", "PGPORT": "", "PGACTORS_CONFIG": ""}) == (
        StoreConfig()
    )


@pytest.mark.parametrize(
    ("var", "value", "field"),
    [
        ("PGPORT", "abc", "port"),
        ("PGPORT", "1_000", "port"),
        ("PGCONNECT_TIMEOUT", "ten", "connect_timeout"),
        ("PGACTORS_POOL_MIN_SIZE", "1.5", "pool_min_size"),
        ("PGACTORS_POOL_MAX_SIZE", "x", "pool_max_size"),
        ("PGACTORS_STATEMENT_TIMEOUT", "nan", "statement_timeout"),
        ("PGACTORS_MAX_DATA_BYTES", "16MB", "max_data_bytes"),
    ],
)
def test_from_env_conversion_errors_name_variable_and_field(
    var: str, value: str, field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        StoreConfig.from_env({var: value})
    message = str(info.value)
    assert message.startswith(f"environment variable {var}: {field} must be")
    assert repr(value) in message


def test_from_env_validation_errors_name_variable() -> None:
    with pytest.raises(ConfigError, match=r"^environment variable PGPORT: port must be an integer"):
        StoreConfig.from_env({"PGPORT": "70000"})
    with pytest.raises(
        ConfigError, match=r"^environment variable PGACTORS_SCHEMA: schema must match"
    ):
        StoreConfig.from_env({"PGACTORS_SCHEMA": "x; drop"})
    with pytest.raises(
        ConfigError,
        match=r"^environment variable PGACTORS_POOL_MAX_SIZE: pool_max_size must be an integer "
        r">= pool_min_size \(1\), got 0",
    ):
        StoreConfig.from_env({"PGACTORS_POOL_MAX_SIZE": "0"})


def test_from_env_bad_dsn_does_not_leak_password() -> None:
    with pytest.raises(ConfigError) as info:
        StoreConfig.from_env({"DATABASE_URL": f"mysql://u:{SECRET}@h/db"})
    assert str(info.value).startswith("environment variable DATABASE_URL: dsn must be")
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigError) as info:
        StoreConfig.from_env({"PGPASSWORD": SECRET, "PGACTORS_POOL_MAX_SIZE": "0"})
    assert SECRET not in str(info.value)


def test_from_env_reads_config_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "pgactors.yaml"
    path.write_text("host: filehost\nschema: fromfile\npoolMaxSize: 7\ndsn: ${FILE_DSN}\n")
    config = StoreConfig.from_env(
        {
            "PGACTORS_CONFIG": str(path),
            "FILE_DSN": "dbname=app",
            "PGHOST": "envhost",
            "PGACTORS_POOL_MAX_SIZE": "9",
        }
    )
    assert config.dsn == "dbname=app"  # substitution used the given environ
    assert config.host == "envhost"
    assert config.schema == "fromfile"
    assert config.pool_max_size == 9


def test_from_env_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        StoreConfig.from_env({"PGACTORS_CONFIG": str(missing)})


def test_from_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PGACTORS_CONFIG", "PGACTORS_DSN", "DATABASE_URL", "PGHOST", "PGPORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PGACTORS_DSN", "postgresql://from-os/app")
    assert StoreConfig.from_env().dsn == "postgresql://from-os/app"


# --- from_file -----------------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_from_file_yaml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        """
dsn: postgresql://db/app
port: 6543
schema: actors
table_prefix: pa
pool_min_size: 0
pool_max_size: 3
connect_timeout: 2.5
statement_timeout: 1
application_name: worker
max_data_bytes: 1000
changes: false
""",
    )
    assert StoreConfig.from_file(path) == StoreConfig(
        dsn="postgresql://db/app",
        port=6543,
        schema="actors",
        table_prefix="pa",
        pool_min_size=0,
        pool_max_size=3,
        connect_timeout=2.5,
        statement_timeout=1.0,
        application_name="worker",
        max_data_bytes=1000,
        changes=False,
    )


def test_from_file_yml_and_str_path(tmp_path: Path) -> None:
    path = write(tmp_path, "c.YML", "host: db\n")
    assert StoreConfig.from_file(str(path)).host == "db"


def test_from_file_toml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.toml",
        """
url = "postgresql://db/app"
tablePrefix = "pa"
poolMaxSize = 4
maxDataBytes = 2048
statementTimeout = 0.5
sslmode = "require"
""",
    )
    config = StoreConfig.from_file(path)
    assert config.dsn == "postgresql://db/app"
    assert (config.table_prefix, config.pool_max_size, config.max_data_bytes) == ("pa", 4, 2048)
    assert config.statement_timeout == 0.5
    assert config.sslmode == "require"


def test_from_file_nested_pgactors_table(tmp_path: Path) -> None:
    yaml_path = write(tmp_path, "c.yaml", "pgactors:\n  connectionString: host=db\n  schema: s\n")
    toml_path = write(
        tmp_path, "c.toml", '[pgactors]\nconnection_string = "host=db"\nschema = "s"\n'
    )
    expected = StoreConfig(dsn="host=db", schema="s")
    assert StoreConfig.from_file(yaml_path) == expected
    assert StoreConfig.from_file(toml_path) == expected


def test_from_file_nested_table_must_be_alone(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "pgactors:\n  host: db\nport: 1\n")
    with pytest.raises(ConfigError, match=r"either at top level or all under 'pgactors'.*port"):
        StoreConfig.from_file(path)
    path = write(tmp_path, "d.yaml", "pgactors: db\n")
    with pytest.raises(ConfigError, match="'pgactors' must be a table"):
        StoreConfig.from_file(path)


def test_from_file_every_camel_case_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        """
host: db
sslrootcert: /ca.pem
tablePrefix: tp
poolMinSize: 2
poolMaxSize: 5
connectTimeout: 3
statementTimeout: 4
applicationName: app
maxDataBytes: 9
""",
    )
    config = StoreConfig.from_file(path)
    assert (config.table_prefix, config.pool_min_size, config.pool_max_size) == ("tp", 2, 5)
    assert (config.connect_timeout, config.statement_timeout) == (3.0, 4.0)
    assert (config.application_name, config.max_data_bytes) == ("app", 9)
    assert config.sslrootcert == "/ca.pem"


def test_from_file_empty_yaml_gives_defaults(tmp_path: Path) -> None:
    assert StoreConfig.from_file(write(tmp_path, "c.yaml", "")) == StoreConfig()


def test_from_file_substitution(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        """
dsn: postgresql://${DB_USER}:${DB_PASS}@${DB_HOST:-localhost}/app
port: ${DB_PORT:-5433}
poolMaxSize: "${POOL:-12}"
statement_timeout: ${TIMEOUT}
changes: ${CHANGES:-off}
schema: ${EMPTY:-fallback}
application_name: literal $${NOT_A_VAR} and ${EMPTY}x
""",
    )
    env = {"DB_USER": "bob", "DB_PASS": SECRET, "TIMEOUT": " 2.5 ", "EMPTY": ""}
    config = StoreConfig.from_file(path, environ=env)
    assert config.dsn == f"postgresql://bob:{SECRET}@localhost/app"
    assert config.port == 5433
    assert config.pool_max_size == 12
    assert config.statement_timeout == 2.5
    assert config.changes is False
    assert config.schema == "fallback"
    assert config.application_name == "literal ${NOT_A_VAR} and x"


def test_from_file_substitution_uses_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGACTORS_TEST_PORT", "7001")
    path = write(tmp_path, "c.toml", 'port = "${PGACTORS_TEST_PORT}"\n')
    assert StoreConfig.from_file(path).port == 7001


def test_from_file_literal_number_string_is_not_converted(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", 'port = "5432"\n')
    with pytest.raises(ConfigError, match=r"key 'port': port must be an integer .*'5432' \(str\)"):
        StoreConfig.from_file(path)


def test_from_file_substituted_non_number(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "port: ${P}\n")
    with pytest.raises(ConfigError) as info:
        StoreConfig.from_file(path, environ={"P": "many"})
    assert str(info.value) == (
        f"config file {path}: key 'port': port must be an integer, got 'many'"
    )


def test_from_file_missing_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "password: ${DB_PASSWORD}\n")
    with pytest.raises(ConfigError) as info:
        StoreConfig.from_file(path, environ={})
    message = str(info.value)
    assert "DB_PASSWORD is not set" in message
    assert str(path) in message
    assert "'password'" in message


def test_from_file_malformed_reference(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "password: ab${cd\n")
    with pytest.raises(ConfigError) as info:
        StoreConfig.from_file(path, environ={})
    assert "malformed ${...} reference" in str(info.value)
    assert "ab${cd" not in str(info.value)
    path = write(tmp_path, "d.yaml", "host: ${A:-${B}}\n")
    with pytest.raises(ConfigError, match="nested"):
        StoreConfig.from_file(path, environ={})


def test_from_file_unknown_key(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "host: db\ntable_prefx: x\n")
    with pytest.raises(ConfigError) as info:
        StoreConfig.from_file(path)
    message = str(info.value)
    assert message.startswith(f"config file {path}: unknown key 'table_prefx'")
    assert "did you mean 'table_prefix'?" in message
    assert "allowed keys: dsn, host, port" in message
    assert "camelCase" in message
    assert "url, connectionString, connection_string for dsn" in message


def test_from_file_non_string_key(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "1: x\n")
    with pytest.raises(ConfigError, match="unknown key 1;"):
        StoreConfig.from_file(path)


def test_from_file_duplicate_field_via_alias(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", 'dsn = "host=a"\nurl = "host=b"\n')
    with pytest.raises(ConfigError, match="keys 'dsn' and 'url' both set dsn"):
        StoreConfig.from_file(path)


def test_from_file_invalid_value_names_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", 'schema: "x\\"; drop table y; --"\n')
    with pytest.raises(ConfigError) as info:
        StoreConfig.from_file(path)
    assert str(info.value).startswith(f"config file {path}: key 'schema': schema must match")


def test_from_file_cross_field_error_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "poolMinSize: 5\npoolMaxSize: 2\n")
    with pytest.raises(ConfigError) as info:
        StoreConfig.from_file(path)
    assert str(info.value) == (
        f"config file {path}: pool_max_size must be an integer >= pool_min_size (5), got 2"
    )


def test_from_file_password_not_in_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", f"password: {SECRET}\nport: 0\n")
    with pytest.raises(ConfigError) as info:
        StoreConfig.from_file(path)
    assert SECRET not in str(info.value)
    path = write(tmp_path, "d.yaml", f'password: "{SECRET}\n')  # unterminated quote
    with pytest.raises(ConfigError) as info:
        StoreConfig.from_file(path)
    assert "is not valid YAML" in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("name", ["c.json", "c.ini", "config"])
def test_from_file_unsupported_extension(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, "{}")
    with pytest.raises(ConfigError, match=r"unsupported extension.*use \.yaml, \.yml or \.toml"):
        StoreConfig.from_file(path)


def test_from_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        StoreConfig.from_file(path)
    assert str(info.value) == f"config file {path} does not exist"


def test_from_file_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "dir.yaml"
    path.mkdir()
    with pytest.raises(ConfigError, match=f"config file {re.escape(str(path))} cannot be read"):
        StoreConfig.from_file(path)


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("c.toml", "port = = 1\n", "is not valid TOML"),
        ("c.yaml", "host: [db\n", "is not valid YAML"),
        ("c.yaml", "- host\n- db\n", "expected a mapping of settings, got list"),
        ("c.toml", "", None),
    ],
)
def test_from_file_parse_errors(tmp_path: Path, name: str, text: str, problem: str | None) -> None:
    path = write(tmp_path, name, text)
    if problem is None:
        assert StoreConfig.from_file(path) == StoreConfig()
        return
    with pytest.raises(ConfigError) as info:
        StoreConfig.from_file(path)
    assert str(info.value).startswith(f"config file {path}")
    assert problem in str(info.value)


def test_from_file_toml_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b'host = "\xff"\n')
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        StoreConfig.from_file(path)


# --- resolve -------------------------------------------------------------------------------


def test_resolve_string() -> None:
    config = StoreConfig.resolve("postgresql://db/app", schema="s", port=None)
    assert config == StoreConfig(dsn="postgresql://db/app", schema="s")


def test_resolve_config_as_is() -> None:
    base = StoreConfig(host="db")
    assert StoreConfig.resolve(base) is base
    assert StoreConfig.resolve(base, port=7000) == StoreConfig(host="db", port=7000)


def test_resolve_none_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PGACTORS_CONFIG", "PGACTORS_DSN", "PGHOST", "PGACTORS_SCHEMA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DATABASE_URL", "host=envdb")
    monkeypatch.setenv("PGACTORS_SCHEMA", "envschema")
    config = StoreConfig.resolve(None, table_prefix="tp")
    assert (config.dsn, config.schema, config.table_prefix) == ("host=envdb", "envschema", "tp")


def test_resolve_rejects_other_types() -> None:
    with pytest.raises(ConfigError, match="expected a DSN string, a StoreConfig or None"):
        StoreConfig.resolve(5432)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dsn must be"):
        StoreConfig.resolve("not a dsn")
    with pytest.raises(ConfigError, match="unknown StoreConfig field"):
        StoreConfig.resolve("host=db", sehema="x")
