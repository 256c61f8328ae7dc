"""pgactors: durable, versioned state for Python actors and objects, in PostgreSQL."""

from typing import TYPE_CHECKING, Any

from .actors import Actor, ActorRef, ActorSystem
from .changes import Change, ChangeStream
from .config import StoreConfig
from .errors import (
    CallAlreadyApplied,
    ChangesExpired,
    ChangesLost,
    ConfigError,
    DatabaseError,
    ImportAborted,
    InvalidInput,
    InvalidQuery,
    NotFound,
    PgActorsError,
    RetryableError,
    SchemaMismatch,
    ServerError,
    SiloUnavailable,
    StoreTimeout,
    StoreUnavailable,
    VersionConflict,
)
from .history import HistoryInfo, PastVersion
from .objects import (
    PersistentObject,
    StateError,
    delete_object,
    load_object,
    save_object,
)
from .query import Page
from .record import JSON, AppliedCall, Encoded, Record
from .reminders import Reminder, ReminderStats
from .store import InMemoryStore, Store, Transaction
from .sync import SyncChangeStream, SyncStore, SyncTransaction
from .transfer import ImportIssue, ImportResult

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .models import PersistentModel


def __getattr__(name: str) -> Any:
    # PersistentModel imports pydantic: only when it is used.
    if name == "PersistentModel":
        from .models import PersistentModel

        return PersistentModel
    raise AttributeError(f"module 'pgactors' has no attribute {name!r}")


__all__ = [
    "JSON",
    "Actor",
    "ActorRef",
    "ActorSystem",
    "AppliedCall",
    "CallAlreadyApplied",
    "Change",
    "ChangeStream",
    "ChangesExpired",
    "ChangesLost",
    "ConfigError",
    "DatabaseError",
    "Encoded",
    "HistoryInfo",
    "ImportAborted",
    "ImportIssue",
    "ImportResult",
    "InMemoryStore",
    "InvalidInput",
    "InvalidQuery",
    "NotFound",
    "Page",
    "PastVersion",
    "PersistentModel",
    "PersistentObject",
    "PgActorsError",
    "Record",
    "Reminder",
    "ReminderStats",
    "RetryableError",
    "SchemaMismatch",
    "ServerError",
    "SiloUnavailable",
    "StateError",
    "Store",
    "StoreConfig",
    "StoreTimeout",
    "StoreUnavailable",
    "SyncChangeStream",
    "SyncStore",
    "SyncTransaction",
    "Transaction",
    "VersionConflict",
    "__version__",
    "delete_object",
    "load_object",
    "save_object",
]
