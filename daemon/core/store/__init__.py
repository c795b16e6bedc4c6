"""The SQLite job store (WAL, busy_timeout, versioned migrations), split by concern."""

from dropflow.daemon.core.store.connection import owner_alive, owner_id
from dropflow.daemon.core.store.sqlite import Store, with_store

__all__ = ["Store", "owner_alive", "owner_id", "with_store"]
