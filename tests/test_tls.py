"""TLS for the embedded server (``pgactors server start --tls``), against a real server.

One server with its TLS front serves the module; the CLI test starts its own.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import pwd
import socket
import stat
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import psycopg.conninfo
import pytest
from cryptography import x509
from typer.testing import CliRunner

import pgactors
from pgactors import Store
from pgactors.certs import new_authority
from pgactors.cli import app
from pgactors.embedded import SYSTEM_USER, EmbeddedServer
from pgactors.errors import PgActorsError, ServerError, StoreUnavailable
from pgactors.tls import TlsFiles, TlsFront

slow = pytest.mark.slow

SECRET = "never-Print-me-42"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    srv = EmbeddedServer(tmp_path_factory.mktemp("tls") / "data")
    try:
        assert srv.start(tls=True) is True
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def port(server: EmbeddedServer) -> int:
    status = server.status()
    assert status.tls_port is not None and status.tls_dsn == server.tls_dsn
    return status.tls_port


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The certificate of a second CA, which signed nothing the server has."""
    path = tmp_path_factory.mktemp("other") / "other-ca.crt"
    path.write_bytes(new_authority("some other CA").cert_pem)
    return path


def dsn(server: EmbeddedServer, port: int, **params: str) -> str:
    """A DSN through the TLS front: 127.0.0.1, the client certificate, ``params``."""
    files = server.tls.files
    base = {
        "host": "127.0.0.1",
        "port": str(port),
        "user": "postgres",
        "dbname": "postgres",
        "sslcert": str(files.client_cert),
        "sslkey": str(files.client_key),
        **params,
    }
    return " ".join(f"{key}={value}" for key, value in base.items() if value)


async def save_and_load(conninfo: str) -> None:
    """Connect, install the schema, save a record and read it back."""
    store = await Store.connect(conninfo, schema=f"tls_{uuid.uuid4().hex[:10]}")
    try:
        await store.init_schema()
        saved = await store.save("Profile", "alice", {"name": "Alice"})
        loaded = await store.load("Profile", "alice")
        assert loaded is not None and loaded.data == {"name": "Alice"}
        assert loaded.version == saved.version == 1
    finally:
        await store.close()


async def refused(conninfo: str) -> str:
    """The message of the PgActorsError that connecting with ``conninfo`` raises."""
    with pytest.raises(PgActorsError) as caught:
        store = await Store.connect(conninfo, schema="tls_refused")
        await store.close()
    assert isinstance(caught.value, StoreUnavailable)
    message = str(caught.value)
    assert SECRET not in message
    return message


@slow
def test_certificates_and_their_files(server: EmbeddedServer) -> None:
    files = server.tls.files
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    assert cert.issuer == ca.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    client = x509.load_pem_x509_certificate(files.client_cert.read_bytes())
    assert client.subject.rfc4514_string() == "CN=postgres"
    assert sorted(p.name for p in files.directory.iterdir()) == [
        "ca.crt",
        "client.crt",
        "client.key",
        "server.crt",
        "server.key",
    ]  # the CA's key is not kept

    server_user = pwd.getpwnam(SYSTEM_USER).pw_uid if os.geteuid() == 0 else os.geteuid()
    for key, owner in ((files.server_key, server_user), (files.client_key, os.geteuid())):
        info = key.stat()
        assert stat.S_IMODE(info.st_mode) == 0o600, key
        assert info.st_uid == owner, key
    assert stat.S_IMODE(files.ca_cert.stat().st_mode) == 0o644


@slow
def test_the_front_listens_on_loopback_and_runs_as_the_server_user(
    server: EmbeddedServer, port: int
) -> None:
    running = server.tls.running()
    assert running is not None and running[1] == port
    status = Path(f"/proc/{running[0]}/status").read_text()
    uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    expected = pwd.getpwnam(SYSTEM_USER).pw_uid if os.geteuid() == 0 else os.geteuid()
    assert int(uid) == expected
    listening = Path("/proc/net/tcp").read_text()
    assert f"0100007F:{port:04X} 00000000:0000 0A" in listening  # 127.0.0.1, LISTEN
    assert f"00000000:{port:04X} 00000000:0000 0A" not in listening  # not 0.0.0.0
    # The server itself still listens on its Unix socket only.
    with psycopg.connect(server.dsn) as conn:
        assert conn.execute("show listen_addresses").fetchone() == ("",)


@slow
@pytest.mark.parametrize(
    "params",
    [
        {"sslmode": "require"},
        {"sslmode": "verify-ca", "sslrootcert": "CA"},
        {"sslmode": "verify-full", "sslrootcert": "CA"},
        {"sslmode": "verify-full", "sslrootcert": "CA", "host": "localhost"},
    ],
    ids=["require", "verify-ca", "verify-full", "verify-full-localhost"],
)
async def test_connects_with_the_right_ca(
    server: EmbeddedServer, port: int, params: dict[str, str]
) -> None:
    params = {k: str(server.tls.files.ca_cert) if v == "CA" else v for k, v in params.items()}
    conninfo = dsn(server, port, **params)
    await save_and_load(conninfo)
    with psycopg.connect(conninfo) as conn:
        assert conn.pgconn.ssl_in_use


@slow
async def test_large_records_and_many_connections_through_the_front(
    server: EmbeddedServer,
) -> None:
    store = await Store.connect(server.tls_dsn, schema=f"tls_{uuid.uuid4().hex[:10]}")
    try:
        await store.init_schema()
        big = {"blob": "x" * 3_000_000, "n": list(range(10_000))}
        await store.save("Big", "b", big)
        names = [f"r{i}" for i in range(50)]
        await asyncio.gather(*(store.save("Small", n, {"n": n}) for n in names))
        small = [store.load("Small", n) for n in names]
        loaded = await asyncio.gather(store.load("Big", "b"), *small)
        assert loaded[0] is not None and loaded[0].data == big
        assert [r.data["n"] for r in loaded[1:] if r is not None] == names
    finally:
        await store.close()


@slow
def test_a_query_is_cancelled_through_the_front(server: EmbeddedServer) -> None:
    with psycopg.connect(server.tls_dsn) as conn:
        pid = conn.info.backend_pid
        cancelled = threading.Event()

        def cancel_when_sleeping() -> None:
            with psycopg.connect(server.dsn, autocommit=True) as watcher:
                query = "select wait_event from pg_stat_activity where pid = %s"
                deadline = time.monotonic() + 30
                while watcher.execute(query, (pid,)).fetchone() != ("PgSleep",):
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
            conn.cancel_safe()
            cancelled.set()

        canceller = threading.Thread(target=cancel_when_sleeping)
        canceller.start()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("select pg_sleep(60)")
        finally:
            canceller.join()
        assert cancelled.is_set()


@slow
async def test_the_printed_dsn_verifies_the_server(server: EmbeddedServer, port: int) -> None:
    printed = server.tls_dsn
    assert f"host=127.0.0.1 port={port} " in printed
    assert "sslmode=verify-full" in printed
    assert f"sslrootcert={server.tls.files.ca_cert}" in printed
    await save_and_load(printed)


@slow
@pytest.mark.parametrize("sslmode", ["verify-ca", "verify-full"])
async def test_a_wrong_ca_is_refused(
    server: EmbeddedServer, port: int, other_ca: Path, sslmode: str
) -> None:
    message = await refused(
        dsn(server, port, sslmode=sslmode, sslrootcert=str(other_ca), password=SECRET)
    )
    assert "certificate verify failed" in message
    assert "TLS certificate verification failed: check sslrootcert" in message


@slow
async def test_a_host_name_not_in_the_certificate_is_refused(
    server: EmbeddedServer, port: int
) -> None:
    # hostaddr connects to loopback; libpq checks the certificate against host.
    wrong = {"host": "not-in-the-cert.invalid", "hostaddr": "127.0.0.1"}
    ca = str(server.tls.files.ca_cert)
    message = await refused(
        dsn(server, port, sslmode="verify-full", sslrootcert=ca, password=SECRET, **wrong)
    )
    assert 'does not match host name "not-in-the-cert.invalid"' in message
    assert "TLS certificate verification failed: the host name" in message
    # verify-ca checks the CA but not the name: the same connection then works.
    await save_and_load(dsn(server, port, sslmode="verify-ca", sslrootcert=ca, **wrong))


@slow
async def test_a_password_never_shows(server: EmbeddedServer, port: int) -> None:
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:{port}/postgres?sslmode=disable"
    message = await refused(url)  # it checks that SECRET is not in the message
    assert "accepts TLS connections only" in message


@slow
async def test_a_connection_without_tls_is_refused(server: EmbeddedServer, port: int) -> None:
    message = await refused(dsn(server, port, sslmode="disable", password=SECRET))
    assert "accepts TLS connections only" in message
    assert "set sslmode=verify-full" in message


@slow
async def test_a_client_without_its_certificate_is_refused(
    server: EmbeddedServer, port: int, other_ca: Path
) -> None:
    ca = str(server.tls.files.ca_cert)
    no_cert = dsn(server, port, sslmode="verify-full", sslrootcert=ca, sslcert="", sslkey="")
    message = await refused(no_cert)
    assert "a client certificate is required" in message
    assert "TLS client certificate refused: check sslcert and sslkey" in message

    other = new_authority("stranger").issue_client("postgres")
    folder = other_ca.parent
    (folder / "stranger.crt").write_bytes(other.cert_pem)
    key = folder / "stranger.key"
    key.write_bytes(other.key_pem)
    key.chmod(0o600)
    stranger = dsn(
        server, port, sslmode="verify-full", sslrootcert=ca,
        sslcert=str(folder / "stranger.crt"), sslkey=str(key),
    )  # fmt: skip
    message = await refused(stranger)
    assert "tlsv1 alert unknown ca" in message  # the server's alert reaches the client
    assert "TLS client certificate refused: check sslcert and sslkey" in message

    wrong_user = dsn(server, port, sslmode="verify-full", sslrootcert=ca, user="someone")
    message = await refused(wrong_user)
    assert 'certificate authentication failed for user "someone"' in message
    assert "TLS client certificate refused" in message


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # What a PostgreSQL server with TLS (not the front) or libpq say.
        (
            'no pg_hba.conf entry for host "10.0.0.5", user "app", database "app", no encryption',
            "the server accepts TLS connections only",
        ),
        ("server does not support SSL, but SSL was required", "the server does not offer TLS"),
        ("SSL error: tlsv1 alert certificate required", "TLS client certificate refused"),
        ("SSL SYSCALL error: EOF detected", "the TLS handshake failed"),
        ("Connection refused", None),
    ],
)
def test_tls_hints(message: str, expected: str | None) -> None:
    from pgactors.postgres.connection import hint, tls_hint

    found = tls_hint(message)
    if expected is None:
        assert found is None and "TLS" not in hint(message)
    else:
        assert found is not None and found.startswith(expected)
        assert hint(message) == found


def test_the_dsn_quotes_paths_as_libpq_needs() -> None:
    files = TlsFiles(Path("/data dir/it's \\ here/tls"))
    parsed = psycopg.conninfo.conninfo_to_dict(files.dsn(5433, "postgres", "postgres"))
    assert parsed["sslrootcert"] == "/data dir/it's \\ here/tls/ca.crt"
    assert parsed["sslkey"] == "/data dir/it's \\ here/tls/client.key"
    assert parsed["host"] == "127.0.0.1" and parsed["port"] == "5433"
    assert parsed["sslmode"] == "verify-full"


def test_missing_cryptography_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cryptography", None)
    monkeypatch.delitem(sys.modules, "pgactors.certs")
    monkeypatch.delattr(pgactors, "certs")
    with pytest.raises(ServerError, match=r'pip install "pgactors\[tls\]"'):
        TlsFiles(tmp_path / "tls").prepare("postgres", None)
    assert not (tmp_path / "tls").exists()


@slow
def test_a_front_that_cannot_start_says_why(tmp_path: Path) -> None:
    front = TlsFront(tmp_path)
    front.files.prepare("postgres", None)
    front.files.server_key.write_text("not a key")
    with pytest.raises(ServerError, match=r"TLS front .* did not start(.|\n)*SSL"):
        front.start(tmp_path / "no-socket", None, time.monotonic() + 30)
    assert front.running() is None


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@slow
async def test_cli_server_start_tls(tmp_path: Path) -> None:
    data = tmp_path / "data"
    runner = CliRunner()

    def cli(*args: str) -> str:
        result = runner.invoke(app, ["--data-dir", str(data), *args])
        assert result.exit_code == 0, result.output
        return result.stdout

    try:
        # A running server without TLS gets its TLS front on `start --tls`.
        assert cli("server", "start").splitlines()[-1].startswith("postgresql://")
        started = cli("server", "start", "--tls").splitlines()
        assert started[0] == f"started: {data}"
        printed = started[-1]
        assert printed.startswith("host=127.0.0.1 port=")
        assert "sslmode=verify-full" in printed
        assert f"sslrootcert={data / 'tls' / 'ca.crt'}" in printed
        await save_and_load(printed)
        assert cli("server", "url").strip() == printed
        status = json.loads(cli("server", "status", "--json"))
        assert status["tls_dsn"] == printed and status["dsn"].startswith("postgresql://")
        assert cli("server", "start", "--tls").splitlines() == [
            f"already running: {data}",
            printed,
        ]

        # A restart keeps the certificates and (still free) port: the DSN stays valid.
        port = status["tls_port"]
        ca = (data / "tls" / "ca.crt").read_bytes()
        assert cli("server", "stop") == f"stopped: {data}\n"
        assert not port_open(port)
        assert EmbeddedServer(data).tls.running() is None
        assert cli("server", "start", "--tls").splitlines()[-1] == printed
        assert (data / "tls" / "ca.crt").read_bytes() == ca
        await save_and_load(printed)
    finally:
        EmbeddedServer(data).stop()
