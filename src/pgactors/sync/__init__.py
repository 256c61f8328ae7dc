"""``SyncStore``: the blocking twin of ``Store`` for scripts, notebooks and WSGI apps."""

from .store import SyncStore
from .stream import SyncChangeStream, SyncListener
from .transaction import SyncTransaction

__all__ = ["SyncChangeStream", "SyncListener", "SyncStore", "SyncTransaction"]
