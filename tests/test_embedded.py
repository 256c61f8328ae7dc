"""Tests of the embedded PostgreSQL server manager; these start real servers."""

from __future__ import annotations

import fcntl
import os
import pwd
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pgactors import embedded
from pgactors.embedded import (
    DEFAULT_DATA_DIR_ENV,
    EmbeddedServer,
    bin_path,
    default_data_dir,
)
from pgactors.errors import ServerError
from wheel_psql import psql

slow = pytest.mark.slow


def postmasters(pgdata: Path) -> list[int]:
    """Pids of live postmaster processes serving pgdata."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if (
            state not in {"Z", "X"}
            and argv[0].endswith(b"/postgres")
            and os.fsencode(pgdata) in argv
        ):
            found.append(int(entry.name))
    return found


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    srv = EmbeddedServer(tmp_path / "data")
    try:
        yield srv
    finally:
        srv.stop()


def test_default_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DEFAULT_DATA_DIR_ENV, raising=False)
    assert default_data_dir() == tmp_path.resolve() / ".pgactors"
    monkeypatch.setenv(DEFAULT_DATA_DIR_ENV, "rel/dir")
    assert default_data_dir() == tmp_path.resolve() / "rel" / "dir"
    assert default_data_dir().is_absolute()


def test_bin_path() -> None:
    for name in ("psql", "pgbench", "pg_ctl", "initdb"):
        assert bin_path(name).is_file()
    with pytest.raises(ServerError, match="not found"):
        bin_path("no-such-program")


def test_new_server_creates_data_dir_but_does_not_start(tmp_path: Path) -> None:
    srv = EmbeddedServer(tmp_path / "a" / "b")
    assert srv.data_dir == (tmp_path / "a" / "b").resolve()
    assert srv.data_dir.is_dir()
    assert srv.pgdata == srv.data_dir / "pgdata"
    assert srv.log_path == srv.data_dir / "server.log"
    assert not srv.is_running()
    with pytest.raises(ServerError, match="pgactors server start"):
        _ = srv.dsn


@slow
def test_start_twice_and_connect(server: EmbeddedServer) -> None:
    assert server.start() is True
    dsn = server.dsn
    assert dsn == f"postgresql://postgres@/postgres?host={server.data_dir}&port=5432"
    assert server.start() is False
    assert server.dsn == dsn
    assert psql(dsn, "select 1") == "1"
    assert psql(dsn, "show max_connections") == "200"
    assert psql(dsn, "show fsync") == "on"
    assert psql(dsn, "show synchronous_commit") == "on"
    assert psql(dsn, "show listen_addresses") == ""


@slow
def test_status_fields(server: EmbeddedServer) -> None:
    before = server.status()
    assert before.running is False
    assert before.data_dir == server.data_dir
    assert (before.pid, before.socket_dir, before.port, before.dsn) == (None, None, None, None)
    assert before.version is not None
    assert re.fullmatch(r"\d+(\.\d+)*", before.version)

    server.start()
    running = server.status()
    assert running.running is True
    assert running.pid in postmasters(server.pgdata)
    assert running.socket_dir == server.data_dir
    assert running.port == 5432
    assert running.dsn == server.dsn
    assert running.version == (server.pgdata / "PG_VERSION").read_text().strip()
    assert before.version.split(".")[0] == running.version

    assert server.stop() is True
    after = server.status()
    assert after.running is False
    assert after.pid is None
    assert after.dsn is None
    assert after.version == running.version


@slow
def test_data_persists_across_stop_and_start(server: EmbeddedServer) -> None:
    server.start()
    psql(server.dsn, "create table kv (k text primary key, v int); insert into kv values ('a', 1)")
    assert server.stop() is True
    assert not server.is_running()
    assert postmasters(server.pgdata) == []
    assert server.start() is True
    assert psql(server.dsn, "select k || '=' || v from kv") == "a=1"


@slow
def test_kill_then_start_recovers(server: EmbeddedServer) -> None:
    server.start()
    psql(server.dsn, "create table kv (k text primary key, v int); insert into kv values ('a', 1)")
    pid = server.status().pid
    server.kill()
    assert not server.is_running()
    assert postmasters(server.pgdata) == []
    # The killed server leaves its postmaster.pid behind; start must cope with it.
    assert (server.pgdata / "postmaster.pid").exists()
    server.kill()  # no-op when not running

    assert server.start() is True
    assert server.status().pid != pid
    assert psql(server.dsn, "select k || '=' || v from kv") == "a=1"
    assert "database system was interrupted" in server.log_path.read_text()


@slow
def test_stop_when_not_running(server: EmbeddedServer) -> None:
    assert server.stop() is False
    server.start()
    assert server.stop() is True
    assert server.stop() is False


@slow
def test_concurrent_start_from_threads(server: EmbeddedServer) -> None:
    barrier = threading.Barrier(4)

    def start() -> bool:
        barrier.wait()
        return EmbeddedServer(server.data_dir).start()

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: start(), range(4)))
    assert sorted(results) == [False, False, False, True]
    assert len(postmasters(server.pgdata)) == 1
    assert psql(server.dsn, "select 1") == "1"


@slow
def test_concurrent_start_from_processes_outlives_them(server: EmbeddedServer) -> None:
    src = str(Path(embedded.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    code = (
        "import sys\n"
        "from pgactors.embedded import EmbeddedServer\n"
        "print(EmbeddedServer(sys.argv[1]).start())\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(server.data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(out.strip())
    assert sorted(outputs) == ["False", "False", "False", "True"]
    # Every starting process has exited; the server is a daemon and keeps running.
    assert server.is_running()
    assert len(postmasters(server.pgdata)) == 1
    assert psql(server.dsn, "select 1") == "1"


@slow
def test_long_data_dir_uses_short_socket_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / ("d" * 60) / ("e" * 60)
    assert len(str(data_dir)) > 110
    srv = EmbeddedServer(data_dir)
    try:
        assert srv.start() is True
        status = srv.status()
        assert status.socket_dir is not None
        assert status.socket_dir != srv.data_dir
        assert status.socket_dir.name.startswith("pgactors-")
        assert len(str(status.socket_dir / ".s.PGSQL.5432")) <= 107
        assert psql(srv.dsn, "select 1") == "1"
    finally:
        srv.stop()
    assert not status.socket_dir.exists()


@slow
def test_start_failure_raises_with_log(server: EmbeddedServer) -> None:
    server.start()
    server.stop()
    with (server.pgdata / "postgresql.conf").open("a") as conf:
        conf.write("max_connections = 'banana'\n")
    started = time.monotonic()
    with pytest.raises(ServerError) as raised:
        server.start(timeout=20)
    assert time.monotonic() - started < 20
    message = str(raised.value)
    assert str(server.data_dir) in message
    assert "max_connections" in message
    assert "banana" in message
    assert not server.is_running()


def test_start_times_out_waiting_for_lock(tmp_path: Path) -> None:
    srv = EmbeddedServer(tmp_path / "data")
    with (srv.data_dir / ".lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        started = time.monotonic()
        with pytest.raises(ServerError, match="timed out waiting"):
            srv.start(timeout=0.3)
        assert time.monotonic() - started < 5
    assert not srv.is_running()


@slow
@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as a system user")
def test_root_runs_server_as_system_user(server: EmbeddedServer) -> None:
    server.start()
    account = pwd.getpwnam(embedded.SYSTEM_USER)
    assert server.pgdata.stat().st_uid == account.pw_uid
    pid = server.status().pid
    assert pid is not None
    assert Path(f"/proc/{pid}").stat().st_uid == account.pw_uid


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="only root has to hand the server to a user")
def test_changes_outside_the_data_dir_are_few_and_reported(tmp_path: Path) -> None:
    import stat

    cli = [sys.executable, "-c", "from pgactors.cli import main; main()", "server", "start"]
    private = tmp_path / "private"
    private.mkdir(mode=0o700)  # the service user cannot pass through it yet
    other = tmp_path / "untouched"
    other.mkdir(mode=0o700)
    data_dir = private / "nested" / "data"
    env = {**os.environ, "PGACTORS_DATA_DIR": str(data_dir)}
    started = subprocess.run(
        cli,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        assert started.returncode == 0, started.stderr
        said = " ".join(started.stderr.split())
        assert f"changed outside the data directory: let other users pass through {private}" in said
        mode = private.stat().st_mode
        assert mode & stat.S_IXOTH and not mode & stat.S_IROTH  # enter, not list
        assert not other.stat().st_mode & stat.S_IXOTH  # nothing else was touched
        assert EmbeddedServer(data_dir).stop()
        again = subprocess.run(
            cli,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 0, again.stderr
        assert "started" in again.stdout and "changed outside" not in again.stderr  # nothing left
    finally:
        EmbeddedServer(data_dir).stop()
