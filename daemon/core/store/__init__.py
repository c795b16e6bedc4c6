"""The job store: SQLite (embedded default) or PostgreSQL (shared by several daemons), one interface.

`Store.open(cfg.database)` picks the database from the config; `PgStore` loads only for a URL.
"""

from dropflow.daemon.core.store.owners import owner_alive, owner_id
from dropflow.daemon.core.store.sqlite import SqliteStore
from dropflow.daemon.core.store.store import Store, is_database_url, with_store

__all__ = ["SqliteStore", "Store", "is_database_url", "owner_alive", "owner_id", "with_store"]
