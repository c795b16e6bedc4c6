"""The SQLite job store (WAL, busy_timeout, versioned migrations): the embedded default.

The daemon is the main writer. The CLI and the TUI change jobs only through the short
`BEGIN IMMEDIATE` transactions of the request methods (`cancel`, `pause`, `retry`, ...): a job
that is not running changes state at once; a running one gets a `control` flag that its runner
picks up within a scheduler tick. So edits go in whether or not the daemon is up.

`SqliteStore` is `Store`'s parts (store.py) on the connection of connection.py.
"""

from __future__ import annotations

from dropflow.daemon.core.store.connection import _Connection
from dropflow.daemon.core.store.store import Store


# `_Connection` first: mypy wants each base's attribute to fit the same one in every later base,
# and its real `db` and `transaction` are narrower than `Store`'s declarations.
class SqliteStore(_Connection, Store):
    """The SQLite job store; implements `dropflow.daemon.core.jobs.JobStore`."""
