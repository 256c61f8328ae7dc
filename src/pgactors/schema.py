"""The packaged SQL: versioned migrations, named queries and the objects they create.

This module only reads text; ``postgres.py`` composes it with ``psycopg.sql.Identifier``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from .config import StoreConfig

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_QUERY_HEADER = re.compile(r"^-- name: ([a-z_]+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    """One versioned migration file."""

    version: int
    name: str
    text: str


@cache
def migrations() -> tuple[Migration, ...]:
    """Every packaged migration, in version order."""
    folder = resources.files("pgactors") / "sql" / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    return tuple(found)


def latest_version() -> int:
    """The schema version this code creates and expects."""
    return migrations()[-1].version


@cache
def queries() -> dict[str, str]:
    """The named queries of ``sql/queries.sql``, keyed by name."""
    text = (resources.files("pgactors") / "sql" / "queries.sql").read_text("utf-8")
    parts = _QUERY_HEADER.split(text)
    return {name: compact(body) for name, body in zip(parts[1::2], parts[2::2], strict=True)}


# A quoted literal (kept as it is), a comment to the end of its line, or blank space.
_SQL_PIECE = re.compile(r"('(?:[^']|'')*')|--[^\n]*|\s+")


def compact(text: str) -> str:
    """SQL text without comments, with blank space runs as one space: psycopg caches
    the parsing of statements only up to 4 KB, and the batch statements are longer with
    their indentation."""
    return _SQL_PIECE.sub(lambda m: m.group(1) or " ", text).strip()


def identifiers(config: StoreConfig) -> dict[str, str]:
    """Names of every database object, derived from the configured schema and prefix."""
    prefix = config.table_prefix
    return {
        "schema": config.schema,
        "state": f"{prefix}_state",
        "migrations": f"{prefix}_migrations",
        "state_pkey": f"{prefix}_state_pkey",
        "state_version_check": f"{prefix}_state_version_check",
        "state_key_check": f"{prefix}_state_key_check",
        "state_type_updated_idx": f"{prefix}_state_type_updated_idx",
        "state_expires_idx": f"{prefix}_state_expires_idx",
        "state_data_idx": f"{prefix}_state_data_idx",
        "conflict_fn": f"{prefix}_batch_conflict",
        "changes": f"{prefix}_changes",
        "changes_pkey": f"{prefix}_changes_pkey",
        "changes_op_check": f"{prefix}_changes_op_check",
        "changes_position_idx": f"{prefix}_changes_position_idx",
        "changes_pending_idx": f"{prefix}_changes_pending_idx",
        "pending_changes": f"{prefix}_pending_changes",
        "pending_changes_pkey": f"{prefix}_pending_changes_pkey",
        "feed": f"{prefix}_feed",
        "log_fn": f"{prefix}_log_changes",
        "log_insert_trigger": f"{prefix}_log_insert",
        "log_update_trigger": f"{prefix}_log_update",
        "log_delete_trigger": f"{prefix}_log_delete",
        "sequence_fn": f"{prefix}_sequence_changes",
        "import_fn": f"{prefix}_sequence_import",
        "calls": f"{prefix}_calls",
        "calls_pkey": f"{prefix}_calls_pkey",
        "calls_applied_idx": f"{prefix}_calls_applied_idx",
        "reminders": f"{prefix}_reminders",
        "reminders_pkey": f"{prefix}_reminders_pkey",
        "reminders_due_idx": f"{prefix}_reminders_due_idx",
        "lease_fn": f"{prefix}_lease_reminders",
        "history": f"{prefix}_history",
        "history_pkey": f"{prefix}_history_pkey",
        "history_key_idx": f"{prefix}_history_key_idx",
        "history_types": f"{prefix}_history_types",
        "history_types_pkey": f"{prefix}_history_types_pkey",
        "history_fn": f"{prefix}_keep_history",
        # Exists only while some type has history enabled (not in expected_objects).
        "history_trigger": f"{prefix}_history_record",
    }


def partition_name(config: StoreConfig, remainder: int) -> str:
    """The name of the state table's hash partition holding ``remainder``."""
    return f"{config.table_prefix}_state_p{remainder}"


@dataclass(frozen=True)
class SchemaObject:
    """A database object that ``verify`` expects to find."""

    kind: str  # "table", "index", "function" or "trigger"
    name: str


def expected_objects(config: StoreConfig) -> list[SchemaObject]:
    """The tables, indexes and functions of the current schema version."""
    names = identifiers(config)
    return [
        SchemaObject("table", names["state"]),
        SchemaObject("table", names["migrations"]),
        SchemaObject("index", names["state_pkey"]),
        SchemaObject("index", names["state_expires_idx"]),
        SchemaObject("function", names["conflict_fn"]),
        SchemaObject("table", names["changes"]),
        SchemaObject("table", names["feed"]),
        SchemaObject("index", names["changes_pkey"]),
        SchemaObject("table", names["pending_changes"]),
        SchemaObject("index", names["pending_changes_pkey"]),
        SchemaObject("function", names["log_fn"]),
        SchemaObject("function", names["sequence_fn"]),
        SchemaObject("function", names["import_fn"]),
        SchemaObject("trigger", names["log_insert_trigger"]),
        SchemaObject("trigger", names["log_update_trigger"]),
        SchemaObject("trigger", names["log_delete_trigger"]),
        SchemaObject("table", names["calls"]),
        SchemaObject("index", names["calls_pkey"]),
        SchemaObject("index", names["calls_applied_idx"]),
        SchemaObject("table", names["reminders"]),
        SchemaObject("index", names["reminders_pkey"]),
        SchemaObject("index", names["reminders_due_idx"]),
        SchemaObject("function", names["lease_fn"]),
        SchemaObject("table", names["history"]),
        SchemaObject("index", names["history_pkey"]),
        SchemaObject("index", names["history_key_idx"]),
        SchemaObject("table", names["history_types"]),
        SchemaObject("index", names["history_types_pkey"]),
        SchemaObject("function", names["history_fn"]),
    ]
