"""Acceptance tests: the real ``pgactors`` command, run in a subprocess as a user would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pgactors import SyncStore
from pgactors.schema import latest_version

PGACTORS = shutil.which("pgactors", path=str(Path(sys.executable).parent)) or "pgactors"


def run(
    *args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PGACTORS_", "PG"))}
    base.pop("DATABASE_URL", None)
    return subprocess.run(
        [PGACTORS, *args],
        env={**base, **(env or {})},
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def db_env(pg_dsn: str, schema_name: str) -> dict[str, str]:
    return {"PGACTORS_DSN": pg_dsn, "PGACTORS_SCHEMA": schema_name}


def test_help_shows_environment_variables() -> None:
    result = run("--help")
    assert result.returncode == 0
    for var in (
        "PGACTORS_DSN",
        "PGACTORS_CONFIG",
        "PGACTORS_SCHEMA",
        "PGACTORS_TABLE_PREFIX",
        "PGACTORS_DATA_DIR",
    ):
        assert var in result.stdout


def test_record_commands(db_env: dict[str, str]) -> None:
    assert run("init", env=db_env).returncode == 0
    put = run("put", "UserProfile", "user-1", '{"username": "alice", "score": 7}', env=db_env)
    assert put.returncode == 0, put.stderr
    assert "version 1" in put.stdout

    got = run("get", "UserProfile", "user-1", env=db_env)
    assert got.returncode == 0
    assert json.loads(got.stdout) == {"username": "alice", "score": 7}

    from_stdin = run("put", "UserProfile", "user-2", "-", env=db_env, input='{"username": "bob"}')
    assert from_stdin.returncode == 0, from_stdin.stderr

    stale = run("put", "UserProfile", "user-1", "{}", "--expected-version", "5", env=db_env)
    assert stale.returncode == 1
    assert "expected version 5" in stale.stderr and "found 1" in stale.stderr
    assert "Traceback" not in stale.stderr

    meta = run("get", "UserProfile", "user-1", "--meta", env=db_env)
    assert json.loads(meta.stdout)["version"] == 1

    listed = run("ls", "UserProfile", "--prefix", "user-", "--limit", "1", env=db_env)
    assert listed.stdout.split() == ["user-1"]

    types = run("types", "--json", env=db_env)
    assert json.loads(types.stdout) == {"UserProfile": 2}

    assert run("delete", "UserProfile", "user-1", env=db_env).returncode == 0
    missing = run("get", "UserProfile", "user-1", env=db_env)
    assert missing.returncode == 1 and "not found" in missing.stderr
    assert run("delete", "UserProfile", "user-1", env=db_env).returncode == 1


def test_bad_input_is_a_usage_error(db_env: dict[str, str]) -> None:
    assert run("init", env=db_env).returncode == 0
    bad_json = run("put", "T", "t", "{not json", env=db_env)
    assert bad_json.returncode == 2 and "not valid JSON" in bad_json.stderr
    bad_type = run("put", "9bad", "t", "{}", env=db_env)
    assert bad_type.returncode == 2 and "invalid type" in bad_type.stderr
    assert len(bad_type.stderr.strip().splitlines()) == 1


def test_verify_status_and_reset(db_env: dict[str, str], pg_dsn: str, schema_name: str) -> None:
    before = run("verify", env=db_env)
    assert before.returncode == 1 and "missing" in before.stdout
    assert run("migrate", env=db_env).returncode == 0
    after = run("verify", env=db_env)
    assert after.returncode == 0, after.stdout
    assert "missing" not in after.stdout

    run("put", "T", "a", "1", env=db_env)
    status = run("status", "--json", env=db_env)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["types"] == {"T": 1} and report["schema_version"] == latest_version()
    # The put numbered its change as it exited (a store drains its sequencer on close).
    assert report["changes"]["last_position"] == 1 and report["changes"]["rows"] == 1
    assert report["table_bytes"] > 0 and report["latency_ms"] >= 0
    assert "PostgreSQL" in run("status", env=db_env).stdout

    refused = run("reset", env=db_env, input="")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert json.loads(run("types", "--json", env=db_env).stdout) == {"T": 1}
    assert run("reset", "--yes", env=db_env).returncode == 0
    assert json.loads(run("types", "--json", env=db_env).stdout) == {}

    import psycopg
    from psycopg import sql

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP INDEX {}").format(
                sql.Identifier(schema_name, "pgactors_state_expires_idx")
            )
        )
    drift = run("verify", env=db_env)
    assert drift.returncode == 1 and "pgactors_state_expires_idx" in drift.stdout


def test_partitioned_init_status_and_metrics(db_env: dict[str, str]) -> None:
    init = run("init", "--partitions", "3", env=db_env)
    assert init.returncode == 0, init.stderr
    assert "3 partitions" in init.stdout
    assert run("put", "T", "a", '{"k": 1}', env=db_env).returncode == 0
    assert run("put", "T", "b", '{"k": 2}', env=db_env).returncode == 0
    assert run("verify", env=db_env).returncode == 0

    refused = run("init", "--partitions", "4", env=db_env)
    assert refused.returncode == 2
    assert "already has 3 hash partitions" in refused.stderr
    assert "Traceback" not in refused.stderr

    report = json.loads(run("status", "--json", env=db_env).stdout)
    stats = report["stats"]
    assert stats["partitions"] == 3
    assert stats["heap_bytes"] > 0 and stats["index_bytes"] > 0 and stats["toast_bytes"] >= 0
    assert report["table_bytes"] > 0  # summed over the partitions
    # Both writes were numbered as the put commands exited, seconds ago (the window's
    # edge is tested in test_metrics.py, without depending on the clock).
    assert stats["writes_last_minute"] == 2
    assert stats["writes_per_second"] == round(stats["writes_last_minute"] / 60, 3)
    assert stats["changes_rows"] == 2
    assert stats["connections"] >= 1 and stats["listeners"] == 0
    assert 0 <= stats["notification_queue_usage"] <= 1
    for key in ("dead_rows", "live_rows", "last_autovacuum", "changes_rows", "changes_bytes"):
        assert key in stats
    shown = run("status", env=db_env).stdout
    assert "3 hash partitions" in shown and "NOTIFY queue" in shown

    metrics = run("metrics", env=db_env)
    assert metrics.returncode == 0, metrics.stderr
    assert 'pgactors_records{type="T"} 2' in metrics.stdout
    assert "pgactors_state_partitions 3" in metrics.stdout
    assert "# TYPE pgactors_pool_size gauge" in metrics.stdout
    as_json = json.loads(run("metrics", "--json", env=db_env).stdout)
    assert as_json["server"]["types"] == {"T": 2} and as_json["pool"]["max_size"] >= 1


def test_connection_error_is_one_line_exit_2() -> None:
    result = run("status", env={"PGACTORS_DSN": "postgresql://u:pw-secret@127.0.0.1:1/db"})
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot reach PostgreSQL at 127.0.0.1:1")
    assert "pw-secret" not in result.stderr and "Traceback" not in result.stderr
    debug = run("--debug", "status", env={"PGACTORS_DSN": "postgresql://u@127.0.0.1:1/db"})
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_hostile_schema_refused() -> None:
    result = run(
        "--schema",
        'x"; drop table y; --',
        "status",
        env={"PGACTORS_DSN": "postgresql://u@127.0.0.1:1/db"},
    )
    assert result.returncode == 2 and "schema" in result.stderr


def test_config_file(tmp_path: Path, pg_dsn: str, schema_name: str) -> None:
    config = tmp_path / "pgactors.yaml"
    config.write_text(
        "connectionString: ${TEST_DSN}\nschema: ${TEST_SCHEMA:-nope}\ntable_prefix: filecfg\n"
    )
    env = {"TEST_DSN": pg_dsn, "TEST_SCHEMA": schema_name}
    assert run("--config", str(config), "init", env=env).returncode == 0
    assert run("--config", str(config), "put", "T", "x", "true", env=env).returncode == 0
    verify = run("--config", str(config), "verify", env=env)
    assert verify.returncode == 0 and "filecfg_state" in verify.stdout


@pytest.mark.slow
def test_embedded_server_commands_and_demo(tmp_path: Path) -> None:
    env = {"PGACTORS_DATA_DIR": str(tmp_path / "data")}
    try:
        assert run("server", "status", env=env).returncode == 1
        started = run("server", "start", env=env)
        assert started.returncode == 0 and "started" in started.stdout
        url = run("server", "url", env=env)
        assert url.returncode == 0 and url.stdout.startswith("postgresql://")
        status = run("server", "status", "--json", env=env)
        assert status.returncode == 0 and json.loads(status.stdout)["running"] is True

        demo = run("demo", env=env)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "conflicts were detected and retried" in demo.stdout
        assert "the state survived" in demo.stdout
        alice = run("get", "UserProfile", "demo-alice", env=env)
        assert json.loads(alice.stdout)["username"] == "alice"
        psql = run("psql", "-Atc", "select count(*) from pgactors_state", env=env)
        assert psql.returncode == 0 and psql.stdout.strip() == "4"

        assert "stopped" in run("server", "stop", env=env).stdout
        auto = run("types", "--json", env=env)
        assert auto.returncode == 0, auto.stderr
        assert "embedded PostgreSQL server" in auto.stderr
        assert json.loads(auto.stdout) == {"ChatRoom": 1, "UserProfile": 3}
    finally:
        run("server", "stop", env=env)


def test_demo_on_a_server_from_database_url_leaves_the_embedded_one_alone(
    pg_dsn: str, schema_name: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    env = {"DATABASE_URL": pg_dsn, "PGACTORS_SCHEMA": schema_name, "PGACTORS_DATA_DIR": str(data)}
    demo = run("demo", env=env)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "5. closed the store\n" in demo.stdout
    assert "embedded" not in demo.stdout + demo.stderr
    assert not data.exists()  # no embedded server was started (or stopped) for it


def test_purge_expired_records(db_env: dict[str, str], pg_dsn: str, schema_name: str) -> None:
    assert run("init", env=db_env).returncode == 0
    for type, id, ttl in [("A", "a1", "3600"), ("A", "a2", "3600"), ("B", "b1", "3600")]:
        put = run("put", type, id, "{}", "--ttl", ttl, env=db_env)
        assert put.returncode == 0, put.stderr
    assert run("put", "A", "keep", "{}", env=db_env).returncode == 0
    bad = run("put", "A", "x", "{}", "--ttl", "-5", env=db_env)
    assert bad.returncode == 2 and "ttl" in bad.stderr
    assert "expires_at" in json.loads(run("get", "A", "a1", "--meta", env=db_env).stdout)

    nothing = run("purge", env=db_env)
    assert nothing.returncode == 0, nothing.stderr
    assert "purged 0 expired records" in nothing.stdout
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("UPDATE {} SET expires_at = now() WHERE expires_at IS NOT NULL").format(
                sql.Identifier(schema_name, "pgactors_state")
            )
        )
    assert run("get", "A", "a1", env=db_env).returncode == 1
    only_b = run("purge", "--type", "B", env=db_env)
    assert only_b.returncode == 0 and "purged 1 expired record" in only_b.stdout
    rest = run("purge", env=db_env)
    assert rest.returncode == 0 and "purged 2 expired records" in rest.stdout
    with psycopg.connect(pg_dsn) as conn:
        table = sql.Identifier(schema_name, "pgactors_state")
        left = conn.execute(sql.SQL("SELECT type, id FROM {}").format(table)).fetchall()
    assert left == [("A", "keep")]
    bad_type = run("purge", "--type", "no way", env=db_env)
    assert bad_type.returncode == 2 and "invalid type" in bad_type.stderr


def test_reminder_commands_and_status(pg_store_sync: SyncStore, db_env: dict[str, str]) -> None:
    store = pg_store_sync
    overdue_at = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    store.set_reminder("Cart", "c1", "expire", at=overdue_at)
    store.set_reminder("Cart", "c2", "expire", after=3600)
    store.set_reminder("User", "u1", "digest", after=7200, every=86400)

    listed = run("reminders", "ls", "--json", env=db_env)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["type"], r["id"], r["name"]) for r in rows] == [
        ("Cart", "c1", "expire"),
        ("Cart", "c2", "expire"),
        ("User", "u1", "digest"),
    ]
    assert datetime.fromisoformat(rows[0]["due_at"]) == overdue_at
    assert [r["overdue"] for r in rows] == [True, False, False]
    assert [r["period"] for r in rows] == [None, None, 86400.0]

    only_user = json.loads(run("reminders", "ls", "--type", "User", "--json", env=db_env).stdout)
    assert [r["id"] for r in only_user] == ["u1"]
    soon = (datetime.now(UTC) + timedelta(minutes=90)).isoformat()
    due_soon = json.loads(run("reminders", "ls", "--due-before", soon, "--json", env=db_env).stdout)
    assert [r["id"] for r in due_soon] == ["c1", "c2"]
    table = run("reminders", "ls", "--id", "c1", env=db_env)
    assert table.returncode == 0 and "expire" in table.stdout and "yes" in table.stdout

    # A time without a timezone is refused before anything connects.
    bad = run(
        "reminders",
        "ls",
        "--due-before",
        "2026-01-01T00:00",
        env=db_env | {"PGACTORS_DSN": "postgresql://u@127.0.0.1:1/db"},
    )
    assert bad.returncode == 2 and "--due-before" in bad.stderr
    assert "cannot reach" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1

    cancelled = run("reminders", "cancel", "Cart", "c2", "expire", env=db_env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "cancelled" in cancelled.stdout
    left = json.loads(run("reminders", "ls", "--json", env=db_env).stdout)
    assert [r["id"] for r in left] == ["c1", "u1"]
    again = run("reminders", "cancel", "Cart", "c2", "expire", env=db_env)
    assert again.returncode == 1 and "no reminder expire of Cart/c2" in again.stderr

    status = run("status", "--json", env=db_env)
    assert status.returncode == 0, status.stderr
    stats = json.loads(status.stdout)["stats"]
    assert (stats["reminders"], stats["reminders_overdue"]) == (2, 1)
    assert datetime.fromisoformat(stats["oldest_overdue_reminder"]) == overdue_at
    assert "2 set, 1 overdue" in run("status", env=db_env).stdout


def test_history_commands(db_env: dict[str, str]) -> None:
    assert run("init", env=db_env).returncode == 0
    assert run("history", "Contract", "c-1", env=db_env).returncode == 0  # none yet
    enabled = run("history-enable", "Contract", "--keep-versions", "2", env=db_env)
    assert enabled.returncode == 0, enabled.stderr
    assert "at most 2 per record" in enabled.stdout
    for n in range(1, 5):
        assert run("put", "Contract", "c-1", json.dumps({"n": n}), env=db_env).returncode == 0

    listed = run("history", "Contract", "c-1", "--json", env=db_env)
    assert listed.returncode == 0, listed.stderr
    past = json.loads(listed.stdout)
    assert [(p["version"], p["data"], p["deleted"]) for p in past] == [
        (3, {"n": 3}, False),
        (2, {"n": 2}, False),
    ]
    assert all(p["replaced_at"] for p in past)
    one = run("history", "Contract", "c-1", "--limit", "1", "--json", env=db_env)
    assert [p["version"] for p in json.loads(one.stdout)] == [3]
    table = run("history", "Contract", "c-1", env=db_env)
    assert table.returncode == 0 and "past versions of Contract/c-1" in table.stdout
    assert '{"n": 3}' in table.stdout and "save" in table.stdout

    got = run("get", "Contract", "c-1", "--version", "2", env=db_env)
    assert got.returncode == 0 and json.loads(got.stdout) == {"n": 2}
    meta = run("get", "Contract", "c-1", "--version", "4", "--meta", env=db_env)
    assert json.loads(meta.stdout)["version"] == 4
    gone = run("get", "Contract", "c-1", "--version", "1", env=db_env)
    assert gone.returncode == 1 and "not found: Contract/c-1 version 1" in gone.stderr
    bad = run("get", "Contract", "c-1", "--version", "0", env=db_env)
    assert bad.returncode == 2 and "version must be an int >= 1" in bad.stderr
    bad = run("history-enable", "Contract", "--keep-days", "-1", env=db_env)
    assert bad.returncode == 2 and "keep_days must be" in bad.stderr

    status = json.loads(run("status", "--json", env=db_env).stdout)
    [info] = status["history"]
    assert (info["type"], info["enabled"], info["keep_versions"]) == ("Contract", True, 2)
    assert info["rows"] == 3 and info["bytes"] > 0  # one beyond the limit, until purged
    shown = run("status", env=db_env)
    assert "version history" in shown.stdout and "at most 2 per record" in shown.stdout
    purged = run("purge", "--history", env=db_env)
    assert purged.returncode == 0 and "purged 1 past version" in purged.stdout

    disabled = run("history-disable", "Contract", env=db_env)
    assert disabled.returncode == 0 and "disabled" in disabled.stdout
    assert run("history-disable", "Contract", env=db_env).returncode == 1
    assert run("put", "Contract", "c-1", "{}", env=db_env).returncode == 0
    after = json.loads(run("history", "Contract", "c-1", "--json", env=db_env).stdout)
    assert [p["version"] for p in after] == [3, 2]
