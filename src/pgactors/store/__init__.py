"""The public API: ``Store``, its transactions, and ``InMemoryStore``."""

from .store import InMemoryStore, Store
from .transaction import Transaction, UpdateFn

__all__ = ["InMemoryStore", "Store", "Transaction", "UpdateFn"]
