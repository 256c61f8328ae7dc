"""``PostgresBackend``: the roles, sharing one connection pool and one change sequencer."""

from __future__ import annotations

from ..changes import Sequencer
from ..config import StoreConfig
from .admin import PostgresAdmin
from .connection import Connections
from .feed import SEQUENCE_MAX_ROWS, PostgresFeed
from .history import PostgresHistory
from .ops import Ops, reminder_channel
from .queries import PostgresQueries
from .records import PostgresRecords
from .reminders import PostgresReminders
from .transfer import PostgresTransfer

# Under a stream of writes, changes are numbered at most this often (seconds): fewer,
# larger numbering transactions, for at most this much added delivery latency.
SEQUENCE_INTERVAL = 0.002
# ... and this often while no listener is connected to wait for them: each numbering
# transaction slows the writes running beside it (15-20% of saves at 16 callers).
SEQUENCE_QUIET_INTERVAL = 0.05
# ... and this often while listened, when the writes come faster than SEQUENCE_HEAVY_RATE
# changes a second: at 16 callers, passes every 2 ms cost the saves about 20%, every
# 10 ms about 3%; a listener then gets its changes in groups up to 10 ms apart.
SEQUENCE_HEAVY_INTERVAL = 0.01
SEQUENCE_HEAVY_RATE = 8000.0


class PostgresBackend:
    """Records in a PostgreSQL table, reached through an async connection pool."""

    def __init__(self, db: Connections) -> None:
        self.config = db.config
        self.connections = db
        self.records = PostgresRecords(db)
        self.queries = PostgresQueries(db)
        self.feed = PostgresFeed(db)
        self.transfer = PostgresTransfer(db)
        self.reminders = PostgresReminders(db, Ops(db, reminder_channel(db.config)))
        self.admin = PostgresAdmin(db)
        self.history = PostgresHistory(db, self.records)
        self._sequencer = Sequencer(
            self.feed.sequence_changes,
            max_rows=SEQUENCE_MAX_ROWS,
            min_interval=SEQUENCE_INTERVAL,
            quiet_interval=SEQUENCE_QUIET_INTERVAL,
            heavy=(SEQUENCE_HEAVY_RATE, SEQUENCE_HEAVY_INTERVAL),
            listened=self.feed.listened,
        )
        if db.config.changes:
            # Each committed write has its change numbered and notified soon.
            db.changed = self._sequencer.kick

    @classmethod
    async def open(cls, config: StoreConfig) -> PostgresBackend:
        """Check that the server is reachable and the schema compatible, then open a pool."""
        backend = cls(await Connections.open(config))
        await backend.history.purge_if_kept()
        return backend

    async def close(self) -> None:
        """Stop the background work, number the last changes, close every connection."""
        await self.records.close()
        await self._sequencer.drain()
        await self.connections.close()
