"""Import and export: the JSONL format, conflicts, bad input, directories (both backends)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgactors import (
    Change,
    ImportAborted,
    InMemoryStore,
    InvalidInput,
    InvalidQuery,
    Record,
    Store,
    SyncStore,
    transfer,
)
from pgactors.jsonl import record_json, record_line
from pgactors.postgres import transfer as postgres_transfer

STAMP = "2026-01-02T03:04:05.123456+00:00"


def line(type: str, id: str, data: Any, version: int = 1, stamp: str = STAMP) -> str:
    """A line in the export's own layout."""
    return json.dumps(
        {
            "type": type,
            "id": id,
            "version": version,
            "data": data,
            "created_at": stamp,
            "updated_at": stamp,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


async def records(store: Store, types: list[str] | None = None) -> list[Record]:
    return [r async for r in store.export(types)]


async def lines_of(store: Store) -> list[str]:
    return [text async for text in store.export_lines()]


async def seed(store: Store) -> None:
    await store.save("B", "b2", {"n": 2})
    await store.save("A", "a1", {"name": "żółw 🐢", "q": 'say "hi" \\ \n', "list": [1, 2.5, None]})
    await store.save("A", "a1", {"name": "second version"})
    await store.save("B", "b1", [1, "two", {"x": None}])
    await store.save("A", "a0", None)
    await store.save_binary("C", "c1", b"\x00\x01\xffbinary" * 40, "raw.bytes")


# -- export --------------------------------------------------------------------------------


async def test_export_streams_every_record_in_type_id_order(store: Store) -> None:
    await seed(store)
    found = await records(store)
    assert [(r.type, r.id) for r in found] == [
        ("A", "a0"),
        ("A", "a1"),
        ("B", "b1"),
        ("B", "b2"),
        ("C", "c1"),
    ]
    a1 = found[1]
    assert a1.data == {"name": "second version"} and a1.version == 2
    assert found[4].payload == b"\x00\x01\xffbinary" * 40 and found[4].manifest == "raw.bytes"
    assert [(r.type, r.id) for r in await records(store, ["B"])] == [("B", "b1"), ("B", "b2")]
    assert [r.id async for r in store.export("C")] == ["c1"]
    assert await records(store, ["Nothing"]) == []


async def test_export_lines_hold_the_records(store: Store) -> None:
    await seed(store)
    expected = {(r.type, r.id): r for r in await records(store)}
    lines = await lines_of(store)
    assert len(lines) == len(expected)
    for text in lines:
        obj = json.loads(text)
        record = expected[(obj["type"], obj["id"])]
        assert list(obj)[:3] == ["type", "id", "version"]
        assert obj["version"] == record.version
        assert datetime.fromisoformat(obj["created_at"]) == record.created_at
        assert datetime.fromisoformat(obj["updated_at"]) == record.updated_at
        if record.payload is None:
            assert obj["data"] == record.data and "payload" not in obj
        else:
            assert base64.b64decode(obj["payload"]) == record.payload
            assert obj["manifest"] == record.manifest and "data" not in obj
        # One format: the backend's line, record_json (the CLI's) and record_line agree
        # (timestamps may differ in digits only, checked as instants above).
        made = record_json(record)
        assert list(obj) == list(made)
        assert {**obj, "created_at": 0, "updated_at": 0} == {
            **made,
            "created_at": 0,
            "updated_at": 0,
        }
        assert json.loads(record_line(record)) == made
    blocks = b"".join([block async for block in store.export_jsonl()]).decode()
    assert blocks == "".join(text + "\n" for text in lines)


async def test_export_where_filters_and_bad_arguments_are_refused(store: Store) -> None:
    await store.save_many("A", {"a1": {"n": 1}, "a2": {"n": 2}, "a3": {"n": 3}})
    await store.save_many("B", {"b1": {"n": 2}, "b2": {"n": 5}})
    await store.save("A", "gone", {"n": 2}, ttl=0.05)
    await asyncio.sleep(0.2)
    selected = [(r.type, r.id) async for r in store.export(where={"n": {"$gte": 2}})]
    assert selected == [("A", "a2"), ("A", "a3"), ("B", "b1"), ("B", "b2")]
    lines = [json.loads(line) async for line in store.export_lines("B", where={"n": 2})]
    assert [(o["type"], o["id"]) for o in lines] == [("B", "b1")]
    blocks = b"".join([b async for b in store.export_jsonl(["A"], where={"n": {"$lt": 2}})])
    assert [json.loads(line)["id"] for line in blocks.splitlines()] == ["a1"]
    with pytest.raises(InvalidQuery, match="unknown operator"):
        store.export(where={"n": {"$near": 1}})
    with pytest.raises(InvalidInput, match="invalid type"):
        store.export(["9bad"])


# -- import ----------------------------------------------------------------------------------


async def test_import_of_an_export_recreates_every_record(store: Store) -> None:
    source = InMemoryStore()
    await seed(source)
    result = await store.import_jsonl(source.export_lines())
    assert (result.imported, result.overwritten, result.skipped, result.failed) == (5, 0, 0, 0)
    assert await records(store) == await records(source)


async def test_on_conflict_modes(store: Store) -> None:
    await store.save("T", "old", {"v": "stored"})
    await store.save("T", "old", {"v": "stored again"})
    stored = await store.load("T", "old")
    assert stored is not None
    incoming = [line("T", "old", {"v": "file"}, version=7), line("T", "new", {"v": "file"})]

    skipped = await store.import_jsonl(incoming, on_conflict="skip")
    assert (skipped.imported, skipped.skipped, skipped.overwritten) == (1, 1, 0)
    assert await store.load("T", "old") == stored

    with pytest.raises(ImportAborted, match=r"already exist.*T/'new'.*T/'old'") as aborted:
        await store.import_jsonl([line("T", "x", 1), *incoming], on_conflict="fail")
    assert aborted.value.conflicts == [("T", "new"), ("T", "old")]
    assert not await store.exists("T", "x")

    overwritten = await store.import_jsonl(incoming, on_conflict="overwrite")
    assert (overwritten.imported, overwritten.overwritten) == (0, 2)
    old = await store.load("T", "old")
    assert old is not None and old.data == {"v": "file"}
    # Overwrite makes the record the file's record: its version and timestamps too.
    assert old.version == 7 and old.created_at == datetime.fromisoformat(STAMP)

    with pytest.raises(InvalidInput, match="on_conflict"):
        await store.import_jsonl(incoming, on_conflict="replace")  # type: ignore[arg-type]


async def test_fail_mode_writes_nothing_even_from_earlier_chunks(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer, "CHUNK_ROWS", 2)
    await store.save("T", "k9", 0)
    incoming = [line("T", f"k{n}", n) for n in range(10)]
    with pytest.raises(ImportAborted, match="k9"):
        await store.import_jsonl(incoming, on_conflict="fail")
    assert await store.list_ids("T") == ["k9"]


async def test_repeated_keys_apply_in_order(store: Store) -> None:
    twice = [line("T", "k", "first", version=1), line("T", "k", "second", version=2)]
    skip = await store.import_jsonl(twice, on_conflict="skip")
    assert (skip.imported, skip.skipped) == (1, 1)
    assert (await store.load("T", "k")).data == "first"  # type: ignore[union-attr]
    await store.delete("T", "k")
    overwrite = await store.import_jsonl(twice, on_conflict="overwrite")
    assert (overwrite.imported, overwrite.overwritten) == (1, 1)
    loaded = await store.load("T", "k")
    assert loaded is not None and (loaded.data, loaded.version) == ("second", 2)
    await store.delete("T", "k")
    with pytest.raises(ImportAborted, match="appears twice"):
        await store.import_jsonl(twice, on_conflict="fail")
    assert not await store.exists("T", "k")


async def test_lines_without_version_are_written_like_save(store: Store) -> None:
    await store.save("T", "a", {"v": 0})
    plain = ['{"type": "T", "id": "a", "data": {"v": 1}}', '{"id": "b", "type": "T", "data": 2}']
    result = await store.import_jsonl(plain, on_conflict="overwrite")
    assert (result.imported, result.overwritten) == (1, 1)
    a, b = await records(store, ["T"])
    assert (a.data, a.version, b.data, b.version) == ({"v": 1}, 2, 2, 1)
    assert a.created_at < a.updated_at


async def test_bad_lines_are_reported_by_number_and_the_rest_imported(store: Store) -> None:
    bad = [
        line("T", "ok1", 1),
        "{not json",
        "",
        '["a list"]',
        line("9bad", "x", 1),
        line("T", "x" * 300, 1),
        '{"type": "T", "id": "n", "data": NaN}',
        '{"type": "T", "id": "u", "data": 1, "extra": 2}',
        '{"type": "T", "id": "d"}',
        line("T", "ts", 1, stamp="yesterday"),
        line("T", "nul", {"s": "a\x00b"}),
        # The export's layout with data PostgreSQL's JSON parser refuses: found by the
        # backend, still reported with its line number.
        line("T", "bad-data", 1).replace('"data":1', '"data":{oops}'),
        line("T", "inf", 1).replace('"data":1', '"data":[NaN]'),
        b'{"type":"T","id":"\xff","data":1}',
        line("T", "ok2", 2),
    ]
    result = await store.import_jsonl(bad)
    assert result.imported == 2 and result.failed == 12
    reasons = {issue.where: issue.reason for issue in result.errors}
    assert sorted(reasons) == [2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    assert "not valid JSON" in reasons[2]
    assert "JSON object" in reasons[4]
    assert "invalid type" in reasons[5]
    assert "id of length 300" in reasons[6]
    assert "NaN" in reasons[7]
    assert "unknown field(s): extra" in reasons[8]
    assert "needs data" in reasons[9]
    assert "ISO 8601" in reasons[10]
    assert "NUL" in reasons[11]
    assert reasons[12] and reasons[13]
    assert "UTF-8" in reasons[14]
    assert str(result.errors[0]).startswith("line 2: ")
    assert await store.list_ids("T") == ["ok1", "ok2"]


async def test_bad_data_found_by_the_backend_in_a_large_chunk(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer, "CHUNK_ROWS", 50)
    incoming = [line("T", f"k{n:03}", {"n": n}) for n in range(120)]
    incoming[77] = incoming[77].replace('"data":{"n":77}', '"data":{"n":}')
    incoming[3] = incoming[3].replace('"data":{"n":3}', '"data":"\\ud800"')
    result = await store.import_jsonl(incoming)
    assert result.imported == 118
    assert [issue.where for issue in result.errors] == [4, 78]
    assert len(await store.list_ids("T")) == 118


async def test_strict_aborts_and_writes_nothing(store: Store) -> None:
    with pytest.raises(ImportAborted, match=r"line 3: .*not valid JSON") as aborted:
        await store.import_jsonl([line("T", "a", 1), line("T", "b", 1), "{"], strict=True)
    assert len(aborted.value.errors) == 1 and aborted.value.errors[0].startswith("line 3: ")
    assert await store.list_ids("T") == []


async def test_progress_is_reported(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer, "CHUNK_ROWS", 4)
    seen: list[int] = []
    await store.import_jsonl([line("T", f"k{n}", n) for n in range(10)], progress=seen.append)
    assert seen == [4, 8, 10]  # after every chunk of 4 lines, and the last


# -- directories -------------------------------------------------------------------------------


async def test_directory_of_json_files(store: Store, tmp_path: Path) -> None:
    (tmp_path / "alice.json").write_text('{"name": "alice", "score": 1.5}')
    (tmp_path / "bob.json").write_text('["b", "o", "b"]\n')
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "notes.txt").write_text("ignored")
    await store.save("User", "bob", "old")
    result = await store.import_dir(tmp_path, type="User", on_conflict="overwrite")
    assert (result.imported, result.overwritten, result.failed) == (1, 1, 1)
    assert str(result.errors[0]).startswith("broken.json: not valid JSON")
    alice, bob = await records(store, ["User"])
    assert (alice.id, alice.data, alice.version) == ("alice", {"name": "alice", "score": 1.5}, 1)
    assert (bob.id, bob.data, bob.version) == ("bob", ["b", "o", "b"], 2)
    with pytest.raises(InvalidInput, match="not a directory"):
        await store.import_dir(tmp_path / "alice.json", type="User")
    with pytest.raises(InvalidInput, match="invalid type"):
        await store.import_dir(tmp_path, type="")


# -- PostgreSQL: byte-identical round trip -------------------------------------------------------


@pytest.fixture
async def other_pg_store(pg_dsn: str) -> AsyncIterator[Store]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    store = await Store.connect(pg_dsn, schema=name)
    await store.init_schema()
    try:
        yield store
    finally:
        await store.close()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


async def test_export_import_export_is_byte_identical(
    pg_store: Store, other_pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer, "CHUNK_ROWS", 3)
    await seed(pg_store)
    await pg_store.save("D", "numbers", {"big": 2**80, "tiny": 1.5e-300, "exact": 0.1})
    await pg_store.save("D", "escapes", {"k": "\t\u2028\\u0000 not NUL", "": [{}]})
    first = b"".join([block async for block in pg_store.export_jsonl()]).decode()
    assert "\u2028" in first  # raw in the JSON text: lines split on "\n" only
    lines = first.split("\n")
    result = await other_pg_store.import_jsonl(lines)
    assert (result.imported, result.failed) == (7, 0)
    second = b"".join([block async for block in other_pg_store.export_jsonl()]).decode()
    assert second == first
    # Overwriting with the same file (after a conflict the chunks are staged) also keeps it.
    again = await other_pg_store.import_jsonl(lines, on_conflict="overwrite")
    assert again.overwritten == 7
    assert b"".join([block async for block in other_pg_store.export_jsonl()]).decode() == first


async def test_import_is_logged_in_the_change_feed(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer, "CHUNK_ROWS", 20)  # several chunks per import
    fresh = [line("T", f"k{n:02d}", n, version=4) for n in range(50)]  # COPY straight in
    again = [line("T", f"k{n:02d}", -n, version=7) for n in range(0, 50, 5)]  # staged
    async with pg_store.changes("T", since=0) as stream:
        await pg_store.import_jsonl(fresh)
        await pg_store.import_jsonl(again, on_conflict="overwrite")
        await pg_store.import_jsonl(again)  # skip: all exist, nothing logged
        await pg_store.save("T", "last", 0)
        changes = []
        async for change in stream:
            changes.append((change.id, change.version, change.op))
            if change.id == "last":
                break
    expected = [(f"k{n:02d}", 4, "save") for n in range(50)]
    expected += [(f"k{n:02d}", 7, "save") for n in range(0, 50, 5)]
    assert changes == [*expected, ("last", 1, "save")]  # each once, in commit order


async def wait_for(condition: Any, what: str) -> None:
    """Poll ``condition()`` (a coroutine function) until it is true, or fail in 15 s."""
    deadline = asyncio.get_running_loop().time() + 15.0
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def scalar(dsn: str, query: sql.SQL | sql.Composed, *args: Any) -> Any:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query, args)
        row = await cur.fetchone()
        assert row is not None
        return row[0]


async def whole_log(store: Store) -> list[Change]:
    """Every change of type T up to a marker saved now, checked to be contiguous from
    position 1, with each record's versions rising."""
    await store.save("T", "end", 0)  # numbered after every change before it
    changes = []
    async with store.changes("T", since=0) as stream:
        async for change in stream:
            changes.append(change)
            if change.id == "end":
                break
    assert [c.position for c in changes] == list(range(1, len(changes) + 1))
    versions: dict[str, int] = {}
    for c in changes:
        assert c.version > versions.get(c.id, 0), c
        versions[c.id] = c.version
    return changes


async def test_import_numbers_committed_changes_before_its_own(
    pg_store: Store, pg_dsn: str, schema_name: str
) -> None:
    """A record changed (and committed) before an import overwrites it keeps the lower
    position, even though nobody had numbered that change when the import began."""
    state = sql.Identifier(schema_name, "pgactors_state")
    pending = sql.Identifier(schema_name, "pgactors_pending_changes")
    feed = sql.Identifier(schema_name, "pgactors_feed")
    await pg_store.save("T", "k", {"n": 1})

    async def first_numbered() -> bool:
        return bool(await scalar(pg_dsn, sql.SQL("SELECT last_position FROM {}").format(feed)))

    await wait_for(first_numbered, "the save's change to be numbered")
    # Another client's write, committed but not numbered: nothing here kicks a pass.
    await scalar(
        pg_dsn,
        sql.SQL("UPDATE {} SET version = 2 WHERE type = 'T' AND id = 'k' RETURNING 1").format(
            state
        ),
    )
    assert await scalar(pg_dsn, sql.SQL("SELECT count(*) FROM {}").format(pending)) == 1
    await pg_store.import_jsonl([line("T", "k", {"n": 9}, version=9)], on_conflict="overwrite")
    changes = []
    async with pg_store.changes("T", since=0) as stream:
        async for change in stream:
            changes.append((change.position, change.version))
            if change.version == 9:
                break
    assert changes == [(1, 1), (2, 2), (3, 9)]


async def test_import_changes_bypass_the_pending_table(
    pg_store: Store, pg_dsn: str, schema_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import's changes are written to the log once each, and never to the shared
    pending table (each change there is an insert, then a delete)."""
    monkeypatch.setattr(transfer, "CHUNK_ROWS", 100)
    monkeypatch.setattr(postgres_transfer, "IMPORT_PASS_ROWS", 300)  # four passes
    count = 1000
    await pg_store.import_jsonl([line("T", f"k{n}", n, version=2) for n in range(count)])
    stats = sql.SQL(
        "SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables "
        "WHERE schemaname = %s AND relname = %s"
    )

    async def flushed() -> bool:  # the import's backend has reported its statistics
        return bool(await scalar(pg_dsn, stats, schema_name, "pgactors_changes") >= count)

    await wait_for(flushed, "the import's table statistics")
    assert await scalar(pg_dsn, stats, schema_name, "pgactors_pending_changes") == 0
    assert (await pg_store.feed_stats()).last_position == count
    changes = []
    async with pg_store.changes("T", since=0) as stream:
        async for change in stream:
            changes.append((change.position, change.id))
            if change.position == count:
                break
    assert [p for p, _ in changes] == list(range(1, count + 1))
    assert sorted(i for _, i in changes) == sorted(f"k{n}" for n in range(count))


async def test_import_beside_concurrent_writers_keeps_the_feed_whole(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saves committed while an import runs and while it numbers its changes (in passes
    of 300): every change is in the log once, at contiguous positions, each record's
    versions rising."""
    monkeypatch.setattr(transfer, "CHUNK_ROWS", 50)
    monkeypatch.setattr(postgres_transfer, "IMPORT_PASS_ROWS", 300)
    count = 2000
    imported = [line("T", f"i{n}", n, version=1) for n in range(count)]
    saved: list[tuple[str, int]] = []
    during: list[float] = []
    importing = asyncio.Event()
    done = asyncio.Event()

    async def writer(w: int) -> None:
        n = 0
        while not done.is_set():
            record = await pg_store.save("T", f"w{w}", {"n": n})
            saved.append((record.id, record.version))
            if importing.is_set():
                during.append(asyncio.get_running_loop().time())
            n += 1
            await asyncio.sleep(0)

    async def lines() -> AsyncIterator[str]:
        for n, text in enumerate(imported):
            if n == 100:
                importing.set()
            if n % 200 == 0:
                await asyncio.sleep(0.01)  # writers get turns while the import is open
            yield text

    writers = [asyncio.create_task(writer(w)) for w in range(4)]
    try:

        async def writing() -> bool:
            return len(saved) >= 4

        await wait_for(writing, "the writers' first saves")
        result = await pg_store.import_jsonl(lines())
    finally:
        done.set()
        await asyncio.gather(*writers)
    assert result.imported == count
    assert len(during) > 10  # the race happened: saves committed during the import
    changes = await whole_log(pg_store)
    assert sorted((c.id, c.version) for c in changes if c.id.startswith("w")) == sorted(saved)
    assert sorted(c.id for c in changes if c.id.startswith("i")) == sorted(
        f"i{n}" for n in range(count)
    )


async def test_concurrent_imports_each_number_their_changes(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two imports at once, on two connections, with overlapping keys: both commit, and
    the log holds each change once, contiguously, each record's versions rising."""
    monkeypatch.setattr(transfer, "CHUNK_ROWS", 40)
    monkeypatch.setattr(postgres_transfer, "IMPORT_PASS_ROWS", 70)
    # Without versions, as save writes them: whichever import writes a record second
    # gives it the next version, so versions rise in either order.
    first = [json.dumps({"type": "T", "id": f"a{n}", "data": n}) for n in range(300)]
    second = [line("T", f"b{n}", n, version=1) for n in range(300)]
    second += [json.dumps({"type": "T", "id": f"a{n}", "data": -n}) for n in range(0, 300, 10)]
    halfway = [asyncio.Event(), asyncio.Event()]

    async def source(index: int, lines: list[str]) -> AsyncIterator[str]:
        for n, text in enumerate(lines):
            if n == 150:  # both imports' transactions are open at once
                halfway[index].set()
                await asyncio.wait_for(halfway[1 - index].wait(), 15)
            yield text

    results = await asyncio.gather(
        pg_store.import_jsonl(source(0, first), on_conflict="overwrite"),
        pg_store.import_jsonl(source(1, second), on_conflict="overwrite"),
    )
    written = sum(r.imported + r.overwritten for r in results)
    # A record the other import created between this one's overwrite and insert steps
    # is skipped (on_conflict's documented race), never written twice.
    assert written + sum(r.skipped for r in results) == 630
    changes = await whole_log(pg_store)
    assert len(changes) == written + 1
    stored = {r.id: r.version for r in await records(pg_store)}
    assert {c.id: c.version for c in changes} == stored


# -- the command line ----------------------------------------------------------------------------

PGACTORS = shutil.which("pgactors", path=str(Path(sys.executable).parent)) or "pgactors"


def run(
    *args: str, env: dict[str, str], input: str | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PGACTORS_", "PG"))}
    return subprocess.run(
        [PGACTORS, *args],
        env={**base, **env},
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def db_env(pg_dsn: str, schema_name: str) -> dict[str, str]:
    env = {"PGACTORS_DSN": pg_dsn, "PGACTORS_SCHEMA": schema_name}
    assert run("init", env=env).returncode == 0
    return env


def test_cli_export_import_round_trip(db_env: dict[str, str], tmp_path: Path) -> None:
    assert run("put", "A", "a1", '{"x": "é \\\\ \\""}', env=db_env).returncode == 0
    assert run("put", "B", "b1", "[1, 2]", env=db_env).returncode == 0
    exported = run("export", env=db_env)
    assert exported.returncode == 0, exported.stderr
    assert "exported 2 records" in exported.stderr
    first = exported.stdout
    assert [json.loads(text)["id"] for text in first.splitlines()] == ["a1", "b1"]
    only_b = run("export", "--type", "B", "-o", str(tmp_path / "b.jsonl"), env=db_env)
    assert only_b.returncode == 0 and only_b.stdout == ""
    assert (tmp_path / "b.jsonl").read_text() == first.splitlines(keepends=True)[1]

    (tmp_path / "all.jsonl").write_text(first, encoding="utf-8")
    other = {**db_env, "PGACTORS_SCHEMA": db_env["PGACTORS_SCHEMA"] + "_2"}
    try:
        assert run("init", env=other).returncode == 0
        imported = run("import", str(tmp_path / "all.jsonl"), "--json", env=other)
        assert imported.returncode == 0, imported.stderr
        counts = json.loads(imported.stdout)
        assert (counts["imported"], counts["failed"], counts["errors"]) == (2, 0, [])
        assert "imported 2, overwritten 0, skipped 0, failed 0" in imported.stderr
        assert run("export", env=other).stdout == first
        again = run("import", "-", "--on-conflict", "overwrite", env=other, input=first)
        assert again.returncode == 0 and "overwritten 2" in again.stderr
        assert run("export", env=other).stdout == first
    finally:
        with psycopg.connect(db_env["PGACTORS_DSN"], autocommit=True) as conn:
            name = sql.Identifier(other["PGACTORS_SCHEMA"])
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(name))


def test_cli_import_reports_bad_lines_and_conflicts(db_env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(line("T", "a", 1) + "\n{broken\n" + line("T", "b", 2) + "\n")
    result = run("import", str(source), env=db_env)
    assert result.returncode == 1
    assert "line 2: not valid JSON" in result.stderr
    assert "imported 2, overwritten 0, skipped 0, failed 1" in result.stderr

    strict = run("import", str(source), "--strict", "--on-conflict", "overwrite", env=db_env)
    assert strict.returncode == 1 and "nothing was written" in strict.stderr
    fail = run("import", str(source), "--on-conflict", "fail", env=db_env)
    assert fail.returncode == 1 and "already exist" in fail.stderr and "T/'a'" in fail.stderr
    skip = run("import", str(source), env=db_env)
    assert "imported 0, overwritten 0, skipped 2, failed 1" in skip.stderr

    assert run("import", str(tmp_path / "missing.jsonl"), env=db_env).returncode == 2
    assert run("import", str(source), "--on-conflict", "maybe", env=db_env).returncode == 2
    where = run("export", "--where", '{"x": {"$near": 1}}', env=db_env)
    assert where.returncode == 2 and "unknown operator" in where.stderr
    run("put", "T", "w1", '{"x": 1}', env=db_env)
    run("put", "T", "w2", '{"x": 2}', env=db_env)
    selected = run("export", "--type", "T", "--where", '{"x": {"$gte": 1}}', env=db_env)
    assert selected.returncode == 0, selected.stderr
    assert [json.loads(line)["id"] for line in selected.stdout.splitlines()] == ["w1", "w2"]


def test_cli_import_directory(db_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "u1.json").write_text('{"name": "one"}')
    (tmp_path / "u2.json").write_text("[2]")
    untyped = run("import", str(tmp_path), env=db_env)
    assert untyped.returncode == 2 and "--type" in untyped.stderr
    result = run("import", str(tmp_path), "--type", "User", env=db_env)
    assert result.returncode == 0, result.stderr
    assert "imported 2" in result.stderr
    got = run("get", "User", "u1", env=db_env)
    assert json.loads(got.stdout) == {"name": "one"}


def test_sync_store_export_and_import(pg_store_sync: SyncStore, tmp_path: Path) -> None:
    pg_store_sync.save("A", "a1", {"n": 1})
    pg_store_sync.save("A", "a2", {"n": 2})
    with pytest.raises(InvalidQuery):
        pg_store_sync.export(where={"n": {"$bad": 1}})
    assert [r.id for r in pg_store_sync.export("A")] == ["a1", "a2"]
    assert [r.id for r in pg_store_sync.export("A", where={"n": 2})] == ["a2"]
    for _ in pg_store_sync.export():  # leaving early closes the cursor
        break
    (tmp_path / "out.jsonl").write_bytes(b"".join(pg_store_sync.export_jsonl()))
    with SyncStore.in_memory() as memory:
        with (tmp_path / "out.jsonl").open("rb") as lines:
            result = memory.import_jsonl(lines)
        assert result.imported == 2
        assert list(memory.export()) == list(pg_store_sync.export())
        (tmp_path / "dir").mkdir()
        (tmp_path / "dir" / "x.json").write_text("7")
        assert memory.import_dir(tmp_path / "dir", type="N").imported == 1
    assert pg_store_sync.load("A", "a1") is not None


async def test_async_sources_number_lines_across_batches(store: Store) -> None:
    async def lines() -> AsyncIterator[str]:
        for n in range(1, 251):
            yield "{oops" if n in (7, 180) else line("T", f"k{n}", n)

    result = await store.import_jsonl(lines())
    assert result.imported == 248
    assert [issue.where for issue in result.errors] == [7, 180]


def test_cli_export_stops_quietly_when_its_reader_goes_away(db_env: dict[str, str]) -> None:
    with psycopg.connect(db_env["PGACTORS_DSN"], autocommit=True) as conn:
        table = sql.Identifier(db_env["PGACTORS_SCHEMA"], "pgactors_state")
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (type, id, version, data) "
                "SELECT 'T', 'k' || g, 1, jsonb_build_object('pad', repeat('x', 500)) "
                "FROM generate_series(1, 20000) g"
            ).format(table)
        )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PGACTORS_", "PG"))}
    export = subprocess.Popen(
        [PGACTORS, "export"],
        env={**base, **db_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert export.stdout is not None and export.stderr is not None
    first = export.stdout.readline()  # like `pgactors export | head -1`
    export.stdout.close()
    stderr = export.stderr.read().decode()
    assert export.wait(60) == 1
    assert json.loads(first)["type"] == "T"
    assert "Traceback" not in stderr and "Error" not in stderr, stderr


async def test_fail_mode_aborts_when_a_record_is_created_during_the_import(
    pg_store: Store, pg_dsn: str
) -> None:
    table = sql.Identifier(pg_store.config.schema, "pgactors_state")
    async with await psycopg.AsyncConnection.connect(pg_dsn) as writer:
        # Not yet committed: the import's conflict check cannot see it, and its insert
        # waits on it.
        await writer.execute(
            sql.SQL("INSERT INTO {} (type, id, version, data) VALUES ('T', 'k', 1, '{{}}')").format(
                table
            )
        )
        line = json.dumps({"type": "T", "id": "k", "data": {"n": 1}})
        importing = asyncio.create_task(pg_store.import_jsonl([line], on_conflict="fail"))
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as probe:
            deadline = asyncio.get_running_loop().time() + 10
            while True:  # the import's insert is waiting on the writer's row
                cur = await probe.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'INSERT INTO%%'"
                )
                row = await cur.fetchone()
                if row and row[0]:
                    break
                assert asyncio.get_running_loop().time() < deadline, "the import never waited"
                await asyncio.sleep(0.01)
        await writer.commit()
    with pytest.raises(ImportAborted, match="created concurrently"):
        await importing
    record = await pg_store.load("T", "k")
    assert record is not None and record.data == {}  # the writer's, untouched


_RSS_SCRIPT = """
import asyncio, json, resource, sys
from pgactors import Store

def lines(type, n):
    for i in range(n):
        yield json.dumps({"type": type, "id": f"m{i:06d}", "data": {"i": i, "pad": "x" * 200}})

async def main(dsn, schema, type, n):
    async with await Store.connect(dsn, schema=schema) as store:
        await store.init_schema()
        result = await store.import_jsonl(lines(type, n))
        exported = 0
        async for block in store.export_jsonl(type):
            exported += block.count(b"\\n")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"imported": result.imported, "exported": exported, "peak_kb": peak}))

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


@pytest.mark.slow
def test_import_and_export_memory_stays_flat(pg_dsn: str, schema_name: str) -> None:
    """100,000 records (~25 MB of JSON) in and out cost about what 1,000 do: nothing is
    held whole in memory."""
    peaks = {}
    for type, n in (("Small", 1_000), ("Big", 100_000)):
        done = subprocess.run(
            [sys.executable, "-c", _RSS_SCRIPT, pg_dsn, schema_name, type, str(n)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout.splitlines()[-1])
        assert report["imported"] == report["exported"] == n
        peaks[type] = report["peak_kb"]
    assert peaks["Big"] - peaks["Small"] < 25 * 1024, peaks  # KiB


# -- version history -----------------------------------------------------------------------


def past_fields(past: list[Any]) -> list[tuple[Any, ...]]:
    fields = ("version", "data", "payload", "manifest", "created_at", "updated_at")
    fields += ("expires_at", "replaced_at", "deleted")
    return [tuple(getattr(p, name) for name in fields) for p in past]


async def history_state(store: Store) -> dict[str, Any]:
    keys = [("A", "a1"), ("A", "a2"), ("B", "b1"), ("C", "c1")]
    return {
        "records": [record_json(r) for r in await records(store)],
        "past": {k: past_fields(await store.history(*k)) for k in keys},
        "info": [(i.type, i.enabled, i.keep_versions, i.keep_days, i.rows) for i in
                 await store.history_info()],
    }  # fmt: skip


async def test_export_import_with_history_round_trip(store: Store) -> None:
    await store.enable_history("A", keep_versions=5)
    await store.enable_history("C", keep_days=30)
    for n in range(3):
        await store.save("A", "a1", {"n": n, "text": 'żółw 🐢 \\ "'})
    await store.save("A", "a2", None)
    await store.delete("A", "a2")
    await store.save("A", "a2", "again")
    await store.save_binary("C", "c1", b"\x00\xff" * 10, "raw")
    await store.save_binary("C", "c1", b"second", "raw")
    await store.disable_history("C")
    await store.save("B", "b1", 1)
    await store.save("B", "b1", 2)
    before = await history_state(store)
    assert [len(p) for p in before["past"].values()] == [2, 1, 0, 1]

    plain = [text async for text in store.export_lines()]
    lines = [text async for text in store.export_lines(history=True)]
    assert lines[: len(plain)] == plain
    settings = [json.loads(text) for text in lines[len(plain) : len(plain) + 2]]
    assert settings == [
        {"history": {"type": "A", "enabled": True, "keep_versions": 5, "keep_days": None}},
        {"history": {"type": "C", "enabled": False, "keep_versions": None, "keep_days": 30.0}},
    ]
    assert len(lines) == len(plain) + 2 + 4
    blocks = b"".join([block async for block in store.export_jsonl(history=True)])
    assert blocks.decode().splitlines() == lines
    only_c = [text async for text in store.export_lines(["C"], history=True)]
    assert len(only_c) == 1 + 1 + 1

    await store.drop_schema()
    await store.init_schema()
    result = await store.import_jsonl(lines)
    assert (result.imported, result.history, result.failed) == (4, 4, 0)
    assert await history_state(store) == before
    assert [text async for text in store.export_lines(history=True)] == lines
    # The settings are restored: A records again, C does not.
    await store.save("A", "a1", "after")
    await store.save_binary("C", "c1", b"third", "raw")
    assert len(await store.history("A", "a1")) == 3
    assert len(await store.history("C", "c1")) == 1


async def test_history_lines_refused_with_their_number(store: Store) -> None:
    past = {
        "type": "A", "id": "a", "version": 1, "data": 1, "created_at": STAMP,
        "updated_at": STAMP, "expires_at": None, "replaced_at": STAMP, "deleted": False,
    }  # fmt: skip
    bad = [
        json.dumps({"history": {"type": "A", "enabled": "yes"}}),
        json.dumps({"history": {"type": "A", "enabled": True, "keep_versions": 0}}),
        json.dumps({"history": {"type": "A", "enabled": True, "extra": 1}}),
        json.dumps({**past, "deleted": None}),
        json.dumps({**past, "version": None}),
        json.dumps({**past, "replaced_at": "yesterday"}),
        json.dumps(past),
    ]
    result = await store.import_jsonl(bad)
    assert (result.failed, result.history) == (6, 1)
    reasons = [str(issue) for issue in result.errors]
    assert reasons[0].startswith("line 1: history enabled must be true or false")
    assert reasons[1].startswith("line 2: keep_versions must be")
    assert reasons[2].startswith("line 3: unknown history field(s): extra")
    assert reasons[3].startswith("line 4: a past version's deleted must be")
    assert reasons[4].startswith("line 5: a past version needs its version")
    assert reasons[5].startswith("line 6: replaced_at must be an ISO 8601 timestamp")
    [kept] = await store.history("A", "a")
    assert (kept.version, kept.data) == (1, 1)
    with pytest.raises(InvalidInput, match="cannot be combined with where"):
        store.export_lines(where={"n": 1}, history=True)
    with pytest.raises(ImportAborted, match="line 2: history enabled"):
        await store.import_jsonl([json.dumps(past), bad[0]], strict=True)
    assert len(await store.history("A", "a")) == 1  # nothing written


def test_cli_export_import_with_history(db_env: dict[str, str], tmp_path: Path) -> None:
    assert run("init", env=db_env).returncode == 0
    assert run("history-enable", "A", "--keep-versions", "3", env=db_env).returncode == 0
    for n in range(3):
        assert run("put", "A", "a1", json.dumps({"n": n}), env=db_env).returncode == 0
    bad = run("export", "--history", "--where", '{"n": 1}', env=db_env)
    assert bad.returncode == 2 and "cannot be combined with --where" in bad.stderr
    exported = run("export", "--history", "-o", str(tmp_path / "all.jsonl"), env=db_env)
    assert exported.returncode == 0, exported.stderr
    assert "exported 4 lines (records, then history)" in exported.stderr
    text = (tmp_path / "all.jsonl").read_text()
    other = {**db_env, "PGACTORS_SCHEMA": db_env["PGACTORS_SCHEMA"] + "_2"}
    try:
        assert run("init", env=other).returncode == 0
        imported = run("import", str(tmp_path / "all.jsonl"), "--json", env=other)
        assert imported.returncode == 0, imported.stderr
        assert json.loads(imported.stdout)["history"] == 2
        assert "past versions 2" in imported.stderr
        again = run("export", "--history", env=other)
        assert again.stdout == text
        past = json.loads(run("history", "A", "a1", "--json", env=other).stdout)
        assert [(p["version"], p["data"]) for p in past] == [(2, {"n": 1}), (1, {"n": 0})]
        status = json.loads(run("status", "--json", env=other).stdout)
        assert [(h["type"], h["keep_versions"]) for h in status["history"]] == [("A", 3)]
    finally:
        with psycopg.connect(db_env["PGACTORS_DSN"], autocommit=True) as conn:
            name = sql.Identifier(other["PGACTORS_SCHEMA"])
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(name))
