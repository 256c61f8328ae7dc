"""The examples run as documented, against the test server, and print what they promise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _run(repo_root: Path, name: str, dsn: str, schema: str) -> str:
    env = {**os.environ, "PGACTORS_DSN": dsn, "PGACTORS_SCHEMA": schema}
    result = subprocess.run(
        [sys.executable, str(repo_root / "examples" / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_user_profiles(repo_root: Path, pg_dsn: str, schema_name: str) -> None:
    out = _run(repo_root, "user_profiles.py", pg_dsn, schema_name)
    assert "VersionConflict" in out
    assert 'stored JSON: {"badges": [], "score": 120, "username": "alice"}' in out


def test_chat_rooms(repo_root: Path, pg_dsn: str, schema_name: str) -> None:
    out = _run(repo_root, "chat_rooms.py", pg_dsn, schema_name)
    assert "bob's instance sees #1 alice: hi bob" in out
    assert "bob's instance sees #3 bob: hello alice" in out
    assert "refused: mallory is not in room lobby" in out
    assert (
        "history after restart: ['alice: hi bob', 'alice: are you there?', 'bob: hello alice']"
        in out
    )
    assert "members: ['alice', 'bob', 'carol']" in out


def test_game_sessions(repo_root: Path, pg_dsn: str, schema_name: str) -> None:
    out = _run(repo_root, "game_sessions.py", pg_dsn, schema_name)
    assert "ann: 3 sessions, 2 completed, 2 hard, best score 50, total 85" in out
    assert "bob: 1 sessions, 1 completed, 0 hard, best score 6, total 6" in out
    assert "ann's sessions by score: ['s2', 's1', 's3']" in out
    assert "active sessions: [('s3', 'ann')]" in out
    assert "hard sessions scoring 10 or more: 1" in out
    assert "stats ann: 3 sessions, best 50, average 28.3" in out
    assert "stats bob: 1 sessions, best 6, average 6.0" in out


@pytest.mark.parametrize("name", ["user_profiles.py", "chat_rooms.py", "game_sessions.py"])
def test_examples_run_twice(repo_root: Path, pg_dsn: str, schema_name: str, name: str) -> None:
    # Each example starts fresh, so a second run prints the same thing.
    assert _run(repo_root, name, pg_dsn, schema_name) == _run(repo_root, name, pg_dsn, schema_name)


@pytest.mark.slow
def test_ray_counters(repo_root: Path, pg_dsn: str, schema_name: str) -> None:
    for _ in range(2):  # starts fresh each time
        out = _run(repo_root, "ray_counters.py", pg_dsn, schema_name)
        assert "killed silo 0" in out
        for n in range(4):
            assert f"c{n}: 100 calls, final count 100, each applied once: True" in out
